"""Sampling head motion: determinism, the diversity knob, static head, long-audio blending."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from osmnet_jax.inference import sampling as motion_sampling
from osmnet_jax.metrics import head_motion
from osmnet_jax.stages import motion as motion_stage

T, O, L = 8, 4, 30  # clip length, overlap, audio frames (4 clips after edge-padding to 32)


def tiny_cfg(model="osmnet", **kw):
  c = default.get_config().motion
  c.update(model=model, num_frames=T, overlap=O, num_bases=4, motion_dim=8, hidden=16, depth=1,
           audio_dim=16, audio_channels=(4, 8), rhythm_dim=4, lstm_layers=1, noise_dim=4,
           batch_size=4, num_steps=3, log_every=1, sigma_passes=1, **kw)
  return c


@pytest.fixture(scope="module")
def osmnet():
  stage = motion_stage.MotionStage(tiny_cfg())
  params = stage.init_state(jax.random.PRNGKey(0)).params
  sigma = {"sigma": [0.5, 1.0, 1.5, 2.0]}
  mel = jnp.asarray(np.random.default_rng(0).normal(-7, 4, (2, L, 20, 80)), jnp.float32)
  return stage, params, sigma, mel, motion_sampling.make_sampler(stage, params, sigma)


def test_shapes_determinism_and_knob(osmnet):
  _, _, _, mel, sample = osmnet
  a = np.asarray(sample(mel, None, jax.random.PRNGKey(1), num_samples=5, diversity=1.0))
  b = np.asarray(sample(mel, None, jax.random.PRNGKey(1), num_samples=5, diversity=1.0))
  c = np.asarray(sample(mel, None, jax.random.PRNGKey(2), num_samples=5, diversity=1.0))
  assert a.shape == (2, 5, L, 6) and np.all(np.isfinite(a))
  np.testing.assert_array_equal(a, b)                      # same seed, same motions
  assert np.abs(a - c).max() > 1e-3                        # another seed, other motions
  assert head_motion.diversity(a) > 1e-3                   # r > 0: samples differ
  r0 = np.asarray(sample(mel, None, jax.random.PRNGKey(1), num_samples=5, diversity=0.0))
  assert head_motion.diversity(r0) == 0.0                  # r = 0: the mapped point, every time
  r0b = np.asarray(sample(mel, None, jax.random.PRNGKey(7), num_samples=5, diversity=0.0))
  np.testing.assert_array_equal(r0, r0b)
  half = np.asarray(sample(mel, None, jax.random.PRNGKey(1), num_samples=5, diversity=0.5))
  assert head_motion.diversity(half) < head_motion.diversity(a)  # the knob scales the spread


def test_delta_stays_within_sigma_box():
  """alpha - alpha_hat = delta, |delta_k| <= r * sample_width * sigma_k, uniform (std w/sqrt3);
  one delta per sample shared by its clips unless per_clip_noise."""
  sigma = np.array([0.5, 1.0, 1.5, 2.0])
  alpha_hat = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)), jnp.float32)  # 3 clips
  a = np.asarray(motion_sampling.sample_alphas(alpha_hat, sigma, jax.random.PRNGKey(0), 4000,
                                               0.5, 2.0))
  delta = a - np.asarray(alpha_hat)[None]  # [N, n, M]
  w = 0.5 * 2.0 * sigma
  assert np.all(np.abs(delta) <= w + 1e-5)
  np.testing.assert_allclose(delta[:, 0].std(0), w / np.sqrt(3), rtol=0.05)
  np.testing.assert_allclose(delta[:, 0], delta[:, 2], atol=1e-6)  # shared across clips
  per = np.asarray(motion_sampling.sample_alphas(alpha_hat, sigma, jax.random.PRNGKey(0), 10,
                                                 1.0, 1.0, per_clip_noise=True))
  assert np.abs(per[:, 0] - per[:, 2] - (alpha_hat[0] - alpha_hat[2])).max() > 1e-3
  zero = motion_sampling.sample_alphas(alpha_hat, sigma, jax.random.PRNGKey(0), 3, 0.0, 2.0)
  np.testing.assert_array_equal(np.asarray(zero), np.broadcast_to(alpha_hat, (3, 3, 4)))


def test_static_head_is_neutral(osmnet):
  _, _, _, mel, sample = osmnet
  s = np.asarray(sample(mel, None, jax.random.PRNGKey(0), num_samples=3, static_head=True))
  assert s.shape == (2, 3, L, 6)
  np.testing.assert_array_equal(s, 0.0)  # zeros in normalised units = the dataset mean pose
  mean, std = np.array([0.1, -0.2, 0, 0.01, 0.07, 0.6]), np.full(6, 0.1)
  np.testing.assert_allclose(s * std + mean, np.broadcast_to(mean, s.shape))


@pytest.mark.parametrize("length,clip,overlap", [(30, 8, 4), (8, 8, 2), (5, 8, 4), (50, 32, 16),
                                                 (41, 10, 0)])
def test_crossfade_weights_partition_unity_and_reconstruct(length, clip, overlap):
  starts = motion_sampling.clip_starts(length, clip, overlap)
  w = motion_sampling.crossfade_weights(len(starts), clip, overlap)
  total = np.zeros(starts[-1] + clip)
  for s, wk in zip(starts, w):
    total[s:s + clip] += wk
  np.testing.assert_allclose(total, 1.0, atol=1e-6)
  assert starts[-1] + clip >= length
  # Cutting a signal into clips and blending them back gives the signal exactly.
  x = jnp.asarray(np.random.default_rng(0).normal(size=(length, 3)), jnp.float32)
  clips = motion_sampling.split_clips(x, clip, overlap)
  np.testing.assert_allclose(motion_sampling.blend_clips(clips, length, overlap), x, atol=1e-5)


def test_blending_spreads_clip_offsets_smoothly():
  """Clips that disagree by an offset D: the hard cut jumps by D, the cross-fade moves at most
  D * pi / (2 O) per frame on top of the clips' own motion."""
  n, offsets = 4, np.array([0.0, 1.0, -0.5, 0.7])
  t = np.arange(n * T)
  motion = 0.05 * np.sin(t / 3.0)  # the clips' own smooth motion
  starts = motion_sampling.clip_starts((n - 1) * (T - O) + T, T, O)
  clips = np.stack([motion[s:s + T] + offsets[k] for k, s in enumerate(starts)])[..., None]
  seq = np.asarray(motion_sampling.blend_clips(jnp.asarray(clips, jnp.float32),
                                               starts[-1] + T, O))[:, 0]
  steps = np.abs(np.diff(seq))
  own = np.abs(np.diff(motion)).max()
  bound = own + np.abs(np.diff(offsets)).max() * np.pi / (2 * O)
  assert steps.max() <= bound + 1e-5
  assert steps.max() < 0.5 * np.abs(np.diff(offsets)).max()  # far below the hard-cut jump


def test_long_audio_has_no_jump_at_clip_boundaries(osmnet):
  """Model-level: frame-to-frame motion in the cross-fade regions is not larger than the
  typical frame-to-frame motion inside the clips."""
  _, _, _, mel, sample = osmnet
  poses = np.asarray(sample(mel, None, jax.random.PRNGKey(5), num_samples=4, diversity=1.0))
  steps = np.linalg.norm(np.diff(poses, axis=2), axis=-1)  # [B, N, L-1]
  starts = motion_sampling.clip_starts(L, T, O)
  in_fade = np.zeros(L - 1, bool)
  for s in starts[1:]:
    in_fade[s - 1:s + O] = True  # steps into, through and out of each overlap
  fade, inner = steps[..., in_fade], steps[..., ~in_fade]
  assert fade.max() <= 1.5 * inner.max(), (fade.max(), inner.max())
