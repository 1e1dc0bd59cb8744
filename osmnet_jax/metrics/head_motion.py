"""Head-motion metrics: one-to-many diversity, motion statistics, realism (DESIGN.md §7).

All inputs are poses in dataset units (radians for yaw/pitch/roll, crop units for tx, ty, scale),
i.e. already de-normalised. Shapes: ``samples`` [C, N, T, 6] = N sequences for each of C audios;
``poses`` [..., T, 6] any batch of sequences. Definitions ([ours], the paper body is not
available):

* ``diversity``: std across the N samples of the same audio, of each rotation angle, averaged
  over frames, the 3 rotation axes and the C audios (radians). 0 for a one-to-one model.
  ``true_diversity`` is the same statistic on N ground-truth re-draws (synth_talk's
  ``redraw_for_example``); ``diversity_ratio`` = diversity / true_diversity (target 1).
* ``pose_std``: std over time of each rotation angle, averaged over axes and sequences (how
  much the head moves within a sequence).
* ``pose_velocity``: mean |p[t+1] - p[t]| of the rotation angles (radians per frame).
* ``pose_fd``: Fréchet distance between Gaussians fitted to per-sequence descriptors of the
  generated and the real sequences. Descriptor (18-d): per axis (all 6, each divided by the
  train pose std so axes are comparable) the mean, the std over time and the mean |velocity|.
* ``out_of_range_frac``: fraction of frames with at least one ROTATION axis outside the
  training range. Per axis the range is [p01, p99] of the train poses widened symmetrically
  about the train mean to the larger of its two tails: mean +- max(|p01 - mean|, |p99 - mean|)
  (so an asymmetric distribution, e.g. a yaw clipped at +0.5 rad, does not flag the other
  side's plausible values). Translation/scale are left out: they are the identity's framing in
  the crop (test identities are framed differently from train ones), not head motion. Real
  synth_talk motion scores a few percent (1 % per tail per axis).
"""
from __future__ import annotations

import numpy as np

ROTATION = slice(0, 3)


def diversity(samples: np.ndarray) -> float:
  """Mean over audios, frames and rotation axes of the std across samples. samples [C,N,T,6]."""
  s = np.asarray(samples, np.float64)[..., ROTATION]
  if s.ndim != 4:
    raise ValueError(f"samples must be [C, N, T, 6], got {s.shape}")
  return float(s.std(axis=1).mean())


def pose_std(poses: np.ndarray) -> float:
  """Mean over sequences and rotation axes of the std over time. poses [..., T, 6]."""
  p = np.asarray(poses, np.float64)[..., ROTATION]
  return float(p.std(axis=-2).mean())


def pose_velocity(poses: np.ndarray) -> float:
  """Mean |p[t+1] - p[t]| of the rotation angles (per frame). poses [..., T, 6]."""
  p = np.asarray(poses, np.float64)[..., ROTATION]
  return float(np.abs(np.diff(p, axis=-2)).mean())


def clip_descriptors(poses: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
  """[..., T, 6] -> [S, 18]: per axis (divided by ``scale``) mean, std over time, mean |vel|."""
  p = np.asarray(poses, np.float64)
  p = p.reshape((-1,) + p.shape[-2:])
  if scale is not None:
    p = p / np.asarray(scale, np.float64)
  vel = np.abs(np.diff(p, axis=1)).mean(1) if p.shape[1] > 1 else np.zeros_like(p[:, 0])
  return np.concatenate([p.mean(1), p.std(1), vel], axis=1)


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
  w, v = np.linalg.eigh((a + a.T) / 2)
  return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
  """Fréchet distance between Gaussians fitted to rows of x [S1, F] and y [S2, F].

  |mu_x - mu_y|^2 + tr(Cx + Cy - 2 (Cx^1/2 Cy Cx^1/2)^1/2) (symmetric-PSD form, exact for
  covariance matrices; no complex sqrtm).
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  mx, my = x.mean(0), y.mean(0)
  cx = np.atleast_2d(np.cov(x, rowvar=False))
  cy = np.atleast_2d(np.cov(y, rowvar=False))
  sx = _sqrtm_psd(cx)
  cross = _sqrtm_psd(sx @ cy @ sx)
  return float(max(((mx - my) ** 2).sum() + np.trace(cx + cy - 2 * cross), 0.0))


def valid_range(stats: dict) -> tuple[np.ndarray, np.ndarray]:
  """(lo [6], hi [6]) from the dataset's pose_stats (see module docstring)."""
  mean = np.asarray(stats["mean"], np.float64)
  half = np.maximum(np.abs(np.asarray(stats["p01"]) - mean),
                    np.abs(np.asarray(stats["p99"]) - mean))
  return mean - half, mean + half


def out_of_range_frac(poses: np.ndarray, stats: dict) -> float:
  """Fraction of frames with any rotation axis outside ``valid_range``. poses [..., 6]."""
  lo, hi = valid_range(stats)
  p = np.asarray(poses, np.float64).reshape(-1, 6)[:, ROTATION]
  out = (p < lo[ROTATION]) | (p > hi[ROTATION])
  return float(np.mean(np.any(out, axis=1)))


def head_motion_metrics(samples: np.ndarray, true_samples: np.ndarray | None, stats: dict,
                        real: np.ndarray | None = None) -> dict:
  """The ``head_motion`` group of eval metrics.json.

  Args:
    samples: generated [C, N, T, 6].
    true_samples: ground-truth re-draws [C, N', T, 6] for the same audios (or None).
    stats: the dataset's pose_stats (mean/std/p01/p99).
    real: reference real sequences for ``pose_fd`` (default: ``true_samples``).
  Metrics that need the ground truth are None without it.
  """
  out = {"diversity": diversity(samples), "pose_std": pose_std(samples),
         "pose_velocity": pose_velocity(samples),
         "out_of_range_frac": out_of_range_frac(samples, stats),
         "true_diversity": None, "diversity_ratio": None, "pose_fd": None}
  if true_samples is not None:
    td = diversity(true_samples)
    out["true_diversity"] = td
    out["diversity_ratio"] = out["diversity"] / td if td > 0 else None
  ref = real if real is not None else true_samples
  if ref is not None:
    scale = np.asarray(stats["std"], np.float64)
    out["pose_fd"] = frechet_distance(clip_descriptors(samples, scale),
                                      clip_descriptors(ref, scale))
  return out
