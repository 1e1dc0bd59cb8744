"""FOMM dense motion network, channels-last.

At `scale_factor` resolution (h, w): for each of K keypoints a local affine motion
  T_k(z) = kp_src_k + J_src_k J_drv_k^-1 (z - kp_drv_k)
plus the identity as background motion (K+1 motions). The hourglass sees, per motion, the
difference of Gaussian heatmaps (driving - source; zeros for the background) and the source warped
by that motion; it predicts a softmax mask over the K+1 motions (dense flow = mask-weighted sum)
and a sigmoid occlusion map.

Mixed precision (`dtype=jnp.bfloat16`): only the hourglass computes in bf16. The sparse motions,
the warped sources (grid_sample coordinates), the 'mask' / 'occlusion' heads, the softmax and
the flow stay float32: the flow is a coordinate field read by grid_sample, where bf16 would
misplace pixels (see grid_sample.py), and the heads are cheap.

``landmark_motion="tps"`` [ours; "none" in every FOMM config, whose checkpoints and parity are
unchanged]: one more motion, appended last (index K+1): the thin-plate spline that carries the
driving frame's landmarks exactly onto the source's (nn/tps.py says why). The keypoint dicts then
carry 'landmarks' [B,N,2] in the keypoints' normalised coordinates; its heatmap channel is the
max over the landmarks' Gaussians (driving - source). The mask has K+2 channels.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from osmnet_jax.nn import keypoints as kp_lib
from osmnet_jax.nn import tps as tps_lib
from osmnet_jax.nn.blocks import AntiAliasInterpolation2d, Hourglass, conv
from osmnet_jax.nn.grid_sample import grid_sample


def sparse_motions(kp_src: dict, kp_drv: dict, h: int, w: int) -> jax.Array:
  """[B, K+1, h, w, 2] sampling grids; index 0 is the identity (background)."""
  identity = kp_lib.make_coordinate_grid(h, w, kp_src["value"].dtype)  # [h,w,2]
  b, k, _ = kp_src["value"].shape
  z = identity[None, None] - kp_drv["value"][:, :, None, None, :]  # [B,K,h,w,2]
  if "jacobian" in kp_drv and "jacobian" in kp_src:
    jac = jnp.matmul(
        kp_src["jacobian"],
        jnp.linalg.inv(kp_drv["jacobian"]),
        precision=jax.lax.Precision.HIGHEST,
    )  # [B,K,2,2]
    z = jnp.einsum("bkij,bkhwj->bkhwi", jac, z, precision=jax.lax.Precision.HIGHEST)
  driving_to_source = z + kp_src["value"][:, :, None, None, :]
  background = jnp.broadcast_to(identity[None, None], (b, 1, h, w, 2))
  return jnp.concatenate([background, driving_to_source], axis=1)


LANDMARK_MOTIONS = ("none", "tps")


def landmark_motion(kp_src: dict, kp_drv: dict, h: int, w: int, reg: float) -> jax.Array:
  """[B, 1, h, w, 2]: the spline from the driving landmarks to the source landmarks on the
  (h, w) grid ('landmarks' [B,N,2] of both dicts)."""
  for name, kp in (("kp_src", kp_src), ("kp_drv", kp_drv)):
    if "landmarks" not in kp:
      raise ValueError(
          f"landmark_motion='tps' needs {name}['landmarks'] [B,N,2] (normalised like the "
          "keypoints): renderer.with_landmarks adds them; or set "
          "generator.dense_motion_params.landmark_motion='none'")
  grid = kp_lib.make_coordinate_grid(h, w, jnp.float32)
  return tps_lib.grid_motion(kp_drv["landmarks"], kp_src["landmarks"], grid, reg)[:, None]


def deformed_sources(source: jax.Array, motions: jax.Array) -> jax.Array:
  """Warps source [B,h,w,C] by each of motions [B,M,h,w,2] -> [B,M,h,w,C]."""
  b, m, h, w, _ = motions.shape
  c = source.shape[-1]
  rep = jnp.broadcast_to(source[:, None], (b, m, h, w, c)).reshape(b * m, h, w, c)
  out = grid_sample(rep, motions.reshape(b * m, h, w, 2))
  return out.reshape(b, m, h, w, c)


class DenseMotionNetwork(nn.Module):
  """Submodules 'down', 'hourglass', 'mask', 'occlusion' (FOMM attribute names)."""

  block_expansion: int = 64
  num_blocks: int = 5
  max_features: int = 1024
  num_kp: int = 10
  estimate_occlusion_map: bool = True
  scale_factor: float = 0.25
  kp_variance: float = 0.01
  train: bool = False
  bn_axis_name: Any = None
  dtype: Any = None  # hourglass compute dtype (None: float32)
  remat: bool = False  # nn.remat on the hourglass blocks
  landmark_motion: str = "none"  # [ours] "tps": one more motion from the landmarks (module doc)
  landmark_tps_reg: float = 1e-6  # the spline regulariser (nn/tps.py): 0.01 px off at 64 px

  @nn.compact
  def __call__(self, source: jax.Array, kp_drv: dict, kp_src: dict) -> dict[str, jax.Array]:
    """source [B,H,W,C] -> dict of mask [B,h,w,M], deformation [B,h,w,2],
    sparse_deformed [B,M,h,w,C], occlusion_map [B,h,w,1]; M = K+1 motions (K+2 with
    landmark_motion)."""
    if self.landmark_motion not in LANDMARK_MOTIONS:
      raise ValueError(f"landmark_motion={self.landmark_motion!r}: use one of {LANDMARK_MOTIONS}")
    if self.scale_factor != 1:
      source = AntiAliasInterpolation2d(self.scale_factor, name="down")(source)
    b, h, w, c = source.shape

    gauss = kp_lib.kp2gaussian(kp_drv["value"], h, w, self.kp_variance) - kp_lib.kp2gaussian(
        kp_src["value"], h, w, self.kp_variance
    )  # [B,h,w,K]
    heatmaps = jnp.concatenate([jnp.zeros((b, h, w, 1), gauss.dtype), gauss], axis=-1)

    motions = sparse_motions(kp_src, kp_drv, h, w)  # [B,K+1,h,w,2]
    if self.landmark_motion == "tps":
      motions = jnp.concatenate(
          [motions, landmark_motion(kp_src, kp_drv, h, w, self.landmark_tps_reg)], axis=1)
      lm_heat = (kp_lib.kp2gaussian(kp_drv["landmarks"], h, w, self.kp_variance).max(-1)
                 - kp_lib.kp2gaussian(kp_src["landmarks"], h, w, self.kp_variance).max(-1))
      heatmaps = jnp.concatenate([heatmaps, lm_heat[..., None].astype(heatmaps.dtype)], -1)
    num_motions = motions.shape[1]
    deformed = deformed_sources(source, motions)  # [B,M,h,w,C]

    # torch: cat([heatmap [B,K+1,1,h,w], deformed [B,K+1,C,h,w]], 2).view(B, -1, h, w), so the
    # channel index is m * (C+1) + c. Build [B,h,w,K+1,C+1] and flatten the last two.
    per_motion = jnp.concatenate(
        [heatmaps[..., None], jnp.transpose(deformed, (0, 2, 3, 1, 4))], axis=-1
    )
    inp = per_motion.reshape(b, h, w, num_motions * (c + 1))

    prediction = Hourglass(
        self.block_expansion,
        self.num_blocks,
        self.max_features,
        self.train,
        self.bn_axis_name,
        self.dtype,
        self.remat,
        name="hourglass",
    )(inp)
    # Heads without a dtype: bf16 'prediction' is promoted to the float32 params (float32 out).
    mask = jax.nn.softmax(conv(num_motions, 7, 3, "mask")(prediction), axis=-1)
    deformation = jnp.einsum(
        "bhwm,bmhwi->bhwi", mask, motions, precision=jax.lax.Precision.HIGHEST
    )
    out = {"mask": mask, "deformation": deformation, "sparse_deformed": deformed}
    if self.estimate_occlusion_map:
      out["occlusion_map"] = jax.nn.sigmoid(conv(1, 7, 3, "occlusion")(prediction))
    return out
