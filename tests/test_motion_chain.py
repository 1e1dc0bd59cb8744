"""benchmarks/renderer_motion_chain.py: the rotation it reads off a point set."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import renderer_motion_chain as rmc  # pylint: disable=g-import-not-at-top,wrong-import-position  # noqa: E402


@pytest.mark.parametrize("deg", [-12.0, 0.0, 3.0, 25.0])
def test_procrustes_angle_recovers_a_rotation_under_scale_and_shift(deg):
  pts = np.random.default_rng(0).normal(size=(10, 2))
  a = np.deg2rad(deg)
  rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
  moved = 1.3 * pts @ rot.T + np.array([0.2, -0.4])
  assert rmc.procrustes_angle(pts, moved) == pytest.approx(deg, abs=1e-6)
  noisy = moved + np.random.default_rng(1).normal(scale=0.01, size=moved.shape)
  assert rmc.procrustes_angle(pts, noisy) == pytest.approx(deg, abs=1.0)
