"""FOMM multi-scale patch discriminator (optional; off in the vox-256 recipe), channels-last.

Per scale: DownBlock2d x num_blocks (4x4 conv, padding 0 -> InstanceNorm (affine, not on the first
block) -> LeakyReLU 0.2 -> 2x2 avg pool except on the last block) -> 1x1 conv to a patch score map.
Spectral norm (`sn=True`) follows `torch.nn.utils.spectral_norm`: weight [O, I*kh*kw] (torch
flattening order), one power iteration per training call, stored u [O] and v [I*kh*kw]
(torch `weight_u`, `weight_v`; the raw weight is torch's `weight_orig`).
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from osmnet_jax.nn import keypoints as kp_lib
from osmnet_jax.nn.blocks import torch_conv_init


def _l2n(x, eps=1e-12):
  return x / jnp.maximum(jnp.linalg.norm(x), eps)


class SNConv(nn.Module):
  """Conv with padding 0 and optional spectral normalisation ('kernel', 'bias', 'u', 'v')."""

  features: int
  kernel_size: int
  sn: bool = False
  train: bool = False

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    cin = x.shape[-1]
    kernel = self.param("kernel", torch_conv_init, (k, k, cin, self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    if self.sn:
      w_mat = jnp.transpose(kernel, (3, 2, 0, 1)).reshape(self.features, -1)  # torch order
      u = self.variable(
          "batch_stats", "u",
          lambda: _l2n(jax.random.normal(self.make_rng("params"), (self.features,)))
      )
      v = self.variable(
          "batch_stats", "v",
          lambda: _l2n(jax.random.normal(self.make_rng("params"), (w_mat.shape[1],)))
      )
      uu, vv = u.value, v.value
      if self.train and not self.is_initializing():
        wm = jax.lax.stop_gradient(w_mat)
        vv = _l2n(wm.T @ uu)
        uu = _l2n(wm @ vv)
        u.value, v.value = uu, vv
      sigma = jnp.dot(uu, w_mat @ vv)
      kernel = kernel / sigma
    y = jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return y + bias


class InstanceNorm(nn.Module):
  """`nn.InstanceNorm2d(affine=True)`: per-sample, per-channel, eps 1e-5, no running stats."""

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    mean = jnp.mean(x, axis=(1, 2), keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=(1, 2), keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias


class DiscDownBlock2d(nn.Module):
  features: int
  norm: bool = False
  pool: bool = False
  sn: bool = False
  train: bool = False

  @nn.compact
  def __call__(self, x):
    out = SNConv(self.features, 4, self.sn, self.train, name="conv")(x)
    if self.norm:
      out = InstanceNorm(name="norm")(out)
    out = nn.leaky_relu(out, 0.2)
    if self.pool:
      out = nn.avg_pool(out, (2, 2), strides=(2, 2), padding="VALID")
    return out


class Discriminator(nn.Module):
  """Patch discriminator: returns (feature_maps list, prediction_map [B,h,w,1])."""

  block_expansion: int = 64
  num_blocks: int = 4
  max_features: int = 512
  sn: bool = False
  use_kp: bool = False
  kp_variance: float = 0.01
  train: bool = False

  @nn.compact
  def __call__(self, x, kp_value=None):
    out = x
    if self.use_kp:
      out = jnp.concatenate(
          [out, kp_lib.kp2gaussian(kp_value, x.shape[1], x.shape[2], self.kp_variance)], -1
      )
    feature_maps = []
    for i in range(self.num_blocks):
      f = min(self.max_features, self.block_expansion * (2 ** (i + 1)))
      out = DiscDownBlock2d(
          f, norm=i != 0, pool=i != self.num_blocks - 1, sn=self.sn, train=self.train,
          name=f"down_blocks_{i}",
      )(out)
      feature_maps.append(out)
    prediction = SNConv(1, 1, self.sn, self.train, name="conv")(out)
    return feature_maps, prediction


def scale_key(scale: float) -> str:
  """FOMM's ModuleDict key for a scale: str(scale) with '.' -> '-' (e.g. 1 -> '1', 0.5 -> '0-5')."""
  return str(scale).replace(".", "-")


class MultiScaleDiscriminator(nn.Module):
  """One Discriminator per pyramid scale, named 'discs_<scale key>' (torch `discs.<key>`)."""

  scales: Sequence[float] = (1,)
  disc_params: Any = None
  train: bool = False

  @nn.compact
  def __call__(self, pyramid: dict[str, jax.Array], kp_value=None) -> dict[str, Any]:
    """pyramid: {'prediction_<scale>': [B,h,w,C]} -> feature_maps_* and prediction_map_*."""
    out = {}
    for s in self.scales:
      d = Discriminator(**dict(self.disc_params or {}), train=self.train,
                        name=f"discs_{scale_key(s)}")
      key = f"prediction_{s}"
      fmaps, pred = d(pyramid[key], kp_value)
      out["feature_maps_" + key] = fmaps
      out["prediction_map_" + key] = pred
    return out
