r"""Train the motion stage (OSM-Net and the two pose baselines) on synth_talk and evaluate it.

  python -m data.synth_talk --config 64px --data_dir /tmp/tfds_motion
  python benchmarks/bench_motion.py --workdir /tmp/motion_run --data_dir /tmp/tfds_motion \
      --models osmnet,audio2pose_lstm,noise_sampler --steps 3000

Does what ``train.py`` does for the "motion" stage (same ``run_motion``), one model after the
other in one workdir (checkpoints/motion, checkpoints/motion_<baseline>), then writes
W/eval/motion_metrics.json with ``motion_eval.evaluate_motion`` and prints training times.
A rerun resumes / skips finished models (the train loop resumes from the checkpoints).
"""
from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

flags.DEFINE_string("workdir", None, "Output directory.")
flags.DEFINE_string("data_dir", "/tmp/tfds_motion", "TFDS data dir holding synth_talk/64px.")
flags.DEFINE_string("models", "osmnet,audio2pose_lstm,noise_sampler", "Comma-separated models.")
flags.DEFINE_integer("steps", 3000, "Training steps per model (motion_config default).")
flags.DEFINE_integer("num_samples", 8, "Samples per test audio in the evaluation.")
flags.DEFINE_integer("sigma_holdout_pct", 10, "Train clips held out for sigma (motion_config default).")  # noqa: E501
flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from configs import default
  from osmnet_jax.evaluation import motion as motion_eval
  from osmnet_jax.input import datasets
  from osmnet_jax.runtime import sharding
  from osmnet_jax.stages import motion as motion_stage

  cfg = default.get_config()
  cfg.data.data_dir = FLAGS.data_dir
  mesh = sharding.make_mesh()
  builder = datasets.get_builder(cfg.data)
  os.makedirs(FLAGS.workdir, exist_ok=True)
  report = {}
  for model in FLAGS.models.split(","):
    cfg.motion = default.get_config().motion
    cfg.motion.model = model
    cfg.motion.num_steps = FLAGS.steps
    cfg.motion.sigma_holdout_pct = FLAGS.sigma_holdout_pct
    t0 = time.perf_counter()
    out = motion_stage.run_motion(cfg, builder, mesh, FLAGS.workdir, None)
    report[model] = {"wall_s": time.perf_counter() - t0, "train_seconds": out["train_seconds"],
                     "steps": out["step"], "last_metrics": out["last_metrics"]}
    print(model, json.dumps(report[model]), flush=True)
  metrics = motion_eval.evaluate_motion(FLAGS.workdir, builder, FLAGS.num_samples)
  os.makedirs(os.path.join(FLAGS.workdir, "eval"), exist_ok=True)
  with open(os.path.join(FLAGS.workdir, "eval", "motion_metrics.json"), "w") as f:
    json.dump({"training": report, "metrics": metrics}, f, indent=2)
  print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
  app.run(main)
