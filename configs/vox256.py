r"""Paper scale: talking_videos at 256 px, FOMM's vox-256 renderer and schedule, stage B at full
width, laid out for accelerators (bf16 compute, data-parallel mesh).

Commands:
  python -m data.prepare --videos VIDEOS --out DATA --size 256         # talking_videos/256px
  python train.py --workdir W --config configs/vox256.py --config.data.data_dir=DATA
  python -m osmnet_jax.aot --config configs/vox256.py --topology tpu:v5e:4x4 --out W/aot \
      --modes dp,zero1,fsdp          # zero1: config.mesh.shard_optimizer=True
  python -m osmnet_jax.aot --config configs/vox256.py --topology cuda:h100:1x1x8

Expected resources: the compiled-for-target fit and step-time report of every stage (memory per
chip, max batch per chip, predicted step time and MFU) is `python -m osmnet_jax.aot` above;
the numbers for v5e 8/64/256 chips and H100 8/64 are in benchmarks/results/aot.md. Not meant
for a CPU (a 256-px renderer train step is seconds per example there).

Renderer schedule [FOMM vox-256.yaml]: 100 epochs of 75 repeats over the train clips, Adam
2e-4 (0.5, 0.999), lr x0.1 after epochs 60 and 90, perceptual pyramid (1, 1/2, 1/4, 1/8) with
VGG weight 10 per layer, equivariance 10/10, no GAN. Epochs are converted to steps with
`TRAIN_CLIPS` (set it to your train split's clip count) and the global batch.
Stage B sizes are [ours] (the paper gives none): every width x4 of the CPU default.
"""
from configs import renderer_vox256

TRAIN_CLIPS = 18_000   # [ours] a VoxCeleb1-sized train split; set to yours
FOMM_EPOCHS, FOMM_REPEATS, FOMM_MILESTONES = 100, 75, (60, 90)


def get_config():
  c = renderer_vox256.get_config()  # FOMM's vox-256 renderer architecture and objective
  c.stages = ("data", "renderer", "motion", "expression")

  c.data.name = "talking_videos"
  c.data.builder_config = "256px"
  c.data.shuffle_buffer = 4096
  c.data.augment = ("color",)
  c.data.prefetch = 4

  # Global batch over all chips; the aot report gives the largest per-chip batch that fits.
  # 256 is 32 per chip on 8 chips: there Adam's update and the gradient's collectives, fixed
  # per step, are spread over 4x the examples of 8 per chip (v5e predicted MFU: BENCHMARKS.md
  # "32 per chip: the fixed costs amortised" and the section after it).
  c.batch_size = 256
  c.parallel = "jit"
  # Data parallel: the renderer has ~60 M params (~1 GiB with Adam), far below HBM, and FSDP
  # would all-gather every weight in every step (the aot report compares both layouts).
  # shard_optimizer=True (ZeRO-1, runtime/zero1.py) is faster on 4 v5e chips (53.8 vs 54.8 ms
  # predicted) and on 8 H100s, but not on 256 v5e chips, where the compiler reduces the float32
  # gradient with an all-reduce (55.9 vs 55.3 ms): BENCHMARKS.md "ZeRO-1 as an explicit
  # shard_map step". It saves 0.2-0.5 GiB per chip where memory binds.
  c.mesh.update({"data": -1, "fsdp": 1, "shard_optimizer": False})
  c.log_every = 100

  epoch_steps = FOMM_REPEATS * TRAIN_CLIPS // c.batch_size
  c.renderer.train.lr_milestones = tuple(m * epoch_steps for m in FOMM_MILESTONES)
  c.renderer.steps = FOMM_EPOCHS * epoch_steps
  c.renderer.save_every = epoch_steps
  c.renderer.grid_every = 1000
  # bf16 compute (float32 params, BatchNorm stats, losses, Adam): the MXU / tensor-core rate.
  c.renderer.compute_dtype = "bfloat16"
  c.renderer.remat = False
  c.renderer.sample_clips = 4

  c.motion.update(dict(
      num_frames=32, batch_size=256, num_steps=100_000, lr=1e-3, warmup_steps=2000,
      log_every=100, save_every=5000, image_size=256, audio_dim=256,
      audio_channels=(32, 64, 128), hidden=256, depth=4, num_bases=32, motion_dim=256,
      rhythm_dim=64, compute_dtype="bfloat16", remat=False))

  c.expression.update(dict(
      num_frames=16, batch_size=128, num_steps=100_000, lr=5e-4, warmup_steps=2000,
      log_every=100, save_every=5000, expression_dim=128, audio_dim=256,
      audio_channels=(32, 64, 128), identity_dim=256, identity_channels=(32, 64, 128, 256),
      temporal_layers=4, landmark_hidden=512, landmark_depth=3, kp_hidden=512,
      kp_temporal_layers=2, kp_head_depth=3, eval_batch=64, compute_dtype="bfloat16",
      remat=False))
  return c
