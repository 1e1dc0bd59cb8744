r"""Benchmark: synth_talk build time and input-pipeline throughput (clips/s, frames/s).

  python benchmarks/bench_data.py [--config 64px] [--repeats 3] [--steps 100] [--batch 16]

Builds synth_talk/<config> into a fresh temporary TFDS dir (timed once per repeat), then pulls
``--steps`` batches of T-frame windows through make_dataset + DeviceIterator (jit layout, all
local devices) and reports the median over repeats. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # noqa: E501
  p.add_argument("--config", default="64px")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--steps", type=int, default=100)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--num_frames", type=int, default=5)
  args = p.parse_args()

  import jax

  from data.synth_talk import builder as synth
  from osmnet_jax.input import pipeline as input_pipeline
  from osmnet_jax.runtime import sharding

  build_s, clips_s = [], []
  mesh = sharding.make_mesh()
  for r in range(args.repeats):
    with tempfile.TemporaryDirectory() as d:
      t0 = time.perf_counter()
      b = synth.build(args.config, d)
      build_s.append(time.perf_counter() - t0)
      ds = input_pipeline.make_dataset(b, "train", args.batch, args.num_frames, seed=r)
      it = input_pipeline.DeviceIterator(ds, mesh)
      jax.block_until_ready(next(it))
      t0 = time.perf_counter()
      for _ in range(args.steps):
        jax.block_until_ready(next(it))
      clips_s.append(args.steps * args.batch / (time.perf_counter() - t0))
      it.close()
  n_clips = b.info.splits["train"].num_examples + b.info.splits["test"].num_examples
  print(json.dumps({
      "benchmark": "data", "config": args.config, "clips_built": n_clips,
      "build_s_median": statistics.median(build_s), "build_s_all": build_s,
      "pipeline_clips_per_s_median": statistics.median(clips_s), "pipeline_clips_per_s_all": clips_s,  # noqa: E501
      "pipeline_frames_per_s_median": statistics.median(clips_s) * args.num_frames,
      "batch": args.batch, "num_frames": args.num_frames, "devices": jax.device_count(),
      "machine": f"{platform.machine()} {os.cpu_count()} cpu", "date": time.strftime("%Y-%m-%d"),
  }))


if __name__ == "__main__":
  main()
