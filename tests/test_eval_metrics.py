"""CPBD, LPIPS and lip-sync metrics on inputs with known answers."""
import numpy as np
from scipy.ndimage import gaussian_filter
from skimage import data

from osmnet_jax.metrics import cpbd, lip_sync, lpips


def _astronaut(size=256):
  img = data.astronaut()[:size, 100:100 + size].astype(np.float32) / 255.0
  return img


def test_cpbd_blur_lowers_sharpness():
  img = _astronaut()
  scores = [cpbd.cpbd(gaussian_filter(img, sigma=(s, s, 0)) if s else img) for s in (0, 1.0, 2.5)]
  assert scores[0] > scores[1] > scores[2]
  assert scores[0] > 0.1 and scores[2] < 0.05
  assert cpbd.cpbd(np.full((64, 64, 3), 0.5)) == 0.0


def test_lpips_known_answers():
  img = _astronaut(64)[None]
  noisy = np.clip(img + np.random.default_rng(0).normal(0, 0.1, img.shape), 0, 1).astype(np.float32)
  very = np.clip(img + np.random.default_rng(1).normal(0, 0.3, img.shape), 0, 1).astype(np.float32)
  same = float(lpips.lpips(img, img)[0])
  d1, d2 = float(lpips.lpips(img, noisy)[0]), float(lpips.lpips(img, very)[0])
  assert abs(same) < 1e-6
  assert 0 < d1 < d2


def test_lmd_known_offsets():
  rng = np.random.default_rng(0)
  gt = rng.uniform(0, 64, (10, 68, 2))
  shifted = gt + np.array([3.0, -4.0])  # pure translation: 5 px
  assert abs(lip_sync.lmd_mouth(shifted, gt, center=False) - 5.0) < 1e-9
  assert lip_sync.lmd_mouth(shifted, gt, center=True) < 1e-9
  moved = gt.copy()
  moved[:, 48:68, 1] += 2.0
  moved[:, 48, 1] += 20.0  # one landmark 20 px further
  want_uncentered = (19 * 2.0 + 22.0) / 20
  assert abs(lip_sync.lmd_mouth(moved, gt, center=False) - want_uncentered) < 1e-9


def test_mouth_audio_corr_follows_the_synthetic_generator():
  from data.synth_talk import clips

  ex = clips.generate_clip(clips.SynthSpec(resolution=64, seconds=2.0), "train", 0)
  good = lip_sync.mouth_audio_corr(ex["landmarks"], ex["audio"])
  frozen = np.repeat(ex["landmarks"][:1], len(ex["landmarks"]), 0)
  frozen = frozen + np.random.default_rng(0).normal(0, 1e-3, frozen.shape)
  assert good > 0.5
  assert abs(lip_sync.mouth_audio_corr(frozen, ex["audio"])) < 0.4
  assert abs(lip_sync.pearson([1, 2, 3], [2, 4, 6]) - 1.0) < 1e-12
