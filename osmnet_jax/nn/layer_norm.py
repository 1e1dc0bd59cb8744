"""LayerNorm over the last axis with a hand-written VJP; parameters of ``flax.linen.LayerNorm``.

Why: in the motion stage's train step the audio encoder normalises [B*T, 10, 40, 8] activations
over 8 channels. Autodiff of flax's LayerNorm leaves XLA:CPU a chain of small-axis reductions
and broadcasts (a large share of the step, BENCHMARKS.md "Stage B"); the closed-form backward

    xhat = (x - mean) * rstd,   g = dy * scale
    dx = rstd * (g - mean(g) - xhat * mean(g * xhat))      (means over the last axis)
    dscale = sum(dy * xhat),    dbias = sum(dy)             (sums over all leading axes)

needs two reductions and reuses ``xhat`` and ``rstd`` from the forward (A/B timing on that
shape: BENCHMARKS.md "Stage B").

Drop-in: same parameter names, shapes and initialisers as ``nn.LayerNorm()`` (``scale`` ones,
``bias`` zeros, epsilon 1e-6), so checkpoints and the PyTorch converters do not change; Flax's
auto-naming gives the same ``LayerNorm_<i>`` scopes because the class has the same name. Values
differ from flax's at float rounding only: the variance here is two-pass (mean of squared
deviations, as torch computes it), flax's default is E[x^2] - E[x]^2. Statistics are computed
in at least float32 (bf16 inputs); the output dtype is flax's (promote(x, params)). Reverse mode
only (``jax.custom_vjp``): forward-mode derivatives (jvp, jacfwd) through it raise.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def _normalise(x, epsilon):
  """-> (xhat, rstd) in at least float32; statistics over the last axis (two-pass)."""
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  xc = x - x.mean(-1, keepdims=True)
  rstd = jax.lax.rsqrt((xc * xc).mean(-1, keepdims=True) + epsilon)
  return xc * rstd, rstd


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float = 1e-6
               ) -> jax.Array:
  """x [..., C], scale [C], bias [C] -> [..., C] in promote(x, scale) (as flax: bf16 x with
  float32 params gives float32)."""
  xhat, _ = _normalise(x, epsilon)
  return xhat * scale + bias


def _fwd(x, scale, bias, epsilon):
  xhat, rstd = _normalise(x, epsilon)
  # A 0-d array carries x's dtype to the backward pass (residuals must be arrays).
  return xhat * scale + bias, (xhat, rstd, scale, jnp.zeros((), x.dtype))


def _bwd(epsilon, res, dy):
  del epsilon
  xhat, rstd, scale, x_like = res
  dy = dy.astype(xhat.dtype)
  g = dy * scale
  dx = rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
  lead = tuple(range(dy.ndim - 1))
  return (dx.astype(x_like.dtype), (dy * xhat).sum(lead).astype(scale.dtype),
          dy.sum(lead).astype(scale.dtype))


layer_norm.defvjp(_fwd, _bwd)


class LayerNorm(nn.Module):
  """``nn.LayerNorm()`` (last axis, scale and bias, epsilon 1e-6) with ``layer_norm``'s VJP.

  ``dtype``: the output dtype (flax's meaning); None gives promote(x, params), i.e. float32 for
  float32 params. Statistics are float32 either way."""

  epsilon: float = 1e-6
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    y = layer_norm(x, scale, bias, self.epsilon)
    return y if self.dtype is None else y.astype(self.dtype)
