"""BatchNorm with PyTorch `nn.BatchNorm2d` semantics, channels-last.

Differences from `flax.linen.BatchNorm` that matter for checkpoint/training parity with FOMM:
  * eps 1e-5 as torch; momentum is expressed the Flax way: `momentum=0.9` here == torch
    `momentum=0.1` (ra <- 0.9 ra + 0.1 batch).
  * the running variance is updated with the *unbiased* batch variance (n / (n - 1)) as torch does,
    while the batch itself is normalised with the biased variance.
  * the variance is computed two-pass (mean of squared deviations) rather than E[x^2] - E[x]^2.
FOMM's BatchNorm2d is affine=True: a learned `scale` (torch `weight`) and `bias`.

Under `jax.pmap` / `shard_map` pass `axis_name` so batch statistics are averaged over devices
(`lax.pmean`); under `jax.jit` with a sharded batch the statistics are global already.

Mixed precision: with bf16 inputs the batch mean/variance, the running statistics and the
normalisation itself are float32 (a bf16 mean of a large spatial batch loses most of its digits,
and the running averages accumulate it over steps); only the output is cast back to bf16.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class BatchNorm(nn.Module):
  """BatchNorm over all axes but the last; variables 'scale', 'bias', 'mean', 'var'."""

  use_running_average: bool = True
  momentum: float = 0.9
  epsilon: float = 1e-5
  axis_name: Any = None
  packed: int = 0  # > 0: x is width-packed by this factor (see the module docstring)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    f = max(self.packed, 1)
    if x.shape[-1] % f:
      raise ValueError(f"BatchNorm packed={f}: {x.shape[-1]} channels is not a multiple")
    c = x.shape[-1] // f

    def fold(v):  # [f*C] per-lane means -> [C] per-channel means (each lane has n/f elements)
      return v if f == 1 else v.reshape(f, c).mean(axis=0)

    def tile(v):  # [C] -> [f*C], lane r*C + c reads channel c
      return v if f == 1 else jnp.tile(v, f)

    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))

    # ONE cast to (at least) float32, used by the statistics and the normalisation: its
    # transpose then adds the two backward paths (through x - mean and through mean/var, which
    # nearly cancel) in float32 before rounding the sum to bf16 once. Two casts would round each
    # path to bf16 first and lose the difference (a gradient error an order of magnitude larger;
    # tests/test_mixed_precision.py).
    # A no-op for float32/float64 inputs (cdt == x.dtype), so that path is unchanged.
    cdt = jnp.promote_types(x.dtype, jnp.float32)  # bf16 -> f32; f64 stays f64
    xf = x.astype(cdt)
    if self.use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      reduce_axes = tuple(range(x.ndim - 1))
      mean = fold(jnp.mean(xf, axis=reduce_axes))
      n = x.size // c
      if self.axis_name is not None and not self.is_initializing():
        mean = jax.lax.pmean(mean, self.axis_name)
        n = n * jax.lax.psum(1, self.axis_name)
      var = fold(jnp.mean(jnp.square(xf - tile(mean)), axis=reduce_axes))
      if self.axis_name is not None and not self.is_initializing():
        var = jax.lax.pmean(var, self.axis_name)
      if not self.is_initializing():
        unbiased = var * (n / jnp.maximum(n - 1, 1))
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * unbiased

    inv = jax.lax.rsqrt(var + self.epsilon) * scale
    # Normalise in float32 too and return the input dtype: with bf16 activations x - mean
    # would cancel catastrophically in bf16 (8-bit mantissa) whenever |mean| >> std.
    y = (xf - tile(mean).astype(cdt)) * tile(inv).astype(cdt) + tile(bias).astype(cdt)
    return y.astype(x.dtype)
