"""FOMM's LSGAN and feature-matching losses over a multi-scale discriminator's outputs.

`disc_out` dicts come from `MultiScaleDiscriminator`: 'prediction_map_prediction_<s>' [B,h,w,1]
and 'feature_maps_prediction_<s>' (list of [B,h,w,C]).
"""

from typing import Sequence

import jax
import jax.numpy as jnp


def generator_gan_loss(disc_fake: dict, scales: Sequence[float], weight: float) -> jax.Array:
  """sum_s weight * mean (1 - D(fake))^2."""
  total = jnp.zeros((), jnp.float32)
  for s in scales:
    total = total + weight * jnp.mean((1.0 - disc_fake[f"prediction_map_prediction_{s}"]) ** 2)
  return total


def feature_matching_loss(
    disc_real: dict, disc_fake: dict, scales: Sequence[float], weights: Sequence[float]
) -> jax.Array:
  """sum_s sum_l w_l * mean |F_l(real) - F_l(fake)| (real branch is a constant target)."""
  total = jnp.zeros((), jnp.float32)
  for s in scales:
    key = f"feature_maps_prediction_{s}"
    for w, a, b in zip(weights, disc_real[key], disc_fake[key]):
      total = total + w * jnp.mean(jnp.abs(jax.lax.stop_gradient(a) - b))
  return total


def discriminator_loss(disc_real: dict, disc_fake: dict, scales: Sequence[float], weight: float):
  """sum_s weight * mean[(1 - D(real))^2 + D(fake)^2]."""
  total = jnp.zeros((), jnp.float32)
  for s in scales:
    key = f"prediction_map_prediction_{s}"
    total = total + weight * jnp.mean((1.0 - disc_real[key]) ** 2 + disc_fake[key] ** 2)
  return total
