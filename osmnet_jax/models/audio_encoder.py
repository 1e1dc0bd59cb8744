"""AudioEncoder: one per-frame 20x80 log-mel window -> content feature (OSM-Net stage B).

[paper] OSM-Net feeds each video frame's audio as a time window of mel features (audio.py:
+-2 frames = 20 mel frames x 80 bins). [ours] The conv stack: the window is an image
[N, 20, 80, 1] (time x frequency, NHWC); strided 3x3 convs halve both axes per stage, a
LayerNorm keeps activations in range without batch statistics (no batch_stats: the motion and
expression stages stay pure params + optimizer, and jit/pmap give identical updates), then the
feature map is mean-pooled over time and flattened over frequency into a Dense projection.

Shared by the motion models (this file's only users today) and the expression half, so the
interface is deliberately small:

    enc = AudioEncoder(features=64)
    feats = enc(mel_windows, train)      # [N, 20, 80] -> [N, 64]
    feats = enc(mel_windows_btf, train)  # [B, T, 20, 80] -> [B, T, 64] (T folded into N)
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from osmnet_jax.nn.layer_norm import LayerNorm

# [ours] Fixed input normalisation of natural-log mel power (audio.log_mel floors at log(1e-5)
# = -11.5). Measured on synth_talk/64px train windows: mean -7.3, std 4.4; speech datasets are
# in the same range. A fixed affine keeps the encoder free of data-dependent state.
MEL_MEAN = -7.0
MEL_STD = 4.5


class AudioEncoder(nn.Module):
  """Per-frame mel window -> content feature.

  Attributes:
    features: output feature size D.
    channels: conv widths, one stride-2 stage each ([ours]).
    mel_mean, mel_std: fixed input normalisation ([ours]).
    dtype: compute dtype of the convs, the dense layer and the activations (None: float32,
      as the params); bfloat16 for accelerators. LayerNorm statistics stay float32.
  """

  features: int = 64
  channels: Sequence[int] = (16, 32, 64)
  mel_mean: float = MEL_MEAN
  mel_std: float = MEL_STD
  dtype: Any = None

  @nn.compact
  def __call__(self, mel: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    del train  # no dropout / batch norm: same function in training and inference
    lead = mel.shape[:-2]  # [N] or [B, T]
    x = mel.reshape((-1,) + mel.shape[-2:])  # [N, 20, 80]
    x = ((x - self.mel_mean) / self.mel_std)[..., None]  # [N, 20, 80, 1]
    # LayerNorm: nn.LayerNorm's params and values, hand-written VJP (nn/layer_norm.py: the
    # autodiff of flax's over 8-32 channels at N = B*T windows was a large share of the motion
    # step; BENCHMARKS.md "Stage B").
    for c in self.channels:
      x = nn.Conv(c, (3, 3), strides=(2, 2), padding="SAME", dtype=self.dtype)(x)  # halves T, F
      x = LayerNorm(dtype=self.dtype)(x)
      x = nn.gelu(x)
    # [N, 3, 10, C] for the default 3 stages: pool time (rhythm is already local to the
    # window), keep the coarse frequency layout (formants distinguish sounds).
    x = x.mean(axis=1).reshape(x.shape[0], -1)  # [N, 10 * C]
    x = nn.Dense(self.features, dtype=self.dtype)(x)
    x = LayerNorm(dtype=self.dtype)(x)
    return x.reshape(lead + (self.features,))
