r"""Renderer train-step cost of whole configs, side by side in one run: what a config's renderer
stage will cost on this machine, as a ratio to a config whose wall time is known.

  python benchmarks/bench_config_step.py                          # default vs quality
  python benchmarks/bench_config_step.py --configs default,quality --repeats 5 --steps 2
  python benchmarks/bench_config_step.py \
      --configs default,default@renderer.train.mask_anchor_detach_kp=True   # one field changed

An entry NAME@KEY=VALUE[@KEY=VALUE...] is configs/NAME with those fields set (VALUE a Python
literal), for the cost of one option side by side with the config without it.

Each config's renderer (its widths, scale factors, loss terms, perceptual pyramid) is built as
train.py builds it, at the config's frame size and global batch, and its jitted train step is
run on random frames with plausible landmarks (the landmark terms need them; their values do
not change the cost). The configs alternate inside every repeat so machine noise hits all alike.
Reported per config: compile seconds, median seconds per step, the ratio to the first config,
and the estimated renderer stage wall (config steps x median step), which is only as good as the
step time: data loading, checkpoints and sample grids are not counted.
"""
from __future__ import annotations

import argparse
import ast
import datetime
import importlib
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from osmnet_jax.runtime import xla_cpu_tuning  # noqa: E402

xla_cpu_tuning.apply()  # what train.py runs with

import bench_train_step as bts  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from osmnet_jax.stages import renderer_step  # noqa: E402


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--configs", default="default,quality",
                 help="comma-separated module names under configs/ (the first is the reference); "
                      "NAME@KEY=VALUE sets a field of that config")
  p.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
  p.add_argument("--steps", type=int, default=2, help="train steps per config per repeat")
  p.add_argument("--out", default="", help="append the rows as JSON lines to this file")
  return p.parse_args(argv)


def image_size(cfg) -> int:
  """synth_talk's builder config '64px' -> 64 (the frame size the renderer stage trains at)."""
  name = str(cfg.data.builder_config)
  if not name.endswith("px") or not name[:-2].isdigit():
    raise ValueError(f"config.data.builder_config={name!r}: expected 'NNpx' (synth_talk)")
  return int(name[:-2])


def random_batch(rng: np.random.Generator, batch: int, size: int) -> dict:
  """uint8 frames [B,S,S,3] and landmarks [B,68,2] scattered over the middle of the frame."""
  frames = rng.integers(0, 256, (2, batch, size, size, 3), dtype=np.uint8)
  marks = rng.uniform(0.25 * size, 0.75 * size, (2, batch, 68, 2)).astype(np.float32)
  return {"source": frames[0], "driving": frames[1],
          "source_landmarks": marks[0], "driving_landmarks": marks[1]}


def load_config(spec: str):
  """'NAME' or 'NAME@KEY=VALUE@...' -> configs/NAME's get_config() with those fields set."""
  name, *overrides = spec.split("@")
  cfg = importlib.import_module(f"configs.{name}").get_config()
  for item in overrides:
    key, sep, value = item.partition("=")
    if not sep:
      raise ValueError(f"--configs entry {spec!r}: override {item!r} needs KEY=VALUE")
    *path, leaf = key.split(".")
    node = cfg
    for part in path:
      node = node[part]
    node[leaf] = ast.literal_eval(value)  # ConfigDict refuses a value of another type
  return cfg


class Runner:
  """One config's compiled step, state and batch."""

  def __init__(self, spec: str, rng: np.random.Generator):
    cfg = load_config(spec)
    self.name, self.size, self.batch_size = spec, image_size(cfg), int(cfg.batch_size)
    self.total_steps = int(cfg.renderer.steps)
    stage = renderer_step.RendererStage(cfg.renderer)
    self.state = stage.init_state(jax.random.PRNGKey(0), self.size)
    self.batch = random_batch(rng, self.batch_size, self.size)
    self.step, self.compile_s, _ = bts.compile_step(
        jax.jit(stage.train_step, donate_argnums=0), self.state, self.batch,
        jax.random.PRNGKey(1))
    self.times: list[float] = []

  def run(self, steps: int) -> None:
    t0 = time.perf_counter()
    for i in range(steps):
      self.state, metrics = self.step(self.state, self.batch, jax.random.PRNGKey(i))
    jax.block_until_ready(metrics["total"])
    self.times.append((time.perf_counter() - t0) / steps)


def main(argv=None) -> list[dict]:
  args = parse_args(argv)
  rng = np.random.default_rng(0)
  runners = [Runner(n.strip(), rng) for n in args.configs.split(",") if n.strip()]
  for r in runners:
    r.run(1)  # warm-up (first call after compile allocates)
    r.times.clear()
  for _ in range(args.repeats):
    for r in runners:
      r.run(args.steps)
  ref = statistics.median(runners[0].times)
  rows = []
  for r in runners:
    med = statistics.median(r.times)
    rows.append({
        "date": datetime.date.today().isoformat(), "config": r.name, "image_size": r.size,
        "batch": r.batch_size, "compile_s": round(r.compile_s, 1), "step_s": round(med, 3),
        "ratio_to_first": round(med / ref, 2), "renderer_steps": r.total_steps,
        "est_renderer_min": round(r.total_steps * med / 60, 1),
        "devices": f"{jax.device_count()} x {jax.devices()[0].platform}",
    })
  print("| config | frames | batch | compile s | s / step (median) | x first | renderer steps | "
        "est. renderer stage |")
  print("|---|---:|---:|---:|---:|---:|---:|---:|")
  for row in rows:
    print(f"| {row['config']} | {row['image_size']} px | {row['batch']} | {row['compile_s']} | "
          f"{row['step_s']} | {row['ratio_to_first']} | {row['renderer_steps']} | "
          f"{row['est_renderer_min']} min |")
  if args.out:
    with open(args.out, "a") as f:
      for row in rows:
        f.write(json.dumps(row) + "\n")
  return rows


if __name__ == "__main__":
  main()
