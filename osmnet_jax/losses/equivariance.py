"""FOMM's equivariance constraint under random thin-plate-spline (TPS) warps.

A random transform T (affine noise sigma_affine around the identity plus a TPS over a
points_tps x points_tps control grid with weights ~ N(0, sigma_tps)) maps coordinates of the
*transformed* frame to the original frame:
  T(z) = A z + t + sum_p w_p * d_p^2 log(d_p + 1e-6),   d_p = |z - c_p|_1  (L1, as FOMM).
The driving frame is resampled at T(grid) (bilinear, reflection padding) to make the transformed
frame; keypoints must satisfy kp(driving) ~= T(kp(transformed)) (value loss) and
J(driving)^-1 (dT/dz . J(transformed)) ~= I (Jacobian loss), each an L1 mean with weight 10.

Noise is drawn per sample from `jax.random.fold_in(rng, global_sample_index)`, so a step gives
the same transforms whether the batch is on one device, sharded under jit, or split under pmap.
"""

import jax
import jax.numpy as jnp

from osmnet_jax.nn.grid_sample import grid_sample
from osmnet_jax.nn.keypoints import make_coordinate_grid


def random_tps(
    rng: jax.Array,
    sample_ids: jax.Array,
    sigma_affine: float = 0.05,
    sigma_tps: float = 0.005,
    points_tps: int = 5,
) -> dict[str, jax.Array]:
  """Per-sample transforms: theta [B,2,3], control_points [P,2], control_params [B,P]."""

  def one(i):
    k_aff, k_tps = jax.random.split(jax.random.fold_in(rng, i))
    theta = sigma_affine * jax.random.normal(k_aff, (2, 3)) + jnp.eye(2, 3)
    params = sigma_tps * jax.random.normal(k_tps, (points_tps**2,))
    return theta, params

  theta, params = jax.vmap(one)(sample_ids)
  cps = make_coordinate_grid(points_tps, points_tps).reshape(-1, 2)
  return {"theta": theta, "control_points": cps, "control_params": params}


def warp_coordinates(tps: dict, coords: jax.Array) -> jax.Array:
  """coords [B,N,2] (x, y) -> T(coords) [B,N,2]."""
  theta = tps["theta"]
  out = jnp.einsum("bij,bnj->bni", theta[:, :, :2], coords, precision="highest")
  out = out + theta[:, None, :, 2]
  # [B,N,P]
  d = jnp.sum(jnp.abs(coords[:, :, None, :] - tps["control_points"][None, None]), axis=-1)
  radial = d**2 * jnp.log(d + 1e-6) * tps["control_params"][:, None, :]
  return out + jnp.sum(radial, axis=-1)[..., None]  # same TPS offset on x and y, as FOMM


def tps_jacobian(tps: dict, coords: jax.Array) -> jax.Array:
  """dT/dz at coords [B,N,2] -> [B,N,2,2] (rows: output x, y; columns: d/dx, d/dy)."""

  def single(t, z):  # z [2] for one sample's transform t
    t1 = jax.tree.map(lambda a: a[None], t)
    t1["control_points"] = tps["control_points"]
    return warp_coordinates(t1, z[None, None])[0, 0]

  per_sample = {"theta": tps["theta"], "control_params": tps["control_params"]}
  jac = jax.vmap(lambda t, zs: jax.vmap(lambda z: jax.jacfwd(single, argnums=1)(t, z))(zs))
  return jac(per_sample, coords)


def transform_frame(tps: dict, frame: jax.Array) -> jax.Array:
  """frame [B,H,W,C] sampled at T(grid) with reflection padding -> [B,H,W,C]."""
  b, h, w, _ = frame.shape
  grid = make_coordinate_grid(h, w, frame.dtype).reshape(1, h * w, 2)
  warped = warp_coordinates(tps, jnp.broadcast_to(grid, (b, h * w, 2))).reshape(b, h, w, 2)
  return grid_sample(frame, warped, padding_mode="reflection")


def equivariance_losses(
    tps: dict,
    kp_driving: dict,
    kp_transformed: dict,
    weight_value: float = 10.0,
    weight_jacobian: float = 10.0,
) -> dict[str, jax.Array]:
  """{'equivariance_value', 'equivariance_jacobian'} (weighted), as FOMM's GeneratorFullModel."""
  out = {}
  if weight_value:
    warped = warp_coordinates(tps, kp_transformed["value"])
    out["equivariance_value"] = weight_value * jnp.mean(jnp.abs(kp_driving["value"] - warped))
  if weight_jacobian and "jacobian" in kp_driving:
    jt = jnp.matmul(tps_jacobian(tps, kp_transformed["value"]), kp_transformed["jacobian"],
                    precision="highest")
    value = jnp.matmul(jnp.linalg.inv(kp_driving["jacobian"]), jt, precision="highest")
    out["equivariance_jacobian"] = weight_jacobian * jnp.mean(jnp.abs(jnp.eye(2) - value))
  return out
