"""3-D 68-landmark face template, head-pose convention and projection.

Used by the synthetic dataset (to pose and draw faces), by real-video preprocessing (pose by PnP
against the same template) and by evaluation (mouth opening, pose ranges).

Landmarks follow the iBUG-300W 68-point order (0-16 jaw, 17-26 brows, 27-35 nose, 36-47 eyes,
48-59 outer lips, 60-67 inner lips); "left" below means image-left.

[ours] The template is procedural (not a scanned mean face): smooth parametric curves with
human-like proportions, in head units where the jaw half-width is ~0.75. Head frame: x to the
image right, y up, z towards the camera.

Pose convention (6 numbers per frame, DESIGN.md §2):
  pose = [yaw, pitch, roll, tx, ty, scale]
  R = Rz(roll) @ Ry(yaw) @ Rx(pitch)    (radians; yaw>0 turns the face to the image right,
                                          pitch>0 tilts the chin down, roll>0 is counter-clockwise
                                          in the image)
  scaled-orthographic camera, in normalised crop coordinates n in [-1, 1]:
    n_x = tx + scale * (R X)_x ,   n_y = ty - scale * (R X)_y
  pixels (align_corners=False, pixel centres at integers):  p = (n + 1) * size / 2 - 0.5
"""
from __future__ import annotations

import numpy as np

NUM_LANDMARKS = 68
JAW = np.arange(0, 17)
LEFT_BROW = np.arange(17, 22)
RIGHT_BROW = np.arange(22, 27)
NOSE_BRIDGE = np.arange(27, 31)
NOSE_BOTTOM = np.arange(31, 36)
LEFT_EYE = np.arange(36, 42)
RIGHT_EYE = np.arange(42, 48)
OUTER_LIPS = np.arange(48, 60)
INNER_LIPS = np.arange(60, 68)
MOUTH = np.arange(48, 68)
# Inner-lip pairs (top, bottom) whose vertical gap is the mouth opening.
INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))

POSE_NAMES = ("yaw", "pitch", "roll", "tx", "ty", "scale")


def _eye(cx: float, cy: float, w: float, h: float, z: float, outer_first: bool) -> np.ndarray:
  # iBUG eye order: corner, 2 top points, other corner, 2 bottom points (clockwise in the image).
  xs = np.array([-w, -w / 3, w / 3, w, w / 3, -w / 3])
  ys = np.array([0.0, h, h, 0.0, -h, -h])
  zs = np.array([-0.03, 0.0, 0.0, -0.01, 0.0, 0.0])
  if not outer_first:  # right eye starts at its inner corner, which is its image-left corner too
    zs = zs[[3, 2, 1, 0, 5, 4]]
  return np.stack([cx + xs, cy + ys, z + zs], axis=1)


def template(
    jaw_width: float = 0.75,
    jaw_height: float = 1.05,
    jaw_square: float = 2.3,
    eye_spacing: float = 0.33,
    eye_size: float = 0.14,
    nose_length: float = 0.42,
    mouth_width: float = 0.27,
    brow_height: float = 0.43,
) -> np.ndarray:
  """Neutral 3-D landmarks [68, 3] (mouth closed, eyes open) for one face shape.

  The defaults are the mean face used for pose estimation; the synthetic dataset draws the
  keyword arguments per identity.
  """
  pts = np.zeros((NUM_LANDMARKS, 3), np.float64)
  # Jaw: a super-ellipse from the image-left temple (0) round the chin (8) to the right (16).
  theta = np.linspace(np.pi, 2 * np.pi, 17)
  c, s = np.cos(theta), np.sin(theta)
  e = 2.0 / jaw_square
  pts[JAW, 0] = jaw_width * np.sign(c) * np.abs(c) ** e
  pts[JAW, 1] = 0.12 - jaw_height * np.abs(s) ** e
  pts[JAW, 2] = -0.55 + 0.65 * np.abs(s) ** 1.5
  # Brows: arches above the eyes, outer -> inner on the left, inner -> outer on the right.
  u = np.linspace(0.0, 1.0, 5)
  bx = -(eye_spacing + 0.3) + u * 0.5
  by = brow_height + 0.07 * np.sin(np.pi * (0.3 + 0.7 * u))
  bz = 0.12 + 0.12 * u
  pts[LEFT_BROW] = np.stack([bx, by, bz], 1)
  pts[RIGHT_BROW] = np.stack([-bx[::-1], by[::-1], bz[::-1]], 1)
  # Nose bridge (27-30, top -> tip) and nostril base (31-35, left -> right).
  t = np.linspace(0.0, 1.0, 4)
  pts[NOSE_BRIDGE] = np.stack([0 * t, 0.3 - t * nose_length, 0.25 + 0.3 * t], 1)
  tip_y = 0.3 - nose_length
  pts[NOSE_BOTTOM] = np.stack([
      np.array([-0.17, -0.09, 0.0, 0.09, 0.17]),
      tip_y - np.array([0.07, 0.1, 0.12, 0.1, 0.07]),
      np.array([0.3, 0.38, 0.42, 0.38, 0.3]),
  ], 1)
  # Eyes.
  pts[LEFT_EYE] = _eye(-eye_spacing, 0.2, eye_size, 0.05, 0.22, outer_first=True)
  pts[RIGHT_EYE] = _eye(eye_spacing, 0.2, eye_size, 0.05, 0.22, outer_first=False)
  # Lips, centred under the nose. Outer: 48 left corner, 49-53 upper lip, 54 right corner,
  # 55-59 lower lip (right -> left). Inner: 60 left corner, 61-63 upper, 64 right, 65-67 lower.
  my = tip_y - 0.3
  w = mouth_width
  ox = np.array([-1.0, -0.6, -0.25, 0.0, 0.25, 0.6, 1.0, 0.6, 0.25, 0.0, -0.25, -0.6]) * w
  oy = my + np.array(
      [0.0, 0.05, 0.075, 0.06, 0.075, 0.05, 0.0, -0.06, -0.085, -0.09, -0.085, -0.06])
  oz = 0.3 - 0.15 * np.abs(ox / w) ** 2
  pts[OUTER_LIPS] = np.stack([ox, oy, oz], 1)
  ix = np.array([-0.8, -0.35, 0.0, 0.35, 0.8, 0.35, 0.0, -0.35]) * w
  iy = my + np.array([0.0, 0.015, 0.015, 0.015, 0.0, -0.015, -0.015, -0.015])
  iz = 0.27 - 0.12 * np.abs(ix / w) ** 2
  pts[INNER_LIPS] = np.stack([ix, iy, iz], 1)
  return pts


MEAN_FACE = template()


def deform(
    pts: np.ndarray, mouth_open: float = 0.0, mouth_round: float = 0.0, blink: float = 0.0
) -> np.ndarray:
  """Expression on a neutral template: [68, 3] -> [68, 3].

  mouth_open in [0, 1] drops the lower lip, inner lower lip and chin (up to 0.22 head units);
  mouth_round in [0, 1] narrows the mouth (rounded vowels); blink in [0, 1] closes the eyelids.
  """
  out = np.array(pts, np.float64, copy=True)
  drop = 0.22 * float(mouth_open)
  lower = np.array([55, 56, 57, 58, 59, 65, 66, 67])
  out[lower, 1] -= drop
  out[[48, 54, 60, 64], 1] -= 0.45 * drop  # corners follow halfway
  out[[61, 62, 63], 1] += 0.04 * float(mouth_open)  # upper lip lifts a little
  # The jaw opens with the mouth: chin points follow, fading towards the temples.
  jaw_w = np.clip(1.0 - np.abs(np.arange(17) - 8) / 5.0, 0.0, 1.0)
  out[JAW, 1] -= 0.6 * drop * jaw_w
  # Rounding pulls the lips towards the mouth centre horizontally.
  cx = out[MOUTH, 0].mean()
  out[MOUTH, 0] = cx + (out[MOUTH, 0] - cx) * (1.0 - 0.35 * float(mouth_round))
  # Blink: move upper lids down towards the lower lids.
  for eye in (LEFT_EYE, RIGHT_EYE):
    top, bottom = eye[[1, 2]], eye[[5, 4]]
    out[top, 1] -= float(blink) * (out[top, 1] - out[bottom, 1]) * 0.9
  return out


def rotation(yaw, pitch, roll) -> np.ndarray:
  """R = Rz(roll) @ Ry(yaw) @ Rx(pitch); broadcasts over leading dims -> [..., 3, 3]."""
  yaw, pitch, roll = np.broadcast_arrays(
      np.asarray(yaw, np.float64), np.asarray(pitch, np.float64), np.asarray(roll, np.float64)
  )
  cy, sy = np.cos(yaw), np.sin(yaw)
  cp, sp = np.cos(pitch), np.sin(pitch)
  cr, sr = np.cos(roll), np.sin(roll)
  one, zero = np.ones_like(yaw), np.zeros_like(yaw)
  rx = np.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).reshape(*yaw.shape, 3, 3)
  # Ry sign chosen so yaw>0 moves the nose (+z) towards +x (image right).
  ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(*yaw.shape, 3, 3)
  rz = np.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], -1).reshape(*yaw.shape, 3, 3)
  return rz @ ry @ rx


def project(pts3d: np.ndarray, pose: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
  """Pose and project 3-D points.

  Args:
    pts3d: [..., N, 3] head-frame points (leading dims broadcast against pose's).
    pose: [..., 6] (yaw, pitch, roll, tx, ty, scale).
    size: crop size in pixels (square).

  Returns:
    (pixels [..., N, 2] as (x, y) float, depth [..., N] (larger = closer to the camera)).
  """
  pose = np.asarray(pose, np.float64)
  r = rotation(pose[..., 0], pose[..., 1], pose[..., 2])  # [..., 3, 3]
  rotated = np.einsum("...ij,...nj->...ni", r, pts3d)
  scale = pose[..., 5, None]
  nx = pose[..., 3, None] + scale * rotated[..., 0]
  ny = pose[..., 4, None] - scale * rotated[..., 1]
  px = np.stack([nx, ny], -1)
  return (px + 1.0) * size / 2.0 - 0.5, rotated[..., 2]


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
  """Inner-lip gap normalised by the outer-eye-corner distance: [..., 68, 2] -> [...].

  Scale- and translation-invariant measure of how open the mouth is (used for lip-sync metrics
  and tests).
  """
  lm = np.asarray(landmarks, np.float64)
  gap = np.mean(
      [np.linalg.norm(lm[..., a, :] - lm[..., b, :], axis=-1) for a, b in INNER_LIP_PAIRS], axis=0
  )
  iod = np.linalg.norm(lm[..., 36, :] - lm[..., 45, :], axis=-1)
  return gap / np.maximum(iod, 1e-6)
