"""Thin-plate-spline interpolation of point correspondences: the landmark motion [ours].

Given N control points c_i (the driving frame's landmarks) and their targets v_i (the same
landmarks in the source), the spline

  f(z) = a_0 + A z + sum_i w_i U(|z - c_i|),   U(r) = r^2 log r  (the 2-D biharmonic kernel)

maps every driving point z to where to read the source. With ``reg`` = 0 it meets every pair
exactly (f(c_i) = v_i) and is the smoothest map that does (least bending energy); ``reg`` > 0
trades exactness for smoothness and keeps the system regular when points coincide (the inner
lips of a closed mouth). Far from the points f is affine: the face's mean motion.

Why a spline and not more keypoints: FOMM's flow is a mask-weighted blend of K local affine
motions. Measured here (BENCHMARKS.md "Where pitch is lost"), a warp that interpolates the 68 true
landmarks meets every reconstruction target including pitch (r 0.88), while the learned keypoint
flow of the default renderer carries pitch at r <= 0.71 even with ideal keypoints: a nod's
sub-pixel parallax between nose, eyes and jaw is lost in the blend. The spline passes through
every landmark, so the parallax is kept by construction.

Coordinates: anything consistent; the renderer uses FOMM's normalised (x, y) in [-1, 1].
"""

import jax
import jax.numpy as jnp

_HI = jax.lax.Precision.HIGHEST


def _kernel(d2: jax.Array) -> jax.Array:
  """U as a function of the squared distance: r^2 log r = d2 log(d2) / 2; U(0) = 0."""
  return 0.5 * d2 * jnp.log(d2 + 1e-12)


def fit(control: jax.Array, target: jax.Array, reg: float = 0.0) -> jax.Array:
  """control, target [B, N, 2] -> spline coefficients [B, N + 3, 2]: the N kernel weights, then
  the constant and the two linear terms (float32; the system is solved at full precision)."""
  control = control.astype(jnp.float32)
  target = target.astype(jnp.float32)
  b, n, _ = control.shape
  d2 = jnp.sum((control[:, :, None] - control[:, None]) ** 2, -1)  # [B, N, N]
  k = _kernel(d2) + reg * jnp.eye(n, dtype=jnp.float32)
  p = jnp.concatenate([jnp.ones((b, n, 1), jnp.float32), control], -1)  # [B, N, 3]
  top = jnp.concatenate([k, p], -1)  # [B, N, N+3]
  bottom = jnp.concatenate([jnp.swapaxes(p, 1, 2), jnp.zeros((b, 3, 3), jnp.float32)], -1)
  system = jnp.concatenate([top, bottom], 1)  # [B, N+3, N+3]
  rhs = jnp.concatenate([target, jnp.zeros((b, 3, 2), jnp.float32)], 1)  # [B, N+3, 2]
  return jnp.linalg.solve(system, rhs)


def apply(coef: jax.Array, control: jax.Array, points: jax.Array) -> jax.Array:
  """coef [B, N + 3, 2] (``fit``), control [B, N, 2], points [B, ..., 2] -> f(points)
  [B, ..., 2] (float32)."""
  b, n, _ = control.shape
  shape = points.shape
  z = points.reshape(b, -1, 2).astype(jnp.float32)  # [B, M, 2]
  d2 = jnp.sum((z[:, :, None] - control[:, None].astype(jnp.float32)) ** 2, -1)  # [B, M, N]
  radial = jnp.einsum("bmn,bnc->bmc", _kernel(d2), coef[:, :n], precision=_HI)
  affine = coef[:, n:n + 1] + jnp.einsum("bmj,bjc->bmc", z, coef[:, n + 1:], precision=_HI)
  return (radial + affine).reshape(shape)


def grid_motion(control: jax.Array, target: jax.Array, grid: jax.Array,
                reg: float = 0.0) -> jax.Array:
  """The spline from control to target points [B, N, 2] evaluated on grid [h, w, 2]
  -> [B, h, w, 2]."""
  coef = fit(control, target, reg)
  b = control.shape[0]
  return apply(coef, control, jnp.broadcast_to(grid[None], (b,) + grid.shape))
