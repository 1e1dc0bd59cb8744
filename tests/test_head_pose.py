"""head_pose inverts face_geometry.project; smoothing reduces landmark noise."""
import numpy as np

from osmnet_jax.face import geometry as fg
from osmnet_jax.face import pose as head_pose


def _random_poses(rng, n):
  return np.stack([rng.uniform(-0.6, 0.6, n), rng.uniform(-0.4, 0.4, n), rng.uniform(-0.5, 0.5, n),
                   rng.uniform(-0.2, 0.2, n), rng.uniform(-0.2, 0.2, n), rng.uniform(0.3, 0.6, n)], 1)  # noqa: E501


def test_fit_recovers_projected_poses_exactly():
  rng = np.random.default_rng(0)
  for pose in _random_poses(rng, 25):
    lm, _ = fg.project(fg.MEAN_FACE, pose, 256)
    got, rms = head_pose.fit_pose(lm, 256)
    np.testing.assert_allclose(got, pose, atol=1e-6)
    assert rms < 1e-4


def test_fit_other_crop_size_and_expression():
  # Pose is in normalised crop units: the same pose projected at 64 px is recovered too; an open
  # mouth (non-rigid) barely moves it thanks to the low mouth / jaw weights.
  pose = np.array([0.3, -0.2, 0.1, 0.05, -0.1, 0.45])
  face = fg.deform(fg.MEAN_FACE, mouth_open=1.0)
  lm, _ = fg.project(face, pose, 64)
  got, _ = head_pose.fit_pose(lm, 64)
  assert np.abs(got[:3] - pose[:3]).max() < 0.05  # rad
  assert np.abs(got[3:] - pose[3:]).max() < 0.02


def test_euler_round_trip():
  rng = np.random.default_rng(1)
  for yaw, pitch, roll in rng.uniform(-1.2, 1.2, (20, 3)):
    got = head_pose.euler_from_rotation(fg.rotation(yaw, pitch, roll))
    np.testing.assert_allclose(got, [yaw, pitch, roll], atol=1e-9)


def test_estimate_with_noise_and_smoothing():
  # A smooth nod + turn with 1-px landmark noise: per-frame fits are noisy, the smoothed
  # sequence is closer to the truth.
  t = np.arange(50)
  truth = np.stack([0.3 * np.sin(t / 8), 0.15 * np.sin(t / 5), 0.05 * np.cos(t / 7),
                    0.02 * np.sin(t / 9), 0.0 * t, 0.5 + 0.02 * np.sin(t / 6)], 1)
  lm, _ = fg.project(fg.MEAN_FACE, truth, 256)
  lm = lm + np.random.default_rng(2).normal(0, 1.0, lm.shape)
  raw, err = head_pose.estimate(lm, 256, smooth_sigma=0.0)
  smooth, _ = head_pose.estimate(lm, 256, smooth_sigma=1.5)
  assert raw.shape == (50, 6) and raw.dtype == np.float32 and err.shape == (50,)
  e_raw = np.abs(raw - truth)[:, :3].mean()
  e_smooth = np.abs(smooth - truth)[:, :3].mean()
  assert e_raw < 0.05 and e_smooth < 0.8 * e_raw
  assert 0.5 < err.mean() < 2.0  # rms residual ~ the noise level (px)
