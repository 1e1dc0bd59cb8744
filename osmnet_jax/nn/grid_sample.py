"""Bilinear `grid_sample` and bilinear resize with PyTorch semantics, channels-last.

Both are written as a handful of vectorised gathers (no loops over pixels) so they run fast on
accelerators and are differentiable in the input (gather transposes to scatter-add) and in the
sampling grid (through the bilinear weights).

`grid_sample(x, grid)` equals `torch.nn.functional.grid_sample(x_nchw, grid, mode='bilinear',
padding_mode=..., align_corners=False)` transposed to NHWC. Grid coordinates are (x, y) in [-1, 1]
where -1 / +1 are the *outer edges* of the border pixels (align_corners=False), so pixel `i` has
its centre at `(2 i + 1) / W - 1`. Keypoint grids elsewhere in the code use the other convention
(`make_coordinate_grid`, align_corners=True, -1 / +1 at the border pixel centres) exactly as FOMM
does; mixing the two is FOMM's behaviour and is reproduced on purpose.
"""

from typing import Literal

import jax
import jax.numpy as jnp

PaddingMode = Literal["zeros", "border", "reflection"]


def _unnormalize(coord: jax.Array, size: int) -> jax.Array:
  """[-1, 1] (align_corners=False) -> pixel coordinate in [-0.5, size - 0.5]."""
  return ((coord + 1.0) * size - 1.0) * 0.5


def _reflect(coord: jax.Array, size: int) -> jax.Array:
  """Reflects pixel coordinates about the image border at -0.5 and size - 0.5, then clips.

  Mirrors PyTorch's `reflect_coordinates(coord, -1, 2 * size - 1)` followed by
  `clip_coordinates` used for align_corners=False.
  """
  lo = -0.5
  span = float(size)
  c = jnp.abs(coord - lo)
  extra = jnp.fmod(c, span)
  flips = jnp.floor(c / span)
  even = jnp.fmod(flips, 2.0) == 0
  out = jnp.where(even, extra + lo, span - extra + lo)
  return jnp.clip(out, 0.0, size - 1.0)


def pixel_centre_grid(height: int, width: int, dtype=jnp.float32) -> jax.Array:
  """[H, W, 2] grid of (x, y) at the pixel centres in grid_sample's convention:
  x = (2 j + 1) / W - 1 (sampling x at it returns x unchanged)."""
  cx = (2.0 * jnp.arange(width, dtype=dtype) + 1.0) / width - 1.0
  cy = (2.0 * jnp.arange(height, dtype=dtype) + 1.0) / height - 1.0
  return jnp.stack(jnp.broadcast_arrays(cx[None, :], cy[:, None]), -1)


def grid_sample(
    x: jax.Array, grid: jax.Array, padding_mode: PaddingMode = "zeros"
) -> jax.Array:
  """Samples `x` at `grid` with bilinear interpolation.

  Args:
    x: [B, H, W, C] input.
    grid: [B, Ho, Wo, 2] sampling positions, (x, y) in [-1, 1], align_corners=False.
    padding_mode: 'zeros' (FOMM's warps), 'border' or 'reflection' (FOMM's TPS augmentation).

  Returns:
    [B, Ho, Wo, C] samples.
  """
  b, h, w, c = x.shape
  _, ho, wo, _ = grid.shape
  # Coordinates and bilinear weights in at least float32: in bf16 the spacing near |1| is 2^-8,
  # i.e. ~0.25 px at 64 px and ~1 px at 256 px, so a bf16 grid would misplace the warp. With
  # float32/float64 features cdt == x.dtype (the unchanged full-precision path); with bf16
  # features (mixed precision) each corner is weighted in float32 and the sum cast back.
  cdt = jnp.promote_types(x.dtype, jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else None
  grid = grid.astype(cdt) if cdt is not None else grid
  ix = _unnormalize(grid[..., 0], w)  # [B, Ho, Wo]
  iy = _unnormalize(grid[..., 1], h)
  if padding_mode == "border":
    ix = jnp.clip(ix, 0.0, w - 1.0)
    iy = jnp.clip(iy, 0.0, h - 1.0)
  elif padding_mode == "reflection":
    ix = _reflect(ix, w)
    iy = _reflect(iy, h)
  elif padding_mode != "zeros":
    raise ValueError(f"unknown padding_mode {padding_mode!r}")

  # Corner indices and weights; floor() carries no gradient, the weights carry the grid gradient.
  x0 = jnp.floor(ix)
  y0 = jnp.floor(iy)
  x1 = x0 + 1.0
  y1 = y0 + 1.0
  wx1 = ix - x0  # weight of the right column
  wx0 = x1 - ix
  wy1 = iy - y0
  wy0 = y1 - iy

  flat = x.reshape(b, h * w, c)

  def corner(yy, xx, weight):
    # Zero padding: out-of-range corners contribute nothing (weight masked to 0).
    valid = (xx >= 0) & (xx <= w - 1) & (yy >= 0) & (yy <= h - 1)
    xi = jnp.clip(xx, 0, w - 1).astype(jnp.int32)
    yi = jnp.clip(yy, 0, h - 1).astype(jnp.int32)
    idx = (yi * w + xi).reshape(b, ho * wo, 1)  # [B, N, 1]
    vals = jnp.take_along_axis(flat, idx, axis=1, mode="clip")  # [B, N, C]
    weight = jnp.where(valid, weight, 0.0).reshape(b, ho * wo, 1)
    if cdt is not None and cdt != vals.dtype:  # bf16 features: weight in float32
      return vals.astype(cdt) * weight
    return vals * weight.astype(vals.dtype)

  out = (
      corner(y0, x0, wy0 * wx0)
      + corner(y0, x1, wy0 * wx1)
      + corner(y1, x0, wy1 * wx0)
      + corner(y1, x1, wy1 * wx1)
  )
  return out.reshape(b, ho, wo, c).astype(x.dtype)


def _source_index(out_size: int, in_size: int):
  """Half-pixel source positions of torch's bilinear resize (align_corners=False, size given)."""
  scale = in_size / out_size
  src = (jnp.arange(out_size, dtype=jnp.float32) + 0.5) * scale - 0.5
  src = jnp.maximum(src, 0.0)  # torch clamps negative source positions to 0
  i0 = jnp.floor(src).astype(jnp.int32)
  i0 = jnp.minimum(i0, in_size - 1)
  i1 = jnp.minimum(i0 + 1, in_size - 1)
  lam = src - i0.astype(jnp.float32)
  return i0, i1, lam


def resize_bilinear(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """`F.interpolate(x, size=size, mode='bilinear', align_corners=False)` in NHWC.

  Unlike `jax.image.resize`, this never anti-aliases when shrinking, as torch does not.

  Args:
    x: [B, H, W, C].
    size: (Ho, Wo).

  Returns:
    [B, Ho, Wo, C].
  """
  _, h, w, _ = x.shape
  ho, wo = size
  if (ho, wo) == (h, w):
    return x
  y0, y1, ly = _source_index(ho, h)
  x0, x1, lx = _source_index(wo, w)
  ly = ly.astype(x.dtype)[None, :, None, None]
  lx = lx.astype(x.dtype)[None, None, :, None]
  rows = x[:, y0] * (1 - ly) + x[:, y1] * ly  # [B, Ho, W, C]
  return rows[:, :, x0] * (1 - lx) + rows[:, :, x1] * lx
