"""benchmarks/landmark_warp_ceiling.py: a warp through the true landmarks shows their motion."""
import os
import sys

import numpy as np

from data.synth_talk import face_render
from osmnet_jax.metrics import pixel_motion as pm

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import landmark_warp_ceiling as lwc  # noqa: E402

T, S = 16, 64


def test_warp_through_points_moves_a_point_and_keeps_the_border():
  img = np.zeros((S, S, 3), np.uint8)
  img[30:34, 20:24] = 255  # a 4 x 4 white square centred at (21.5, 31.5)
  src = np.array([[21.5, 31.5], [40.0, 20.0], [40.0, 45.0], [15.0, 15.0]])
  drv = src + [[6.0, -3.0], [0, 0], [0, 0], [0, 0]]
  out = lwc.warp_through_points(img, src, drv).astype(np.float64).sum(-1)
  # The square's centre lands on the moved point (the square itself shears: its neighbours
  # stay put), and where it was is background now.
  ys, xs = np.nonzero(out > 0.5 * out.max())
  assert abs(xs.mean() - 27.5) < 1.2 and abs(ys.mean() - 28.5) < 1.2, (xs.mean(), ys.mean())
  assert out[27:30, 26:29].min() > 0.5 * out.max() and out[30:34, 20:22].max() == 0
  same = lwc.warp_through_points(img, src, src)
  np.testing.assert_array_equal(same, img)


def test_warp_through_rendered_landmarks_carries_a_known_roll():
  ident = face_render.Identity.sample(np.random.default_rng(3))
  t = np.arange(T)
  pose = np.tile(np.r_[0.0, 0.0, 0.0, ident.framing], (T, 1))
  pose[:, 2] = 0.2 * np.sin(2 * np.pi * t / 12)
  z = np.zeros(T)
  frames, lm = face_render.render_frames(ident, pose, z, z, z, S)
  warped = lwc.warp_clip(frames, lm, list(range(68)))
  np.testing.assert_array_equal(warped[0], frames[0])
  origin = (pose[0, 3:5] + 1.0) * S / 2.0 - 0.5  # as head_motion_in_pixels, without the mesh
  reg = pm.register_to_first(warped, pm.face_mask(S, lm[0]), center=tuple(origin))
  got = pm.agreement(reg["roll"], pose[:, 2] - pose[0, 2])
  assert got["r"] > 0.95 and 0.8 < got["amplitude_ratio"] < 1.2, got
  # Frozen landmarks: no motion reaches the frames.
  still = lwc.warp_clip(frames, np.broadcast_to(lm[:1], lm.shape), list(range(68)))
  assert np.abs(still.astype(int) - frames[0]).max() <= 1


def test_psnr_of_a_known_error():
  """The PSNR column: frames off by a constant 16 grey levels read 10 log10(255^2 / 16^2) dB, and
  frame 0 (the source in every row) does not count."""
  truth = np.full((3, 8, 8, 3), 100, np.uint8)
  frames = truth.copy()
  frames[0] = 0          # ignored
  frames[1:] += 16
  np.testing.assert_allclose(lwc.psnr(frames, truth), 10 * np.log10(255.0 ** 2 / 256.0), rtol=1e-9)
