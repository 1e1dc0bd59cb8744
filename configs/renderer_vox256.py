r"""Renderer only, FOMM's vox-256 architecture and objective (paper scale; needs an accelerator).

  python train.py --workdir runs/vox256 --config configs/renderer_vox256.py

synth_talk at 128 px (its largest); for real 256-px videos set --config.data.name=talking_videos
--config.data.data_dir=DIR. Results: BENCHMARKS.md.
"""
from configs import default
from osmnet_jax import renderer


def get_config():
  c = default.get_config()
  c.stages = ("renderer",)
  c.data.builder_config = "128px"
  r = c.renderer
  r.kp_detector.block_expansion = 32
  r.kp_detector.max_features = 1024
  r.kp_detector.num_blocks = 5
  r.kp_detector.scale_factor = 0.25   # FOMM's (configs/default.py uses 0.5 at 64 px)
  r.generator.block_expansion = 64
  r.generator.max_features = 512
  r.generator.num_bottleneck_blocks = 6
  r.generator.output_blend = "none"
  # FOMM's dense motion network exactly: its K+1 motions, without the default's landmark spline
  # (whose fields the FOMM configs and converters do not carry; absent means "none").
  r.generator.dense_motion_params = renderer.vox256_config().generator.dense_motion_params
  r.discriminator.block_expansion = 32
  r.discriminator.max_features = 512
  r.discriminator.num_blocks = 4
  r.train.lr_generator = 2e-4
  r.train.lr_kp_detector = 2e-4
  r.train.lr_discriminator = 2e-4
  r.train.scales = (1.0, 0.5, 0.25, 0.125)
  # FOMM's objective: the landmark terms [ours] of configs/default.py off.
  r.train.loss_weights.update(keypoint_anchor=0.0, keypoint_motion=0.0, flow_anchor=0.0,
                             mask_background=0.0, mask_anchor=0.0, mouth=0.0,
                             heatmap_peak=0.0, heatmap_anchor=0.0)
  # FOMM's step: no second dense-motion pass.
  r.train.mask_anchor_detach_kp = r.train.mask_background_detach_kp = False
  return c
