r"""Embedded default: synth_talk at 64 px, tiny model, every implemented stage, CPU-friendly.

Command:
  python train.py --workdir runs/demo                     # this config (the default)
  python train.py --workdir runs/demo --config configs/default.py --config.batch_size=16

What it does and writes today (see README "The main job"):
  builds synth_talk/64px into config.data.data_dir if missing (~30 s), checks the input pipeline
  (batch shapes, clips/s), then trains stage A (renderer, 800 steps) and stage B (motion: 3000
  steps; expression: 3000 steps) and writes W/config.json, W/pose_stats.json, W/tb/,
  W/checkpoints/{renderer,motion,expression}/, W/samples/renderer_reconstruction_0.mp4.
Expected runtime on a 2-core CPU: see README / BENCHMARKS.md "The main job" (measured
2026-11-23). Expected result: expression held-out mouth-opening correlation ~0.96; OSM-Net
head-motion diversity ~0.7x the true per-audio spread; renderer reconstruction better than
copying the source frame (held-out PSNR 24.3-25.8 vs 23.1 dB, LPIPS 0.042-0.044 vs 0.049 in two
runs), though large head tilts are still not reproduced.
"""
import ml_collections

from osmnet_jax.stages import expression as expression_stage
from osmnet_jax.stages import motion as motion_stage
from osmnet_jax.stages import renderer as renderer_train


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # Stages run in order. Known: "data" (input-pipeline check + throughput), "renderer" (stage A),
  # "motion" (motion space + baselines), "expression" (needs the renderer checkpoint or inits one).
  c.stages = ("data", "renderer", "motion", "expression")

  c.data = ml_collections.ConfigDict()
  c.data.name = "synth_talk"          # synth_talk | talking_videos
  c.data.builder_config = "64px"      # synth_talk: 32px | 64px | 128px
  c.data.data_dir = ""                # "" -> $TFDS_DATA_DIR or ~/tensorflow_datasets
  # synth_talk generator parameters; anything but these defaults builds a custom config
  # (named after the values) next to the standard ones.
  c.data.synth = ml_collections.ConfigDict(dict(
      num_train=200, num_test=32, seconds=2.0, num_train_ids=40, num_test_ids=8, seed=0))
  c.data.num_frames = 5               # window length T per example
  c.data.shuffle_buffer = 256
  c.data.augment = ()                 # names in input_pipeline.AUGMENTATIONS, e.g. ("color",)
  c.data.prefetch = 2

  c.batch_size = 8                    # global batch, split over all devices of all hosts
  c.parallel = "jit"                  # jit (Mesh + NamedSharding) | pmap
  # fsdp > 1: the renderer's params and Adam moments are split over that axis (jit only).
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1})

  c.data_check_steps = 50             # batches timed by the "data" stage
  c.log_every = 10

  # Stage A: the FOMM-compatible renderer (tiny model on CPU; "vox256" = paper scale).
  c.renderer = renderer_train.renderer_train_config()
  c.renderer.model = "tiny"
  # 64-px frames: the VGG pyramid stops at 1/4 (16 px); FOMM's 1/8 needs >= 128 px.
  # CPU budget [ours]: lr 1e-3 (FOMM 2e-4) and output_blend="occlusion" (visible pixels come from
  # the source warped at full resolution; models/generator.py) — with FOMM's settings 300-500
  # steps give a blurred face worse than copying the source (BENCHMARKS.md). Drop both
  # overrides for FOMM's exact objective and architecture.
  c.renderer.overrides = {"train": {"scales": (1.0, 0.5, 0.25), "lr_generator": 1e-3,
                                    "lr_kp_detector": 1e-3, "lr_discriminator": 1e-3},
                          "generator": {"output_blend": "occlusion"}}
  c.renderer.steps = 800
  c.renderer.save_every = 200
  # "bfloat16": convs/activations in bf16; params, BatchNorm stats, losses, Adam stay float32.
  # remat: recompute the hourglass blocks in the backward pass (less activation memory). CPU
  # numbers: benchmarks/results/precision_remat.md (bf16 pays off on GPU/TPU, not on CPU).
  c.renderer.compute_dtype = "float32"
  c.renderer.remat = False

  # Stage B, head motion: each model here is trained by the "motion" stage, one after another.
  # Baselines: "audio2pose_lstm" (one-to-one) and "noise_sampler" (FONT-style noise input).
  c.motion_models = ("osmnet",)
  c.motion = motion_stage.motion_config()

  # Stage B, expression + keypoint predictor over the frozen renderer.
  c.expression = expression_stage.expression_config()
  c.expression.num_steps = 3000
  return c
