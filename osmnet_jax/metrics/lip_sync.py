"""Lip-sync metrics from landmarks and audio.

- ``lmd_mouth``: landmark distance on the mouth (iBUG 48-67): mean Euclidean distance in pixels
  between generated and ground-truth mouth landmarks, after removing each frame's mouth centroid
  offset (so head-position errors do not count as lip-sync errors) when ``center=True``.
- ``mouth_audio_corr``: Pearson correlation, over frames, between the mouth opening of the
  landmarks (face_geometry.mouth_opening) and the RMS energy of the audio under each frame.
"""
from __future__ import annotations

import numpy as np

from osmnet_jax import audio as audio_lib
from osmnet_jax.face import geometry as fg


def lmd_mouth(pred: np.ndarray, gt: np.ndarray, center: bool = True) -> float:
  """[..., 68, 2] x2 -> mean mouth landmark distance (pixels)."""
  p = np.asarray(pred, np.float64)[..., fg.MOUTH, :]
  g = np.asarray(gt, np.float64)[..., fg.MOUTH, :]
  if center:
    p = p - p.mean(-2, keepdims=True)
    g = g - g.mean(-2, keepdims=True)
  return float(np.linalg.norm(p - g, axis=-1).mean())


def pearson(a: np.ndarray, b: np.ndarray) -> float:
  a = np.asarray(a, np.float64).ravel()
  b = np.asarray(b, np.float64).ravel()
  a, b = a - a.mean(), b - b.mean()
  den = np.sqrt((a * a).sum() * (b * b).sum())
  return float((a * b).sum() / den) if den > 0 else 0.0


def mouth_audio_corr(landmarks: np.ndarray, audio: np.ndarray) -> float:
  """landmarks [T, 68, 2], audio [640 T] -> correlation of mouth opening with audio energy."""
  t = landmarks.shape[0]
  return pearson(fg.mouth_opening(landmarks), audio_lib.frame_energy(audio, t))
