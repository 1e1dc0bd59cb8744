"""BatchNorm with PyTorch `nn.BatchNorm2d` semantics, channels-last.

Differences from `flax.linen.BatchNorm` that matter for checkpoint/training parity with FOMM:
  * eps 1e-5 as torch; momentum is expressed the Flax way: `momentum=0.9` here == torch
    `momentum=0.1` (ra <- 0.9 ra + 0.1 batch).
  * the running variance is updated with the *unbiased* batch variance (n / (n - 1)) as torch does,
    while the batch itself is normalised with the biased variance.
  * the variance is computed two-pass (mean of squared deviations) rather than E[x^2] - E[x]^2;
    on accelerator targets in one pass around the running mean (`_shifted_stats`).
FOMM's BatchNorm2d is affine=True: a learned `scale` (torch `weight`) and `bias`.

Under `jax.pmap` / `shard_map` pass `axis_name` so batch statistics are averaged over devices
(`lax.pmean`); under `jax.jit` with a sharded batch the statistics are global already.

Mixed precision: with bf16 inputs the batch mean/variance, the running statistics and the
normalisation itself are float32 (a bf16 mean of a large spatial batch loses most of its digits,
and the running averages accumulate it over steps); only the output is cast back to bf16.

Gradient: on accelerator targets (`nn/conv.traced_backend()` != 'cpu') the train-mode gradient
is the closed form, a custom VJP: dx = scale/sigma * (dy - mean(dy) - x_hat * mean(dy * x_hat)),
d_bias = sum(dy), d_scale = sum(dy * x_hat): two sums that XLA fuses into one pass over dy and x,
where autodiff of the two-pass statistics reduces the map more often (measured on v5e:
BENCHMARKS.md "BatchNorm's closed-form gradient on accelerators"). The CPU keeps autodiff, so
the CPU programs (and the FOMM parity tests) are unchanged; `closed_form_grad=True` forces it
anywhere (tests/test_batch_norm_vjp.py).

`relu_pool=True` (DownBlock2d's tail): the module returns avg_pool2x(relu(norm(x))) (packed:
nn/pool.avg_pool2x_packed). On the closed-form path this is one custom VJP whose forward
normalises, rectifies and averages the four sub-pixel maps of x (nn/pool.subpixels) in a single
pass, where the composed ops wrote the full-resolution ReLU output and read it back to pool it
(the TPU compiler does not fuse a producer into four strided slices of it). Its backward is the
same as the composed ops': the pool's transpose, the ReLU mask (recomputed from x), the closed
form. Measured: BENCHMARKS.md "BatchNorm, ReLU and pooling in one pass".
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from osmnet_jax.nn import conv as conv_lib
from osmnet_jax.nn import pool as pool_lib


def closed_form_default() -> bool:
  """Whether train-mode BatchNorm takes the closed-form gradient by default: on accelerator
  targets (the traced platform is not the CPU)."""
  return conv_lib.traced_backend() != "cpu"


class BatchNorm(nn.Module):
  """BatchNorm over all axes but the last; variables 'scale', 'bias', 'mean', 'var'."""

  use_running_average: bool = True
  momentum: float = 0.9
  epsilon: float = 1e-5
  axis_name: Any = None
  packed: int = 0  # > 0: x is width-packed by this factor (see the module docstring)
  closed_form_grad: bool | None = None  # None: on accelerator targets only (module docstring)
  relu_pool: bool = False  # return pool(relu(norm(x))), 2x2 average (module docstring)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    f = max(self.packed, 1)
    if x.shape[-1] % f:
      raise ValueError(f"BatchNorm packed={f}: {x.shape[-1]} channels is not a multiple")
    c = x.shape[-1] // f

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
    closed = self.closed_form_grad
    if closed is None:
      closed = closed_form_default()
    training = not self.use_running_average and not self.is_initializing()
    if training and closed:
      shift = jax.lax.stop_gradient(ra_mean.value)
      if self.relu_pool:
        y, mean, var = _train_norm_relu_pool(x, scale, bias, shift, f, self.axis_name,
                                             self.epsilon)
      else:
        y, mean, var = _train_norm(x, scale, bias, shift, f, self.axis_name, self.epsilon)
    else:
      if self.use_running_average:
        xf, mean, var = x.astype(cdt), ra_mean.value, ra_var.value
      else:  # autodiff of the statistics (init: no axis to average over yet)
        xf, mean, var = _stats(x, f, self.axis_name if training else None)
      y = _normalize(xf, mean, var, scale, bias, f, self.epsilon, x.dtype)
      if self.relu_pool:
        y = pool_lib.pool(nn.relu(y), f)
    if training:  # running averages with the unbiased batch variance, as torch
      n = x.size // c
      if self.axis_name is not None:
        n = n * jax.lax.psum(1, self.axis_name)
      unbiased = var * (n / jnp.maximum(n - 1, 1))
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * unbiased
    return y


# ------------------------------------------------------------------------------------------------
# Statistics and normalisation (both paths), and the closed-form gradient (accelerator targets).
def _fold(v, f: int, c: int, op):  # each lane holds n/f of a channel's elements
  """[f*C] per-lane values of a width-packed map -> [C] per channel (`op`: jnp.mean / jnp.sum)."""
  return v if f == 1 else op(v.reshape(f, c), axis=0)


def _tile(v, f: int):
  """[C] -> [f*C]: lane r*C + c reads channel c."""
  return v if f == 1 else jnp.tile(v, f)


def _stats(x, f: int, axis_name):
  """Two-pass float32 batch statistics of x [..., f*C] -> (xf, mean [C], biased var [C]); xf is
  the one cast of x that both the statistics and the normalisation read (module comment)."""
  c = x.shape[-1] // f
  axes = tuple(range(x.ndim - 1))
  xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  mean = _fold(jnp.mean(xf, axis=axes), f, c, jnp.mean)
  if axis_name is not None:
    mean = jax.lax.pmean(mean, axis_name)
  var = _fold(jnp.mean(jnp.square(xf - _tile(mean, f)), axis=axes), f, c, jnp.mean)
  if axis_name is not None:
    var = jax.lax.pmean(var, axis_name)
  return xf, mean, var


def _normalize(xf, mean, var, scale, bias, f: int, eps: float, dtype):
  """(xf - mean) / sigma * scale + bias in xf's (>= float32) dtype, returned in `dtype`: with
  bf16 activations x - mean would cancel catastrophically in bf16 (8-bit mantissa) whenever
  |mean| >> std."""
  cdt = xf.dtype
  inv = jax.lax.rsqrt(var + eps) * scale
  y = (xf - _tile(mean, f).astype(cdt)) * _tile(inv, f).astype(cdt) + _tile(bias, f).astype(cdt)
  return y.astype(dtype)


def _shifted_stats(x, shift, f: int, axis_name):
  """One-pass float32 batch statistics of x [..., f*C] around `shift` [C]: (xf, mean, biased
  var). sum(x - s) and sum((x - s)^2) come out of one fused reduction over the map, where the
  two-pass `_stats` reads it twice. The shift is the running mean, which tracks the batch mean,
  so E[(x-s)^2] - E[x-s]^2 does not cancel as the unshifted E[x^2] - E[x]^2 would when
  |mean| >> std (at the first steps the shift is 0 and the statistics are those of a freshly
  initialised conv, mean ~ std)."""
  c = x.shape[-1] // f
  axes = tuple(range(x.ndim - 1))
  xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  d = xf - _tile(shift, f).astype(xf.dtype)
  m1 = _fold(jnp.mean(d, axis=axes), f, c, jnp.mean)
  m2 = _fold(jnp.mean(jnp.square(d), axis=axes), f, c, jnp.mean)
  if axis_name is not None:
    m1, m2 = jax.lax.pmean((m1, m2), axis_name)
  return xf, shift + m1, jnp.maximum(m2 - jnp.square(m1), 0.0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _train_norm(x, scale, bias, shift, f: int, axis_name, eps: float):
  """(y in x.dtype, batch mean [C], biased batch var [C]); the module's forward, with the
  statistics taken in one pass around `shift` (`_shifted_stats`). Only y carries a gradient:
  mean/var feed the running averages, which are not differentiated (their cotangents are
  ignored), and the statistics do not depend on the shift in exact arithmetic."""
  return _train_norm_fwd(x, scale, bias, shift, f, axis_name, eps)[0]


def _train_norm_fwd(x, scale, bias, shift, f, axis_name, eps):
  xf, mean, var = _shifted_stats(x, shift, f, axis_name)
  y = _normalize(xf, mean, var, scale, bias, f, eps, x.dtype)
  return (y, mean, var), (x, mean, jax.lax.rsqrt(var + eps), scale, shift)


def _train_norm_bwd(f, axis_name, eps, res, cts):
  del eps
  x, mean, inv, scale, shift = res
  dy = cts[0]
  c = x.shape[-1] // f
  axes = tuple(range(x.ndim - 1))
  cdt = jnp.promote_types(x.dtype, jnp.float32)
  dyf = dy.astype(cdt)
  xhat = (x.astype(cdt) - _tile(mean, f).astype(cdt)) * _tile(inv, f).astype(cdt)
  # One pass over dy and x for both sums (XLA fuses the two reductions). These local sums are
  # this device's d_bias and d_scale (the train step averages gradients over devices); dx needs
  # the batch's, as the statistics are the batch's (psum over `axis_name`).
  d_bias = _fold(jnp.sum(dyf, axis=axes), f, c, jnp.sum)
  d_scale = _fold(jnp.sum(dyf * xhat, axis=axes), f, c, jnp.sum)
  sum_dy, sum_dy_xhat, n = d_bias, d_scale, x.size // c
  if axis_name is not None:
    sum_dy = jax.lax.psum(sum_dy, axis_name)
    sum_dy_xhat = jax.lax.psum(sum_dy_xhat, axis_name)
    n = n * jax.lax.psum(1, axis_name)
  gain = _tile(scale * inv, f).astype(cdt)
  mean_dy = _tile(sum_dy / n, f).astype(cdt)
  mean_dy_xhat = _tile(sum_dy_xhat / n, f).astype(cdt)
  dx = gain * (dyf - mean_dy - xhat * mean_dy_xhat)
  return (dx.astype(x.dtype), d_scale.astype(scale.dtype), d_bias.astype(scale.dtype),
          jnp.zeros_like(shift))


_train_norm.defvjp(_train_norm_fwd, _train_norm_bwd)


# ------------------------------------------------------------------------------------------------
# relu_pool: normalise + ReLU + 2x2 average pool in one pass (closed-form path).
@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _train_norm_relu_pool(x, scale, bias, shift, f: int, axis_name, eps: float):
  """(pool(relu(y)) in x.dtype, batch mean [C], biased batch var [C]), y as `_train_norm`'s.
  x: [B,H,W/f,f*C] (f = 1: plain [B,H,W,C]); the result [B,H/2,W/2,C] (packed by f/2 if f > 2)."""
  return _train_norm_relu_pool_fwd(x, scale, bias, shift, f, axis_name, eps)[0]


def _train_norm_relu_pool_fwd(x, scale, bias, shift, f, axis_name, eps):
  _, mean, var = _shifted_stats(x, shift, f, axis_name)
  # Each sub-pixel map holds max(f/2, 1) pixels per lane block: the statistics tile to match.
  # Normalised and rectified per sub-pixel (elementwise, so exactly the full map's values), then
  # summed in the packed pool's order: one fusion reads x and writes only the pooled map.
  fs = max(f // 2, 1)
  s00, s01, s10, s11 = (jax.nn.relu(_normalize(s.astype(jnp.promote_types(s.dtype, jnp.float32)),
                                               mean, var, scale, bias, fs, eps, x.dtype))
                        for s in pool_lib.subpixels(x, f))
  y = ((s00 + s01) + (s10 + s11)) * jnp.asarray(0.25, x.dtype)
  return (y, mean, var), (x, mean, var, scale, bias, shift)


def _train_norm_relu_pool_bwd(f, axis_name, eps, res, cts):
  x, mean, var, scale, bias, shift = res
  # The pool is linear: its transpose (full resolution, as autodiff of the composed ops writes it).
  (dz,) = jax.linear_transpose(lambda z: pool_lib.pool(z, f),
                               jax.ShapeDtypeStruct(x.shape, x.dtype))(cts[0].astype(x.dtype))
  xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  y = _normalize(xf, mean, var, scale, bias, f, eps, x.dtype)
  dy = jnp.where(y > 0, dz, jnp.zeros((), dz.dtype))  # relu's derivative: 0 at 0, as jax.nn.relu
  inv = jax.lax.rsqrt(var + eps)
  return _train_norm_bwd(f, axis_name, eps, (x, mean, inv, scale, shift), (dy, None, None))


_train_norm_relu_pool.defvjp(_train_norm_relu_pool_fwd, _train_norm_relu_pool_bwd)
