"""Head-pose baselines in the OSM-Net framework (same audio features, same data, same units).

* ``audio2pose_lstm`` [ancestor: Audio2Head's audio2pose]: a one-to-one regressor, per-frame
  audio features -> LSTM -> pose per frame, trained with L1 (or L2) against the clip's pose. It
  can only learn E[pose | audio]: for one audio every run gives the same motion (diversity ~0).
* ``noise_sampler`` [ancestor: FONT-style]: the same regressor with random noise concatenated to
  the audio features (one noise vector per clip, broadcast over frames, or fresh per frame).
  Trained by plain regression it learns to ignore the noise, which is the failure mode OSM-Net's
  motion space is meant to avoid; it is here to measure that.

Both run on sequences of any length (the LSTM scans over time), so long audio needs no clip
blending. Poses are in normalised units, like ``motion_space``. The sizes and the noise layout
are [ours].
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from osmnet_jax.models.audio_encoder import AudioEncoder
from osmnet_jax.models.motion_space import POSE_DIM, ImageIdentityEncoder

MODELS = ("audio2pose_lstm", "noise_sampler")


class PoseRegressor(nn.Module):
  """mel windows [B, T, 20, 80] (+ noise [B, noise_dim] or [B, T, noise_dim]) -> pose [B, T, 6].

  Attributes:
    audio_dim, audio_channels: the ``AudioEncoder``'s feature size and conv widths.
    hidden: LSTM width.
    layers: stacked LSTM layers.
    noise_dim: 0 for ``audio2pose_lstm``; > 0 for ``noise_sampler``.
    identity: "none" or "image" (source image feature concatenated per frame) [ours].
  """

  audio_dim: int = 64
  audio_channels: Sequence[int] = (16, 32, 64)
  hidden: int = 64
  layers: int = 2
  noise_dim: int = 0
  identity: str = "none"

  @nn.compact
  def __call__(self, mel, noise=None, source=None, train: bool = False):
    b, t = mel.shape[:2]
    x = AudioEncoder(self.audio_dim, self.audio_channels)(mel, train)  # [B,T,A]
    parts = [x]
    if self.noise_dim:
      if noise is None:
        raise ValueError("noise_sampler needs noise [B, noise_dim] or [B, T, noise_dim]")
      if noise.ndim == 2:
        noise = jnp.broadcast_to(noise[:, None, :], (b, t, self.noise_dim))
      parts.append(noise)
    if self.identity == "image":
      # Explicit name: the param scope of the checkpoints this module writes.
      ident = ImageIdentityEncoder(name="IdentityEncoder_0")(source)  # [B,F]
      parts.append(jnp.broadcast_to(ident[:, None, :], (b, t, ident.shape[-1])))
    x = nn.Dense(self.hidden)(jnp.concatenate(parts, axis=-1))
    for _ in range(self.layers):
      x = nn.RNN(nn.OptimizedLSTMCell(self.hidden))(x)  # scan over time: [B,T,H]
    return nn.Dense(POSE_DIM)(x)


def make_noise(rng: jax.Array, batch: int, frames: int, noise_dim: int,
               per_frame: bool) -> jnp.ndarray:
  """Standard normal noise: [batch, noise_dim] (per clip) or [batch, frames, noise_dim]."""
  shape = (batch, frames, noise_dim) if per_frame else (batch, noise_dim)
  return jax.random.normal(rng, shape, jnp.float32)
