"""Stage A renderer: model builders and the stable inference API (DESIGN.md §6).

    variables = renderer.init(rng, cfg, image_size)
    kp = renderer.detect_keypoints(variables, cfg, source)   # source float32 [B,H,W,3] in [0,1]
    out = renderer.render(variables, cfg, source, kp_src, kp_drv)

`variables` = {'kp_detector': {'params', 'batch_stats'}, 'generator': {'params', 'batch_stats'}}
(plus an optional 'discriminator'). The API runs in inference mode: BatchNorm uses running
statistics, exactly like torch `.eval()`.
"""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from osmnet_jax.losses import landmark_anchors
from osmnet_jax.models.discriminator import MultiScaleDiscriminator
from osmnet_jax.models.generator import OcclusionAwareGenerator
from osmnet_jax.models.keypoint_detector import KPDetector
from osmnet_jax.nn import precision
from osmnet_jax.runtime.init_jit import config_jit


def vox256_config() -> ml_collections.ConfigDict:
  """FOMM `config/vox-256.yaml` model and training parameters: the reference architecture (the
  converters' target). Training configs spell every one of these fields (configs/default.py)."""
  c = ml_collections.ConfigDict()
  c.num_kp = 10
  c.num_channels = 3
  c.estimate_jacobian = True
  # [ours] Not FOMM fields (converters ignore them). compute_dtype "bfloat16": the hourglasses and
  # the generator's blocks compute in bf16 with float32 params, and so does the frozen perceptual
  # VGG; heads, softmax, warps, the losses' sums and Adam stay float32 (models/*.py say why).
  # remat: recompute the hourglass blocks in the backward pass instead of storing their
  # activations (less memory, ~1 more forward).
  c.compute_dtype = "float32"
  c.remat = False
  c.kp_detector = ml_collections.ConfigDict(
      dict(
          temperature=0.1,
          block_expansion=32,
          max_features=1024,
          scale_factor=0.25,
          num_blocks=5,
          single_jacobian_map=False,
          pad=0,
      )
  )
  c.generator = ml_collections.ConfigDict(
      dict(
          block_expansion=64,
          max_features=512,
          num_down_blocks=2,
          num_bottleneck_blocks=6,
          estimate_occlusion_map=True,
          output_blend="none",  # [ours] "occlusion": see models/generator.py
          dense_motion_params=dict(
              block_expansion=64, max_features=1024, num_blocks=5, scale_factor=0.25
          ),
      )
  )
  c.discriminator = ml_collections.ConfigDict(
      dict(
          enabled=False,  # vox-256 trains with generator_gan weight 0
          scales=(1,),
          block_expansion=32,
          max_features=512,
          num_blocks=4,
          sn=True,
          use_kp=False,
      )
  )
  c.train = ml_collections.ConfigDict(
      dict(
          lr_generator=2e-4,
          lr_kp_detector=2e-4,
          lr_discriminator=2e-4,
          b1=0.5,
          b2=0.999,
          # MultiStepLR(gamma 0.1) at these optimizer steps; FOMM uses epochs [60, 90].
          lr_milestones=(),
          lr_gamma=0.1,
          scales=(1, 0.5, 0.25, 0.125),
          perceptual_backbone="lpips_vgg16",  # or 'vgg19' with vgg19_path
          vgg19_path="",
          transform_params=dict(sigma_affine=0.05, sigma_tps=0.005, points_tps=5),
          loss_weights=dict(
              generator_gan=0.0,
              discriminator_gan=1.0,
              feature_matching=(10.0, 10.0, 10.0, 10.0),
              perceptual=(10.0, 10.0, 10.0, 10.0, 10.0),
              equivariance_value=10.0,
              equivariance_jacobian=10.0,
              # [ours] Landmark terms (losses/landmark_anchors.py); 0 = off, as in FOMM.
              keypoint_anchor=0.0,
              keypoint_motion=0.0,
              flow_anchor=0.0,
              mask_background=0.0,
              mask_anchor=0.0,  # [ours] the mask picks keypoint k's motion at its landmark
              decoder=0.0,  # [ours] L1 of the decoder image under output_blend="occlusion"
              mouth=0.0,
              heatmap_peak=0.0,  # [ours] diffuse keypoint heatmaps (landmark_anchors.py)
              heatmap_anchor=0.0,  # [ours] KL of each anchored heatmap to its landmark
          ),
          # [ours] keypoint k is tied to landmark anchor_landmarks[k] (iBUG-68): eye corners,
          # nose tip, chin, jaw, mouth corners, inner lips.
          anchor_landmarks=(36, 45, 30, 8, 3, 13, 48, 54, 62, 66),
          mouth_margin=0.35,  # [ours] the mouth term's box: outer lips grown by this x its side
          heatmap_floor=1.5,  # [ours] heatmap_peak: sigma (heatmap cells) left unpenalised
          heatmap_anchor_sigma=1.5,  # [ours] heatmap_anchor: its target Gaussian's std (cells)
          heatmap_anchor_until=0,  # [ours] heatmap_anchor only for steps < this (0: always)
          # [ours] with its flag on, each mask term reads a second dense-motion pass on
          # stop_gradient keypoints, so it shapes the mask only (one pass serves both terms;
          # 1.01x the default's step).
          mask_anchor_detach_kp=False,
          mask_background_detach_kp=False,
      )
  )
  return c


def tiny_config() -> ml_collections.ConfigDict:
  """A small renderer with the vox-256 topology for 32-64 px unit tests (the training configs set
  their own sizes in configs/)."""
  c = vox256_config()
  c.kp_detector.block_expansion = 8
  c.kp_detector.max_features = 64
  c.kp_detector.num_blocks = 3
  c.generator.block_expansion = 8
  c.generator.max_features = 64
  c.generator.num_bottleneck_blocks = 2
  c.generator.dense_motion_params = dict(
      block_expansion=8, max_features=64, num_blocks=3, scale_factor=0.25
  )
  c.discriminator.block_expansion = 8
  c.discriminator.max_features = 64
  c.discriminator.num_blocks = 3
  # Pyramid levels must leave relu5 non-empty: image * min(scale) >= 16 (32 px and up here).
  c.train.scales = (1, 0.5)
  return c


# The dtype names are shared by every stage (nn/precision.py); these names stay for callers.
COMPUTE_DTYPES = precision.COMPUTE_DTYPES
compute_dtype = precision.compute_dtype


def make_kp_detector(cfg, train: bool = False, bn_axis_name: Any = None) -> KPDetector:
  k = cfg.kp_detector
  return KPDetector(
      block_expansion=k.block_expansion,
      num_kp=cfg.num_kp,
      max_features=k.max_features,
      num_blocks=k.num_blocks,
      temperature=k.temperature,
      estimate_jacobian=cfg.estimate_jacobian,
      scale_factor=k.scale_factor,
      single_jacobian_map=k.get("single_jacobian_map", False),
      pad=k.get("pad", 0),
      train=train,
      bn_axis_name=bn_axis_name,
      dtype=compute_dtype(cfg),
      remat=bool(cfg.get("remat", False)),
  )


def make_generator(cfg, train: bool = False, bn_axis_name: Any = None) -> OcclusionAwareGenerator:
  g = cfg.generator
  dmp = g.get("dense_motion_params", None)
  return OcclusionAwareGenerator(
      num_channels=cfg.num_channels,
      num_kp=cfg.num_kp,
      block_expansion=g.block_expansion,
      max_features=g.max_features,
      num_down_blocks=g.num_down_blocks,
      num_bottleneck_blocks=g.num_bottleneck_blocks,
      estimate_occlusion_map=g.estimate_occlusion_map,
      output_blend=g.get("output_blend", "none"),
      dense_motion_params=None if dmp is None else dict(dmp),
      train=train,
      bn_axis_name=bn_axis_name,
      dtype=compute_dtype(cfg),
      remat=bool(cfg.get("remat", False)),
  )


def uses_landmarks(cfg) -> bool:
  """Whether the generator's flow reads landmarks (dense_motion_params.landmark_motion [ours]):
  then every keypoint dict it renders from carries 'landmarks' (``with_landmarks``)."""
  dmp = cfg.generator.get("dense_motion_params", None)
  return dmp is not None and dict(dmp).get("landmark_motion", "none") != "none"


def with_landmarks(kp: dict, landmarks, size: int) -> dict:
  """kp plus 'landmarks': pixel landmarks [..., 68, 2] of an S x S frame (pixel j at j, the
  datasets' convention) in the keypoints' normalised coordinates (x = 2 j / (S - 1) - 1)."""
  return dict(kp) | {"landmarks": landmark_anchors.to_unit(jnp.asarray(landmarks), size)}


def make_discriminator(cfg, train: bool = False) -> MultiScaleDiscriminator:
  d = cfg.discriminator
  params = dict(
      block_expansion=d.block_expansion,
      num_blocks=d.num_blocks,
      max_features=d.max_features,
      sn=d.sn,
      use_kp=d.use_kp,
  )
  return MultiScaleDiscriminator(scales=tuple(d.scales), disc_params=params, train=train)


def _with_stats(v):
  return {"params": v["params"], "batch_stats": v.get("batch_stats", {})}


def init(rng: jax.Array, cfg, image_size: int, with_discriminator: bool | None = None) -> dict:
  """Random variables for all renderer modules at a square `image_size` (jit-compiled)."""
  if with_discriminator is None:
    with_discriminator = cfg.discriminator.get("enabled", False)
  return _init_jit(rng, cfg, int(image_size), bool(with_discriminator))


# A one-off program: cheap XLA:CPU compile, same values (runtime/init_jit.py).
@config_jit(static_argnums=(1, 2, 3), cheap_compile=True)
def _init_jit(rng, cfg, image_size, with_discriminator):
  return _init(rng, cfg, image_size, with_discriminator)


def _init(rng, cfg, image_size, with_discriminator) -> dict:
  k_kp, k_gen, k_disc = jax.random.split(rng, 3)
  x = jnp.zeros((1, image_size, image_size, cfg.num_channels), jnp.float32)
  v_kp = make_kp_detector(cfg).init(k_kp, x)
  # Shapes are all the generator's init needs: identity keypoints (no detector forward to compile).
  kp = {
      "value": jnp.zeros((1, cfg.num_kp, 2), jnp.float32),
      "jacobian": jnp.broadcast_to(jnp.eye(2, dtype=jnp.float32), (1, cfg.num_kp, 2, 2)),
  }
  if uses_landmarks(cfg):  # distinct points (a spline through one repeated point is singular)
    angle = jnp.linspace(0.0, 2.0 * jnp.pi, 68, endpoint=False)
    ring = 0.5 * jnp.stack([jnp.cos(angle), jnp.sin(angle)], -1)[None]  # [1, 68, 2]
    kp = kp | {"landmarks": ring}
  v_gen = make_generator(cfg).init(k_gen, x, kp, kp)
  variables = {"kp_detector": _with_stats(v_kp), "generator": _with_stats(v_gen)}
  if with_discriminator:
    disc = make_discriminator(cfg)
    pyr = {f"prediction_{s}": x for s in cfg.discriminator.scales}
    variables["discriminator"] = _with_stats(disc.init(k_disc, pyr, kp["value"]))
  return variables


@config_jit(static_argnums=(1,))
def _detect(variables, cfg, source):
  return make_kp_detector(cfg).apply(variables["kp_detector"], source)


@config_jit(static_argnums=(1,))
def _render(variables, cfg, source, kp_src, kp_drv):
  return make_generator(cfg).apply(variables["generator"], source, kp_drv, kp_src)


def detect_keypoints(variables: dict, cfg, source: jax.Array) -> dict[str, jax.Array]:
  """source float32 [B,H,W,3] in [0,1] -> {'value': [B,K,2] (x,y) in [-1,1],
  'jacobian': [B,K,2,2]}."""
  return _detect(variables, cfg, jnp.asarray(source, jnp.float32))


def render(variables: dict, cfg, source: jax.Array, kp_src: dict, kp_drv: dict) -> dict:
  """Renders `source` moved from kp_src to kp_drv.

  Returns {'prediction': [B,H,W,3], 'occlusion_map': [B,h,w,1], 'mask': [B,h,w,K+1],
  'deformation': [B,h,w,2]} with (h, w) the dense-motion resolution (H/4 in vox-256), plus
  'deformed' [B,H,W,3] (source warped by the flow) and 'sparse_deformed' [B,K+1,h,w,3].
  """
  kp_src = {k: jnp.asarray(v, jnp.float32) for k, v in kp_src.items()}
  kp_drv = {k: jnp.asarray(v, jnp.float32) for k, v in kp_drv.items()}
  return _render(variables, cfg, jnp.asarray(source, jnp.float32), kp_src, kp_drv)
