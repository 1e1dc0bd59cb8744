"""FOMM keypoint detector (`KPDetector`), channels-last.

image [B,H,W,C] -> anti-aliased downsample by `scale_factor` -> Hourglass -> 7x7 conv (padding
`pad`, 0 in vox-256, so the heatmap is 6 px smaller than the features) -> softmax over space with
temperature -> keypoints = expectation of a [-1,1] grid; Jacobians = heatmap-weighted average of a
second 7x7 head initialised to the identity (zero weights, bias [1,0,0,1]).

Mixed precision (`dtype=jnp.bfloat16`): the hourglass computes in bf16; the two heads, the
softmax and the expectation stay float32. The logits are divided by the temperature 0.1 before
the softmax, so a bf16 logit (relative error 2^-9) would shift the heatmap weights by several
percent and the keypoints with them; the heads are 7x7 convs to K / 4K channels, cheap next to
the hourglass.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from osmnet_jax.nn import keypoints as kp_lib
from osmnet_jax.nn.blocks import AntiAliasInterpolation2d, Hourglass, conv


def _identity_bias(num_maps: int):
  def init(key, shape, dtype=jnp.float32):
    del key
    return jnp.tile(jnp.array([1.0, 0.0, 0.0, 1.0], dtype), num_maps).reshape(shape)

  return init


class KPDetector(nn.Module):
  """Submodules: 'predictor' (Hourglass), 'kp', 'jacobian' (as FOMM's attributes)."""

  block_expansion: int = 32
  num_kp: int = 10
  max_features: int = 1024
  num_blocks: int = 5
  temperature: float = 0.1
  estimate_jacobian: bool = True
  scale_factor: float = 0.25
  single_jacobian_map: bool = False
  pad: int = 0
  train: bool = False
  bn_axis_name: Any = None
  dtype: Any = None  # hourglass compute dtype (None: float32)
  remat: bool = False  # nn.remat on the hourglass blocks

  @nn.compact
  def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
    """x: [B,H,W,C] in [0,1] -> {'value': [B,K,2], 'jacobian': [B,K,2,2]}."""
    if self.scale_factor != 1:
      x = AntiAliasInterpolation2d(self.scale_factor, name="down")(x)
    feature_map = Hourglass(
        self.block_expansion,
        self.num_blocks,
        self.max_features,
        self.train,
        self.bn_axis_name,
        self.dtype,
        self.remat,
        name="predictor",
    )(x)
    # Heads without a dtype: a bf16 feature map is promoted to the float32 params (float32 out).
    prediction = conv(self.num_kp, 7, self.pad, "kp")(feature_map)  # [B,h,w,K]
    heatmap = kp_lib.spatial_softmax(prediction, self.temperature)
    out = {"value": kp_lib.heatmap_expectation(heatmap)}  # [B,K,2]

    if self.estimate_jacobian:
      num_maps = 1 if self.single_jacobian_map else self.num_kp
      jac_map = nn.Conv(
          4 * num_maps,
          (7, 7),
          padding=((self.pad, self.pad), (self.pad, self.pad)),
          kernel_init=nn.initializers.zeros,
          bias_init=_identity_bias(num_maps),
          name="jacobian",
      )(feature_map)  # [B,h,w,4*maps]; torch channel 4 k + j -> (k, j)
      b, h, w, _ = jac_map.shape
      jac_map = jac_map.reshape(b, h, w, num_maps, 4)
      # heatmap [B,h,w,K,1] * jac_map [B,h,w,maps,4] (maps broadcasts when single) -> sum space.
      jac = jnp.sum(heatmap[..., None] * jac_map, axis=(1, 2))  # [B,K,4]
      out["jacobian"] = jac.reshape(b, self.num_kp, 2, 2)  # row-major like torch .view(2, 2)
    return out
