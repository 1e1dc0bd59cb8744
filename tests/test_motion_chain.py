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


def test_vertical_parallax_reads_the_tip_against_the_eyes():
  # Eyes at rows 10 and 12 (midpoint 11), tip at row 20; frame 1: the whole set moves down 3 px
  # (no parallax), frame 2: the tip alone 0.5 px further down, frame 3: the eyes 1 px down.
  base = np.array([[10.0, 10.0], [30.0, 12.0], [20.0, 20.0]])
  frames = np.stack([base, base + [0, 3], base + [[0, 3], [0, 3], [0, 3.5]],
                     base + [[0, 1], [0, 1], [0, 0]]])
  np.testing.assert_allclose(rmc.vertical_parallax(frames, (0, 1), 2), [0, 0, 0.5, -1.0])
