"""FOMM's multi-scale perceptual loss.

An image pyramid (scales 1, 1/2, 1/4, 1/8, each level FOMM's anti-aliased downsample of the full
image, not of the previous level) of the prediction and of the driving frame goes through a frozen
VGG; the loss is sum over scales and layers of weight_l * mean |phi_l(pred) - phi_l(real)|
(weight 10 per layer in vox-256), with no gradient through the real branch.
"""

from typing import Sequence

import jax
import jax.numpy as jnp

from osmnet_jax.losses import vgg as vgg_lib
from osmnet_jax.nn.blocks import AntiAliasInterpolation2d


def pyramid_key(scale: float) -> str:
  """FOMM's pyramid dict key 'prediction_<scale>' (str of the config value: 1, 0.5, ...)."""
  return f"prediction_{scale}"


def image_pyramid(x: jax.Array, scales: Sequence[float]) -> dict[str, jax.Array]:
  """{'prediction_<s>': [B, ceil(H s), ceil(W s), C]} via AntiAliasInterpolation2d(s)."""
  return {pyramid_key(s): AntiAliasInterpolation2d(float(s)).apply({}, x) for s in scales}


def make_backbone(kind: str, num_outputs: int, vgg19_path: str = ""):
  """(VGG module, frozen params) for kind 'lpips_vgg16' (shipped weights) or 'vgg19' (path)."""
  module = vgg_lib.VGG(kind=kind, num_outputs=num_outputs)
  if kind == "lpips_vgg16":
    params = vgg_lib.lpips_vgg16_params()
  elif kind == "vgg19":
    if not vgg19_path:
      raise ValueError("perceptual backbone 'vgg19' needs a torchvision VGG19 state dict path")
    params = vgg_lib.load_vgg19_torch(vgg19_path)
  else:
    raise ValueError(f"unknown perceptual backbone {kind!r}")
  # Keep only the convs this many outputs use (smaller state, no unused leaves).
  needed = vgg_lib.FEATURE_CONVS[kind][num_outputs - 1] + 1
  params = {f"conv{j}": params[f"conv{j}"] for j in range(needed)}
  return module, {"params": params}


def _f32(x: jax.Array) -> jax.Array:
  """x in float32; float32 x untouched (not even a same-dtype convert in the trace)."""
  return x if x.dtype == jnp.float32 else x.astype(jnp.float32)


def perceptual_loss(
    module: vgg_lib.VGG,
    variables: dict,
    prediction: jax.Array,
    target: jax.Array,
    scales: Sequence[float],
    weights: Sequence[float],
) -> jax.Array:
  """Scalar loss; prediction/target [B,H,W,3] in [0,1]. Weights: one per VGG output."""
  pyr_pred = image_pyramid(prediction, scales)
  pyr_real = image_pyramid(target, scales)
  variables = jax.lax.stop_gradient(variables)
  total = jnp.zeros((), jnp.float32)
  # Two VGG calls, not one on the concatenation [prediction; target]: the two chains are
  # independent, and XLA:CPU runs independent ops concurrently on separate cores (its conv and
  # matmul kernels use ~1 core each here). Concatenating made the renderer step slower
  # (BENCHMARKS.md).
  # The L1 mean below does not depend on the pixel order: features may stay width-packed (TPU).
  module = module.clone(any_pixel_order=True)
  for s in scales:
    fx = module.apply(variables, pyr_pred[pyramid_key(s)])
    fy = module.apply(variables, pyr_real[pyramid_key(s)])
    for w, a, b in zip(weights, fx, fy):
      # bf16 features (a bf16 backbone) are differenced and averaged in float32.
      total = total + w * jnp.mean(jnp.abs(_f32(a) - jax.lax.stop_gradient(_f32(b))))
  return total
