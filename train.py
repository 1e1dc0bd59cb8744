r"""Train osmnet_jax: mesh -> data -> stages (each: model, optimizer, step, checkpoint, loop).

  python train.py --workdir runs/demo                       # embedded default (configs/default.py)
  python train.py --workdir W --config configs/X.py --config.batch_size=16 --config.parallel=pmap

Writes into W: config.json, pose_stats.json (the train poses' mean/std, for generation), tb/
(TensorBoard events), data_check.json and, per trained stage,
checkpoints/<stage>/ (orbax; a rerun resumes from them). Stages run in ``config.stages`` order;
the last default stage, "joint", fine-tunes the trained expression stage through the frozen
renderer; alone it runs with --config.stages="('joint',)" on a workdir whose expression stage is
trained.
Multi-host: set JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID (or the flags
below); every process runs this same command.

Console: progress bars and one-line stage summaries; library INFO logs (orbax, TFDS) only with
--verbosity=1. Invalid config values exit 2 with the field and its valid range before anything
trains; Ctrl-C exits 130 after in-flight checkpoint saves finish (rerun to resume).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time

from osmnet_jax.runtime import accelerator_probe, xla_cpu_tuning

xla_cpu_tuning.apply()  # XLA:CPU options, before JAX starts (osmnet_jax/runtime/xla_cpu_tuning.py)
accelerator_probe.apply()  # CPU-only machine with accelerator plugins: the CPU, no tracebacks

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None,
                    "Directory for config.json, checkpoints, TensorBoard, samples.")
config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "default.py"),
    "ml_collections config file; override fields with --config.key=value.", lock_config=True)
flags.DEFINE_string("coordinator", "", "Multi-host: coordinator host:port (else from env).")
flags.DEFINE_integer("num_processes", 0, "Multi-host: number of processes.")
flags.DEFINE_integer("process_id", -1, "Multi-host: this process's id.")
flags.mark_flag_as_required("workdir")


def run_data_check(cfg, builder, mesh, workdir, writer) -> dict:
  """Stage "data": pull ``cfg.data_check_steps`` batches onto the devices; report shapes and
  rate."""
  import jax
  import numpy as np
  from tqdm.auto import tqdm

  from osmnet_jax.input import pipeline as input_pipeline
  from osmnet_jax.runtime import sharding

  per_process = sharding.check_batch_size(cfg.batch_size, mesh)
  ds = input_pipeline.make_dataset(
      builder, "train", per_process, cfg.data.num_frames, seed=cfg.seed,
      shuffle_buffer=cfg.data.shuffle_buffer, augment=tuple(cfg.data.augment))
  it = input_pipeline.DeviceIterator(ds, mesh, layout=cfg.parallel, prefetch=cfg.data.prefetch)
  batch = next(it)  # first batch includes tf.data start-up; not timed
  jax.block_until_ready(batch)
  shapes = {k: f"{v.dtype}{list(v.shape)}" for k, v in batch.items()}
  for k, s in shapes.items():
    logging.info("batch[%s] = %s", k, s)
  t0 = time.perf_counter()
  for _ in tqdm(range(cfg.data_check_steps), desc="data check", disable=jax.process_index() != 0):
    batch = next(it)
    jax.block_until_ready(batch)
  dt = time.perf_counter() - t0
  it.close()
  clips_per_s = cfg.data_check_steps * cfg.batch_size / dt
  report = {"batch_shapes": shapes, "clips_per_s": clips_per_s,
            "frames_per_s": clips_per_s * cfg.data.num_frames, "steps": cfg.data_check_steps,
            "layout": cfg.parallel, "devices": jax.device_count(),
            "frames_uint8_mb_per_batch": float(np.prod(batch["frames"].shape)) / 2**20}
  logging.info("input pipeline: %.1f clips/s (%.1f frames/s) on %d device(s)",
               clips_per_s, report["frames_per_s"], jax.device_count())
  if writer is not None:
    writer.add_scalar("data/clips_per_s", clips_per_s, 0)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "data_check.json"), "w") as f:
      json.dump(report, f, indent=2)
  return report


def run_renderer(cfg, builder, mesh, workdir, writer) -> dict:
  """Stage "renderer": FOMM-compatible stage A (osmnet_jax/stages/renderer.py)."""
  from osmnet_jax.stages import renderer as renderer_train

  return renderer_train.run_renderer(cfg, builder, mesh, workdir, writer)


def run_motion(cfg, builder, mesh, workdir, writer) -> dict:
  """Stage "motion": the clip-level motion space (osmnet) and the pose baselines.

  Trains each model named in ``cfg.motion_models`` in turn (osmnet_jax/stages/motion.py);
  each gets checkpoints/motion_<model>/ with its residual spread in sigma.json."""
  import ml_collections

  from osmnet_jax.stages import motion as motion_stage

  results = {}
  for model in cfg.motion_models:
    one = ml_collections.ConfigDict(cfg.to_dict())  # cfg is locked; a copy per model
    one.motion.model = model
    results[model] = motion_stage.run_motion(one, builder, mesh, workdir, writer)
  return results


def run_expression(cfg, builder, mesh, workdir, writer) -> dict:
  """Stage "expression": audio -> expression + landmarks -> driving keypoints, rendered by the
  stage-A renderer checkpoint of this workdir (osmnet_jax/stages/expression.py)."""
  from osmnet_jax.stages import expression as expression_stage

  return expression_stage.run_expression(cfg, builder, mesh, workdir, writer)


def run_joint(cfg, builder, mesh, workdir, writer) -> dict:
  """Optional stage "joint": the expression stage's models fine-tuned with the pixel loss
  through the frozen renderer (osmnet_jax/stages/joint.py)."""
  from osmnet_jax.stages import joint

  return joint.run_joint(cfg, builder, mesh, workdir, writer)


STAGES = {"data": run_data_check, "renderer": run_renderer, "motion": run_motion,
          "expression": run_expression, "joint": run_joint}


class _Exit(Exception):
  """A clean exit: ``message`` on stderr, exit status ``code`` (no traceback)."""

  def __init__(self, message: str, code: int = 2):
    super().__init__(message)
    self.code = code


def _prepare_workdir(path: str) -> str:
  """Absolute workdir, created and checked writable (a clear message instead of a traceback)."""
  workdir = os.path.abspath(path)
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.TemporaryFile(dir=workdir):
      pass
  except OSError as e:
    raise _Exit(f"--workdir {workdir} is not writable ({e.strerror or e}); choose a directory "
                "you can write to") from e
  return workdir


def train(cfg, workdir_flag: str) -> None:
  """Checks, devices, workdir, data, then the stages in order."""
  from osmnet_jax.stages import config_check

  try:
    config_check.check(cfg)
  except config_check.ConfigError as e:
    raise _Exit(str(e)) from e

  # --- Devices: multi-host start-up and the mesh.
  from osmnet_jax.runtime import sharding

  sharding.maybe_initialize_distributed(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)
  import jax

  mesh = sharding.make_mesh(cfg.mesh.data, cfg.mesh.fsdp)
  try:
    config_check.check_devices(cfg, mesh)
  except config_check.ConfigError as e:
    raise _Exit(str(e)) from e
  logging.info("process %d/%d, devices %s, mesh %s", jax.process_index(), jax.process_count(),
               jax.devices(), dict(mesh.shape))

  # --- Workdir: config.json and TensorBoard (process 0 writes).
  workdir = _prepare_workdir(workdir_flag)
  writer = None
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(cfg.to_json_best_effort(indent=2))
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(os.path.join(workdir, "tb"))

  # --- Data: a prepared TFDS builder (synth_talk is built on first use).
  from osmnet_jax.input import datasets

  try:
    builder = datasets.get_builder(cfg.data)
  except FileNotFoundError as e:
    raise _Exit(str(e)) from e
  logging.info("dataset %s: %s", builder.info.full_name,
               {k: v.num_examples for k, v in builder.info.splits.items()})
  if jax.process_index() == 0:  # generation de-normalises poses with these (no dataset needed)
    from osmnet_jax.input import pipeline as input_pipeline

    mean, std = input_pipeline.pose_stats(builder)
    with open(os.path.join(workdir, "pose_stats.json"), "w") as f:
      json.dump({"mean": mean.tolist(), "std": std.tolist(), "dataset": builder.info.full_name},
                f, indent=2)

  # --- Stages, in order.
  try:
    for stage in cfg.stages:
      logging.info("=== stage %s ===", stage)
      STAGES[stage](cfg, builder, mesh, workdir, writer)
  finally:
    if writer is not None:
      writer.close()


def main(argv):
  del argv
  from osmnet_jax.runtime import logs
  from osmnet_jax.stages import loop

  logs.quiet_library_logs(FLAGS.verbosity)
  try:
    train(FLAGS.config, FLAGS.workdir)
  except _Exit as e:
    print(f"train.py: {e}", file=sys.stderr)
    sys.exit(e.code)
  except loop.Interrupted as e:
    print(f"{e.name}: interrupted at step {e.step}; rerun the same command to resume",
          file=sys.stderr)
    sys.exit(130)
  except KeyboardInterrupt:
    print("interrupted; rerun the same command to resume", file=sys.stderr)
    sys.exit(130)


if __name__ == "__main__":
  app.run(main)
