"""Head-motion metrics on inputs with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from osmnet_jax.metrics import head_motion as hm

STATS = {"mean": [0.0] * 6, "std": [1.0] * 6, "p01": [-1.0, -2.0, -1.0, -1.0, -1.0, -1.0],
         "p99": [0.5, 2.0, 1.0, 1.0, 1.0, 1.0]}


def test_diversity_known_answers():
  # Two samples of one audio at +-a on every rotation axis: std across samples = a.
  a = 0.3
  s = np.zeros((1, 2, 10, 6))
  s[0, 0, :, :3], s[0, 1, :, :3] = a, -a
  s[..., 3:] = np.random.default_rng(0).normal(size=(1, 2, 10, 3))  # translations: ignored
  assert hm.diversity(s) == pytest.approx(a)
  # Identical samples (a one-to-one model): exactly zero.
  same = np.repeat(np.random.default_rng(1).normal(size=(3, 1, 10, 6)), 4, axis=1)
  assert hm.diversity(same) == 0.0
  # Averaged over audios: audio 0 spread a, audio 1 spread 0 -> a / 2.
  two = np.concatenate([s, np.zeros_like(s)], 0)
  assert hm.diversity(two) == pytest.approx(a / 2)
  with pytest.raises(ValueError):
    hm.diversity(np.zeros((2, 10, 6)))


def test_pose_std_and_velocity_known_answers():
  t = np.arange(8, dtype=np.float64)
  p = np.zeros((1, 8, 6))
  p[0, :, 0] = 0.1 * t             # yaw ramps 0.1 rad/frame
  p[0, :, 1] = np.where(t % 2, 1.0, -1.0)  # pitch alternates +-1: std 1, |velocity| 2
  assert hm.pose_velocity(p) == pytest.approx((0.1 + 2.0 + 0.0) / 3)
  assert hm.pose_std(p) == pytest.approx((0.1 * t.std() + 1.0 + 0.0) / 3)
  assert hm.pose_std(np.ones((2, 3, 5, 6))) == 0.0


def test_frechet_distance_known_answers():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4000, 3))
  assert hm.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
  # Same covariance, mean shifted by (1, 2, 2): FD = |shift|^2 = 9.
  assert hm.frechet_distance(x, x + [1.0, 2.0, 2.0]) == pytest.approx(9.0, rel=1e-6)
  # y = 2x: covariances C and 4C -> tr(C + 4C - 2 * 2C) = tr(C), plus |mean(x)|^2 (~3 for C ~ I).
  c, m = np.cov(x, rowvar=False), x.mean(0)
  assert hm.frechet_distance(x, 2.0 * x) == pytest.approx(np.trace(c) + m @ m, rel=1e-6)
  assert 2.8 < np.trace(c) < 3.2


def test_valid_range_and_out_of_range_frac():
  lo, hi = hm.valid_range(STATS)
  # Yaw: mean 0, tails 1.0 and 0.5 -> +-1.0 (widened to the larger tail).
  np.testing.assert_allclose(lo, [-1, -2, -1, -1, -1, -1])
  np.testing.assert_allclose(hi, [1, 2, 1, 1, 1, 1])
  p = np.zeros((2, 5, 6))
  p[0, 0, 0] = 0.9        # inside (would be outside the raw p99 = 0.5)
  p[0, 1, 0] = 1.1        # outside
  p[1, 2, 1] = -2.5       # outside
  p[1, 3, 1] = 1.9        # inside
  p[1, 4, 2] = 1.01       # outside (any rotation axis counts)
  p[1, 0, 4] = 5.0        # translation: framing, not counted
  assert hm.out_of_range_frac(p, STATS) == pytest.approx(3 / 10)
  assert hm.out_of_range_frac(np.zeros((4, 6)), STATS) == 0.0


def test_head_motion_metrics_group():
  rng = np.random.default_rng(0)
  true = rng.normal(scale=0.2, size=(4, 6, 12, 6))
  gen = 0.5 * rng.normal(scale=0.2, size=(4, 6, 12, 6))
  out = hm.head_motion_metrics(gen, true, STATS)
  assert set(out) == {"diversity", "true_diversity", "diversity_ratio", "pose_std",
                      "pose_velocity", "pose_fd", "out_of_range_frac"}
  assert out["diversity_ratio"] == pytest.approx(out["diversity"] / out["true_diversity"])
  assert 0.4 < out["diversity_ratio"] < 0.6   # half the spread of the truth
  assert out["pose_fd"] > 0
  # Compared with itself the generated set has FD 0 and ratio 1.
  self_ = hm.head_motion_metrics(true, true, STATS)
  assert self_["diversity_ratio"] == 1.0 and self_["pose_fd"] == pytest.approx(0.0, abs=1e-9)
  alone = hm.head_motion_metrics(gen, None, STATS)
  assert alone["true_diversity"] is None and alone["pose_fd"] is None
