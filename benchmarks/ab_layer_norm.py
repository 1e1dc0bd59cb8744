r"""A/B of the audio encoder's LayerNorm in the motion-stage train step, one process, alternating.

  python benchmarks/ab_layer_norm.py --batches 16,32 --repeats 7

Compiles the default-config motion step twice — once with flax's ``nn.LayerNorm`` in
``AudioEncoder`` (what the code used before nn/layer_norm.py), once with
``osmnet_jax.nn.layer_norm.LayerNorm`` (hand-written VJP) — and times them alternately
(``--repeats`` x 5 steps, median), so machine drift hits both alike. Prints the step times, the
speed-up and each compiled step's XLA temp memory.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from osmnet_jax.runtime import xla_cpu_tuning  # noqa: E402

xla_cpu_tuning.apply()  # what train.py runs with


def build(ln_cls, batch: int):
  import jax
  import numpy as np

  from configs import default
  from osmnet_jax.models import audio_encoder
  from osmnet_jax.stages import motion as motion_stage

  audio_encoder.LayerNorm = ln_cls  # resolved when the step is traced (below)
  mcfg = default.get_config().motion
  mcfg.batch_size = batch
  stage = motion_stage.MotionStage(mcfg)
  state = stage.init_state(jax.random.PRNGKey(0))
  r = np.random.RandomState(0)
  t = mcfg.num_frames
  b = {"mel": (r.randn(batch, t, 20, 80) * 4.5 - 7).astype(np.float32),
       "pose": r.randn(batch, t, 6).astype(np.float32)}
  key = jax.random.PRNGKey(0)
  compiled = jax.jit(stage.train_step, donate_argnums=0).lower(state, b, key).compile()
  mem = compiled.memory_analysis()
  holder = {"state": state}

  def step():
    holder["state"], m = compiled(holder["state"], b, key)
    jax.block_until_ready(m)

  step()
  step()
  return step, (getattr(mem, "temp_size_in_bytes", 0) or 0) / 2**20


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--batches", default="16,32")
  p.add_argument("--repeats", type=int, default=7)
  args = p.parse_args(argv)
  import flax.linen as nn

  from osmnet_jax.models import audio_encoder
  from osmnet_jax.nn import layer_norm

  original = audio_encoder.LayerNorm
  try:
    for batch in (int(b) for b in args.batches.split(",")):
      variants = {"flax nn.LayerNorm": build(nn.LayerNorm, batch),
                  "nn/layer_norm.py": build(layer_norm.LayerNorm, batch)}
      times = {k: [] for k in variants}
      for _ in range(args.repeats):
        for k, (step, _) in variants.items():
          t0 = time.perf_counter()
          for _ in range(5):
            step()
          times[k].append((time.perf_counter() - t0) / 5 * 1e3)
      med = {k: statistics.median(v) for k, v in times.items()}
      print(f"motion batch {batch}: " + ", ".join(
          f"{k} {med[k]:.1f} ms (XLA temp {variants[k][1]:.0f} MiB)" for k in variants)
            + f"; speed-up {med['flax nn.LayerNorm'] / med['nn/layer_norm.py']:.3f}", flush=True)
  finally:
    audio_encoder.LayerNorm = original


if __name__ == "__main__":
  main()
