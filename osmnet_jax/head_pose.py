"""Head pose per frame from 68 landmarks: the inverse of ``face_geometry.project``.

DESIGN.md §2 asks for PnP against the 3-D mean-face template. [ours] Our pose convention is a
*scaled-orthographic* camera (face_geometry.py), so we fit that model directly instead of running
perspective PnP and converting: for landmarks p [68, 2] (crop pixels) we find
(yaw, pitch, roll, tx, ty, scale) minimising

    sum_i w_i || project(MEAN_FACE, pose, size)_i - p_i ||^2

(a perspective PnP with focal length ~ crop size gives nearly the same rotation for faces filling a
crop, but then needs a lossy conversion of its 3-D translation to (tx, ty, scale)). The fit is:
  1. closed form: least-squares 2x3 affine map template -> normalised points, projected onto the
     nearest scaled 2-row rotation by SVD (the classic scaled-orthographic initialisation); the
     third rotation row is the cross product, and both depth signs are tried (Necker ambiguity);
  2. Gauss-Newton refinement of the 6 pose numbers (scipy least_squares, a few iterations).
On landmarks made by ``project`` it recovers the pose to ~1e-6 (tests/test_head_pose.py).

Weights: the jaw contour (points 0-16) is a silhouette that slides over the 3-D face when it turns
and the mouth moves with speech; they get lower weight than the rigid points (eyes, nose, brows).

Temporal smoothing (``smooth``) is a Gaussian filter along time on the pose sequence; sequences are
short clips, so the ends use 'nearest' padding.
"""
from __future__ import annotations

import numpy as np
import scipy.ndimage
import scipy.optimize

from osmnet_jax import face_geometry as fg

# [ours] Per-landmark fit weights [68]: rigid points 1, jaw 0.5, mouth 0.3.
WEIGHTS = np.ones(fg.NUM_LANDMARKS)
WEIGHTS[fg.JAW] = 0.5
WEIGHTS[fg.MOUTH] = 0.3


def _normalised(landmarks: np.ndarray, size: int) -> np.ndarray:
  """Pixels [..., 68, 2] -> (n_x, -n_y) [..., 68, 2]: a y-up frame where the model is linear."""
  n = (np.asarray(landmarks, np.float64) + 0.5) * 2.0 / size - 1.0
  return n * np.array([1.0, -1.0])


def euler_from_rotation(r: np.ndarray) -> np.ndarray:
  """[3, 3] rotation = Rz(roll) Ry(yaw) Rx(pitch) -> (yaw, pitch, roll).

  Row 2 of R is (-sin yaw, cos yaw sin pitch, cos yaw cos pitch); column 0 is
  (cos roll cos yaw, sin roll cos yaw, -sin yaw).
  """
  yaw = np.arcsin(np.clip(-r[2, 0], -1.0, 1.0))
  pitch = np.arctan2(r[2, 1], r[2, 2])
  roll = np.arctan2(r[1, 0], r[0, 0])
  return np.array([yaw, pitch, roll])


def _closed_form(m: np.ndarray, x3d: np.ndarray, w: np.ndarray) -> list[np.ndarray]:
  """Initial poses (both depth signs) for y-up points m [68, 2] and template x3d [68, 3]."""
  sw = w / w.sum()
  mc = m - sw @ m
  xc = x3d - sw @ x3d
  # A [2, 3] = argmin sum w ||mc - A xc||^2
  a = np.linalg.lstsq(xc * np.sqrt(w)[:, None], mc * np.sqrt(w)[:, None], rcond=None)[0].T
  u, s, vt = np.linalg.svd(a, full_matrices=False)
  rows = u @ vt  # [2, 3] orthonormal rows: nearest scaled rotation to A
  scale = float(s.mean())
  t = sw @ m - scale * rows @ (sw @ x3d)
  out = []
  for sign in (1.0, -1.0):
    r01 = rows.copy()
    if sign < 0:
      # The mirrored solution: reflect depth, i.e. flip the z column of the first two rows.
      r01[:, 2] *= -1.0
    r = np.vstack([r01, np.cross(r01[0], r01[1])])
    out.append(np.concatenate([euler_from_rotation(r), [t[0], -t[1], scale]]))
  return out


def _residuals(pose: np.ndarray, m: np.ndarray, x3d: np.ndarray, sqrt_w: np.ndarray) -> np.ndarray:
  r = fg.rotation(pose[0], pose[1], pose[2])
  pred = (x3d @ r.T)[:, :2] * pose[5] + np.array([pose[3], -pose[4]])
  return ((pred - m) * sqrt_w[:, None]).ravel()


def fit_pose(
    landmarks: np.ndarray,
    size: int,
    template: np.ndarray = fg.MEAN_FACE,
    weights: np.ndarray = WEIGHTS,
) -> tuple[np.ndarray, float]:
  """One frame: landmarks [68, 2] (crop pixels) -> (pose [6] float64, rms error in pixels)."""
  m = _normalised(landmarks, size)
  w = np.asarray(weights, np.float64)
  sqrt_w = np.sqrt(w)
  best, best_cost = None, np.inf
  for init in _closed_form(m, template, w):
    sol = scipy.optimize.least_squares(
        _residuals, init, args=(m, template, sqrt_w), method="lm", xtol=1e-10, ftol=1e-10,
        max_nfev=200,
    )
    if sol.cost < best_cost:
      best, best_cost = sol.x, sol.cost
  best = best.copy()
  best[:3] = (best[:3] + np.pi) % (2 * np.pi) - np.pi  # wrap angles to [-pi, pi)
  rms_norm = np.sqrt(2.0 * best_cost / w.sum() / 2.0)  # weighted rms per coordinate, normalised
  return best, float(rms_norm * size / 2.0)


def smooth(poses: np.ndarray, sigma: float) -> np.ndarray:
  """Gaussian temporal smoothing of [T, 6] poses (sigma in frames; 0 = unchanged)."""
  poses = np.asarray(poses, np.float64)
  if sigma <= 0 or len(poses) < 2:
    return poses.copy()
  angles = np.unwrap(poses[:, :3], axis=0)  # no jump at +-pi before filtering
  out = np.concatenate([angles, poses[:, 3:]], axis=1)
  return scipy.ndimage.gaussian_filter1d(out, sigma, axis=0, mode="nearest")


def estimate(
    landmarks: np.ndarray, size: int, smooth_sigma: float = 1.0, template: np.ndarray = fg.MEAN_FACE
) -> tuple[np.ndarray, np.ndarray]:
  """A clip: landmarks [T, 68, 2] -> (pose float32 [T, 6] smoothed, fit rms in pixels [T]).

  Each frame is fitted independently (no drift), then the sequence is smoothed.
  """
  fits = [fit_pose(lm, size, template) for lm in np.asarray(landmarks)]
  poses = np.stack([p for p, _ in fits])
  errors = np.array([e for _, e in fits], np.float32)
  return smooth(poses, smooth_sigma).astype(np.float32), errors
