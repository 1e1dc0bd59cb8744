"""Head pose per frame from 68 landmarks: the inverse of ``face_geometry.project``.

DESIGN.md §2 asks for PnP against the 3-D mean-face template. [ours] Our pose convention is a
*scaled-orthographic* camera (face/geometry.py), so we fit that model directly instead of running
perspective PnP and converting: for landmarks p [68, 2] (crop pixels) we find
(yaw, pitch, roll, tx, ty, scale) minimising

    sum_i w_i || project(MEAN_FACE, pose, size)_i - p_i ||^2

(a perspective PnP with focal length ~ crop size gives nearly the same rotation for faces filling a
crop, but then needs a lossy conversion of its 3-D translation to (tx, ty, scale)). The fit is:
  1. closed form: least-squares 2x3 affine map template -> normalised points, projected onto the
     nearest scaled 2-row rotation by SVD (the classic scaled-orthographic initialisation); the
     third rotation row is the cross product, and both depth signs are tried (Necker ambiguity);
  2. Levenberg-Marquardt refinement of the 6 pose numbers, vectorised over all frames of a clip
     (forward-difference Jacobian; one batched solve instead of a scipy least_squares per frame).
On landmarks made by ``project`` it recovers the pose to solver precision
(tests/test_head_pose.py).

Weights: the jaw contour (points 0-16) is a silhouette that slides over the 3-D face when it turns
and the mouth moves with speech; they get lower weight than the rigid points (eyes, nose, brows).

Temporal smoothing (``smooth``) is a Gaussian filter along time on the pose sequence; sequences are
short clips, so the ends use 'nearest' padding.
"""
from __future__ import annotations

import numpy as np
import scipy.ndimage

from osmnet_jax.face import geometry as fg

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


def _closed_form(m: np.ndarray, x3d: np.ndarray, w: np.ndarray) -> np.ndarray:
  """Initial poses [2, T, 6] (both depth signs) for y-up points m [T, 68, 2], template [68, 3]."""
  sw = w / w.sum()
  mean_m = np.einsum("n,tnc->tc", sw, m)  # [T, 2]
  mean_x = sw @ x3d  # [3]
  mc = m - mean_m[:, None]
  xc = x3d - mean_x
  # A [T, 2, 3] = argmin sum_n w_n ||mc_n - A xc_n||^2 = (mc^T W xc) (xc^T W xc)^-1
  gram_inv = np.linalg.inv(xc.T @ (w[:, None] * xc))
  a = np.einsum("tnc,n,nd->tcd", mc, w, xc) @ gram_inv
  u, s, vt = np.linalg.svd(a, full_matrices=False)  # [T,2,2], [T,2], [T,2,3]
  rows = u @ vt  # [T, 2, 3] orthonormal rows: nearest scaled rotation to A
  scale = s.mean(-1)
  t = mean_m - scale[:, None] * (rows @ mean_x)
  out = []
  for sign in (1.0, -1.0):
    # sign -1: the mirrored solution (depth reflected: the z column of the two rows flipped).
    r01 = rows * np.array([1.0, 1.0, sign])
    r = np.concatenate([r01, np.cross(r01[:, 0], r01[:, 1])[:, None]], axis=1)  # [T, 3, 3]
    eul = np.stack([euler_from_rotation(ri) for ri in r])
    out.append(np.concatenate([eul, t[:, :1], -t[:, 1:], scale[:, None]], -1))
  return np.stack(out)


def _residuals(pose: np.ndarray, m: np.ndarray, x3d: np.ndarray, sqrt_w: np.ndarray) -> np.ndarray:
  """pose [T, 6] -> weighted residuals [T, 136] in the y-up normalised frame."""
  r = fg.rotation(pose[:, 0], pose[:, 1], pose[:, 2])  # [T, 3, 3]
  pred = (x3d @ r[:, :2].transpose(0, 2, 1)) * pose[:, 5, None, None]  # [T, 68, 2]
  pred = pred + np.stack([pose[:, 3], -pose[:, 4]], -1)[:, None]
  return ((pred - m) * sqrt_w[None, :, None]).reshape(len(pose), -1)


def _refine(pose: np.ndarray, m, x3d, sqrt_w, iters: int = 30) -> tuple[np.ndarray, np.ndarray]:
  """Levenberg-Marquardt on all frames at once (forward-difference Jacobian): -> (pose, cost)."""
  pose = pose.copy()
  res = _residuals(pose, m, x3d, sqrt_w)
  cost = 0.5 * np.sum(res ** 2, -1)
  lam = np.full(len(pose), 1e-3)
  eps = 1e-7
  for _ in range(iters):
    jac = np.stack([(_residuals(pose + eps * np.eye(6)[k], m, x3d, sqrt_w) - res) / eps
                    for k in range(6)], -1)  # [T, 136, 6]
    jac_t = jac.transpose(0, 2, 1)
    jtj = jac_t @ jac  # [T, 6, 6]
    jtr = (jac_t @ res[..., None])[..., 0]
    damp = jtj + lam[:, None, None] * (np.eye(6) * np.diagonal(jtj, axis1=1, axis2=2)[:, None]
                                       + 1e-12 * np.eye(6))
    step = -np.linalg.solve(damp, jtr[..., None])[..., 0]
    new = pose + step
    new_res = _residuals(new, m, x3d, sqrt_w)
    new_cost = 0.5 * np.sum(new_res ** 2, -1)
    better = new_cost < cost
    pose[better], res[better], cost[better] = new[better], new_res[better], new_cost[better]
    lam = np.where(better, lam * 0.3, lam * 10.0)
    if np.all(np.abs(step).max(-1) < 1e-10) or np.all(lam > 1e8):
      break
  return pose, cost


def fit_poses(
    landmarks: np.ndarray,
    size: int,
    template: np.ndarray = fg.MEAN_FACE,
    weights: np.ndarray = WEIGHTS,
) -> tuple[np.ndarray, np.ndarray]:
  """Frames independently: landmarks [T, 68, 2] (crop px) -> (pose [T, 6] float64, rms px [T])."""
  m = _normalised(landmarks, size)
  w = np.asarray(weights, np.float64)
  sqrt_w = np.sqrt(w)
  fits = [_refine(init, m, template, sqrt_w) for init in _closed_form(m, template, w)]
  pick = fits[1][1] < fits[0][1]
  best = np.where(pick[:, None], fits[1][0], fits[0][0])
  cost = np.where(pick, fits[1][1], fits[0][1])
  best[:, :3] = (best[:, :3] + np.pi) % (2 * np.pi) - np.pi  # wrap angles to [-pi, pi)
  rms_norm = np.sqrt(2.0 * cost / (2.0 * w.sum()))  # weighted rms per coordinate, normalised
  return best, rms_norm * size / 2.0


def fit_pose(landmarks: np.ndarray, size: int, template: np.ndarray = fg.MEAN_FACE,
             weights: np.ndarray = WEIGHTS) -> tuple[np.ndarray, float]:
  """One frame: landmarks [68, 2] (crop pixels) -> (pose [6] float64, rms error in pixels)."""
  pose, rms = fit_poses(np.asarray(landmarks)[None], size, template, weights)
  return pose[0], float(rms[0])


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
  poses, errors = fit_poses(np.asarray(landmarks), size, template)
  return smooth(poses, smooth_sigma).astype(np.float32), errors.astype(np.float32)
