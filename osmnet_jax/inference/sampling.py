"""Sampling head-motion sequences of any length from a trained motion model (jit-able).

OSM-Net ([paper] one-to-many; details [ours]): for each T-frame clip of the audio the mapper
gives alpha_hat; a sample is alpha = alpha_hat + delta with delta_k ~ U(-w_k, w_k),
w_k = diversity * sample_width * sigma_k (sigma_k: residual spread stored with the checkpoint;
``diversity`` = 0 gives the mapped point, deterministic). The static-head mode returns the
neutral pose: zeros in the dataset's normalised units (= the train mean pose).

Long audio (L > T frames): the audio is cut into clips starting every S = T - overlap frames
(edge-padding the last one), every clip is decoded, and consecutive clips are cross-faded over
their ``overlap`` shared frames with raised-cosine weights that sum to one, so the sequence has
no seam. By default one delta is drawn per sequence and shared by all of its clips (a sample
keeps one motion style, like a synth_talk clip does) [ours]; ``per_clip_noise`` draws one per
clip. Everything is vectorised: clips and samples are batch dimensions, no Python loop per
frame or per clip.

The baselines run their LSTM over the whole sequence (no clips); ``noise_sampler`` draws one
noise vector per sample.

All poses here are normalised ([..., 6]); de-normalise with the dataset's pose stats.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from osmnet_jax.models import motion_space, pose_baselines


def clip_starts(length: int, clip_len: int, overlap: int) -> np.ndarray:
  """Start frames of the clips covering ``length`` frames: [n] (static)."""
  if not 0 <= overlap <= clip_len // 2:
    raise ValueError(f"overlap={overlap} must be in [0, clip_len // 2 = {clip_len // 2}]")
  stride = clip_len - overlap
  n = max(1, -(-(length - overlap) // stride))  # ceil((L - O) / S), at least one clip
  return np.arange(n) * stride


def crossfade_weights(num_clips: int, clip_len: int, overlap: int) -> np.ndarray:
  """[n, T] raised-cosine weights: in every shared frame the two clips' weights sum to 1."""
  w = np.ones((num_clips, clip_len), np.float32)
  if overlap and num_clips > 1:
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)  # 0 -> 1
    w[1:, :overlap] *= ramp
    w[:-1, clip_len - overlap:] *= 1.0 - ramp
  return w


def split_clips(x: jnp.ndarray, clip_len: int, overlap: int) -> jnp.ndarray:
  """[L, ...] -> [n, T, ...] clips at ``clip_starts``, the last one edge-padded."""
  starts = clip_starts(x.shape[0], clip_len, overlap)
  padded_len = int(starts[-1]) + clip_len
  pad = padded_len - x.shape[0]
  if pad > 0:
    x = jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)], axis=0)
  idx = starts[:, None] + np.arange(clip_len)[None]  # [n, T]
  return x[idx]


def blend_clips(clips: jnp.ndarray, length: int, overlap: int) -> jnp.ndarray:
  """Cross-fade [n, T, C] clips laid out by ``clip_starts`` into one [length, C] sequence."""
  n, t, _ = clips.shape
  starts = clip_starts(length, t, overlap)
  assert len(starts) == n, (len(starts), n)
  w = jnp.asarray(crossfade_weights(n, t, overlap))[..., None]  # [n, T, 1]
  idx = (starts[:, None] + np.arange(t)[None]).reshape(-1)  # [n*T]
  total = int(starts[-1]) + t
  num = jnp.zeros((total, clips.shape[-1]), clips.dtype).at[idx].add((w * clips).reshape(n * t, -1))
  den = jnp.zeros((total, 1), clips.dtype).at[idx].add(w.reshape(n * t, 1))
  return (num / den)[:length]


def sample_alphas(alpha_hat, sigma, rng, num_samples: int, diversity, sample_width: float,
                  per_clip_noise: bool = False):
  """alpha_hat [n, M] (one per clip) -> alpha [N, n, M] = alpha_hat + delta,
  delta_k ~ U(-w_k, w_k), w_k = diversity * sample_width * sigma_k; one delta per sample
  shared by its n clips unless ``per_clip_noise``."""
  n, m = alpha_hat.shape
  half_width = diversity * sample_width * jnp.asarray(sigma, jnp.float32)  # [M]
  u_shape = (num_samples, n, m) if per_clip_noise else (num_samples, 1, m)
  delta = jax.random.uniform(rng, u_shape, minval=-1.0, maxval=1.0) * half_width
  return alpha_hat[None] + delta


def sample_osmnet(model: motion_space.OSMNetMotion, params, sigma, mel, source, rng,
                  num_samples: int, diversity, sample_width: float, overlap: int,
                  per_clip_noise: bool = False):
  """mel windows [B, L, 20, 80] (+ source [B,H,W,3]) -> poses [B, N, L, 6] (normalised)."""
  t, m = model.num_frames, model.num_bases
  length = mel.shape[1]

  def one(mel_seq, src, key):
    clips = split_clips(mel_seq, t, overlap)  # [n, T, 20, 80]
    n = clips.shape[0]
    v = {"params": params}
    feats, rhythm = model.apply(v, clips, method=motion_space.OSMNetMotion.audio_features)
    src_n = None if src is None else jnp.broadcast_to(src, (n,) + src.shape)
    alpha_hat = model.apply(v, feats, src_n, method=motion_space.OSMNetMotion.map_audio)  # [n,M]
    alpha = sample_alphas(alpha_hat, sigma, key, num_samples, diversity, sample_width,
                          per_clip_noise)  # [N, n, M]
    poses = model.apply(v, alpha.reshape(num_samples * n, m),
                        jnp.tile(rhythm, (num_samples, 1, 1)),
                        method=motion_space.OSMNetMotion.decode)  # [N*n, T, 6]
    poses = poses.reshape(num_samples, n, t, -1)
    return jax.vmap(lambda c: blend_clips(c, length, overlap))(poses)  # [N, L, 6]

  keys = jax.random.split(rng, mel.shape[0])
  if source is None:
    return jax.vmap(lambda x, k: one(x, None, k))(mel, keys)
  return jax.vmap(one)(mel, source, keys)


def sample_regressor(model: pose_baselines.PoseRegressor, params, mel, source, rng,
                     num_samples: int, noise_per_frame: bool = False):
  """Baselines: mel windows [B, L, 20, 80] -> poses [B, N, L, 6] (normalised)."""
  b, length = mel.shape[:2]
  v = {"params": params}
  if not model.noise_dim:  # one-to-one: every sample is the same prediction
    pred = model.apply(v, mel, None, source)  # [B, L, 6]
    return jnp.broadcast_to(pred[:, None], (b, num_samples) + pred.shape[1:])
  noise = pose_baselines.make_noise(rng, b * num_samples, length, model.noise_dim,
                                    noise_per_frame)
  rep = lambda x: None if x is None else jnp.repeat(x, num_samples, axis=0)
  pred = model.apply(v, rep(mel), noise, rep(source))  # [B*N, L, 6]
  return pred.reshape((b, num_samples) + pred.shape[1:])


def _sample_fn(spec, params, sigma):
  """(mel, source, rng, diversity, num_samples) -> poses [B, N, L, 6] of ``spec``'s model."""
  c = spec.cfg
  if c.model == "osmnet":
    return lambda mel, source, rng, diversity, num_samples: sample_osmnet(
        spec.model, params, sigma, mel, source, rng, num_samples, diversity, c.sample_width,
        c.overlap, c.per_clip_noise)
  # The baselines have no diversity knob.
  return lambda mel, source, rng, diversity, num_samples: sample_regressor(
      spec.model, params, mel, source, rng, num_samples, c.noise_per_frame)


def check(motion) -> None:
  """Traces one sample of ``motion`` (workdir.Motion) on zeros without computing it: raises
  (flax) when its params do not fit the model its config builds."""
  c = motion.cfg
  mel = jax.ShapeDtypeStruct((1, c.num_frames, 20, 80), jnp.float32)
  src = (jax.ShapeDtypeStruct((1, c.image_size, c.image_size, 3), jnp.uint8)
         if motion.uses_source else None)
  sigma = np.ones(c.num_bases, np.float32) if c.model == "osmnet" else None
  fn = _sample_fn(motion, motion.params, sigma)
  jax.eval_shape(lambda m, s: fn(m, s, jax.random.PRNGKey(0), 1.0, 1), mel, src)


def make_sampler(spec, params, stats: dict | None = None):
  """A jitted ``sample(mel, source, rng, num_samples, diversity=None, static_head=False)``.

  ``spec``: anything with the motion config ``cfg``, its linen ``model`` and ``uses_source``
  (workdir.Motion, or the training stage); ``stats``: the checkpoint's sigma.json (OSM-Net
  needs ``stats['sigma']``). Returns poses [B, N, L, 6], normalised.
  """
  c = spec.cfg
  sigma = None
  if c.model == "osmnet":
    if not stats or "sigma" not in stats:
      raise ValueError("OSM-Net sampling needs the residual spread sigma (sigma.json)")
    sigma = np.asarray(stats["sigma"], np.float32)
  fn = jax.jit(_sample_fn(spec, params, sigma), static_argnames=("num_samples",))

  def sample(mel, source=None, rng=None, num_samples: int = 1, diversity=None,
             static_head: bool = False):
    mel = jnp.asarray(mel, jnp.float32)
    if static_head:  # the neutral pose: the dataset mean = zeros in normalised units
      return jnp.zeros(mel.shape[:1] + (num_samples, mel.shape[1], 6), jnp.float32)
    if not spec.uses_source:
      source = None
    rng = jax.random.PRNGKey(0) if rng is None else rng
    r = c.diversity if diversity is None else diversity
    return fn(mel, source, rng, jnp.float32(r), num_samples=num_samples)

  return sample
