"""Keypoint utilities of FOMM: coordinate grids, Gaussian heatmaps, softmax expectation.

Keypoints are (x, y) in [-1, 1] with the align_corners=True convention: -1 and +1 are the centres
of the first and last pixel (`make_coordinate_grid`). `grid_sample` then reads these grids with
align_corners=False, exactly like FOMM on PyTorch >= 1.3 (a half-pixel mismatch that trained
checkpoints have absorbed; reproduce it, do not "fix" it).
"""

import jax
import jax.numpy as jnp


def make_coordinate_grid(height: int, width: int, dtype=jnp.float32) -> jax.Array:
  """[H, W, 2] grid of (x, y); x = 2 j / (W - 1) - 1, y = 2 i / (H - 1) - 1."""
  x = jnp.arange(width, dtype=dtype)
  y = jnp.arange(height, dtype=dtype)
  # Same operation order as FOMM: 2 * (x / (w - 1)) - 1.
  x = 2 * (x / (width - 1)) - 1
  y = 2 * (y / (height - 1)) - 1
  xx = jnp.broadcast_to(x[None, :], (height, width))
  yy = jnp.broadcast_to(y[:, None], (height, width))
  return jnp.stack([xx, yy], axis=-1)


def kp2gaussian(kp_value: jax.Array, height: int, width: int, kp_variance: float = 0.01):
  """Unnormalised Gaussian heatmaps around keypoints.

  Args:
    kp_value: [B, K, 2] keypoints (x, y).
    height, width: heatmap size.
    kp_variance: variance in normalised coordinates (FOMM: 0.01).

  Returns:
    [B, H, W, K] heatmaps exp(-0.5 |p - kp|^2 / variance), channels-last.
  """
  grid = make_coordinate_grid(height, width, kp_value.dtype)  # [H, W, 2]
  diff = grid[None, None] - kp_value[:, :, None, None, :]  # [B, K, H, W, 2]
  out = jnp.exp(-0.5 * jnp.sum(diff**2, axis=-1) / kp_variance)  # [B, K, H, W]
  return jnp.transpose(out, (0, 2, 3, 1))


def spatial_softmax(logits: jax.Array, temperature: float) -> jax.Array:
  """Softmax over the spatial axes of [B, H, W, K] logits / temperature (per keypoint)."""
  b, h, w, k = logits.shape
  flat = logits.reshape(b, h * w, k) / temperature
  return jax.nn.softmax(flat, axis=1).reshape(b, h, w, k)


def heatmap_expectation(heatmap: jax.Array) -> jax.Array:
  """Expected (x, y) under each keypoint's heatmap: [B, H, W, K] -> [B, K, 2]."""
  _, h, w, _ = heatmap.shape
  grid = make_coordinate_grid(h, w, heatmap.dtype)  # [H, W, 2]
  return jnp.einsum("bhwk,hwc->bkc", heatmap, grid, precision=jax.lax.Precision.HIGHEST)
