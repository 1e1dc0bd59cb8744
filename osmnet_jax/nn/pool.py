"""FOMM's 2x2 average pooling (`nn.AvgPool2d(2)`) on plain and width-packed maps, and the four
sub-pixel maps it averages (used by BatchNorm's fused `relu_pool` path, nn/batch_norm.py)."""

import flax.linen as nn
import jax
import jax.numpy as jnp


def avg_pool2x(x: jax.Array) -> jax.Array:
  """`nn.AvgPool2d(2)`: floor division of odd sizes, like torch."""
  return nn.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID")


def avg_pool2x_packed(x: jax.Array, f: int) -> jax.Array:
  """`avg_pool2x` on a map width-packed by f (even): [B,H,W/f,f*C] -> [B,H/2,W/f,(f/2)*C],
  packed by f/2 (f = 2: the plain [B,H/2,W/2,C]). The width pairs 2k, 2k+1 are sub-pixels of one
  packed column, so they add along the channel axis (128-lane aligned slices for C = 128)."""
  c = x.shape[-1] // f
  if f % 2:
    raise ValueError(f"packed pooling needs an even pack factor, got {f}")
  x = jnp.concatenate(
      [x[..., 2 * q * c:(2 * q + 1) * c] + x[..., (2 * q + 1) * c:(2 * q + 2) * c]
       for q in range(f // 2)], -1)
  h = x.shape[1] // 2 * 2  # floor odd heights, like nn.AvgPool2d
  return (x[:, 0:h:2] + x[:, 1:h:2]) * 0.25


def pool(x: jax.Array, f: int) -> jax.Array:
  """`avg_pool2x_packed(x, f)` for a map packed by f > 1, else (f = 0 or 1) `avg_pool2x(x)`."""
  return avg_pool2x_packed(x, f) if f > 1 else avg_pool2x(x)


def subpixels(x: jax.Array, f: int) -> list[jax.Array]:
  """The four maps `pool(x, f)` averages, each in the pooled layout: [s00, s01, s10, s11], s_ab
  the pixels of row parity a and column parity b (odd sizes floored, like the pool). Plain (f <= 1):
  strided slices x[:, a::2, b::2]. Packed by f (even): column parity b is the lane block 2q + b of
  every packed pixel pair q, so s_ab is [B,H/2,W/f,(f/2)*C] like `avg_pool2x_packed`'s output.
  ((s00 + s01) + (s10 + s11)) / 4 is the pool, summed in the packed pool's order."""
  h = x.shape[1] // 2 * 2
  if f <= 1:
    w = x.shape[2] // 2 * 2
    return [x[:, a:h:2, b:w:2] for a in (0, 1) for b in (0, 1)]
  if f % 2:
    raise ValueError(f"packed pooling needs an even pack factor, got {f}")
  c = x.shape[-1] // f
  out = []
  for a in (0, 1):
    for b in (0, 1):  # one slice op per part: the TPU compiler wrote a slice of a slice out
      parts = [x[:, a:h:2, :, (2 * q + b) * c:(2 * q + b + 1) * c] for q in range(f // 2)]
      out.append(parts[0] if len(parts) == 1 else jnp.concatenate(parts, -1))
  return out
