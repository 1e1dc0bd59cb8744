r"""Renderer train step: float32 / bf16 compute x remat off / on, side by side in one run.

  python benchmarks/bench_precision_remat.py --resolution 64 128 --batch 4 --repeats 5 \
      [--model tiny|vox256] [--objective train_step|modules] [--out FILE.md]

For each resolution and each of the four modes: the full renderer train step (KP detector x3,
generator with dense motion, perceptual VGG pyramid, equivariance, Adam; `jax.jit` with the
state donated, one device) is lowered and compiled (compile time), XLA's memory analysis of the
compiled step is read (`compiled.memory_analysis()`: argument / output / temp bytes; peak
estimate = argument + output - aliased + temp), then the step runs once to warm up and
`--repeats` more times (median wall time per step, ratio to the float32 / no-remat baseline of
the same resolution). All modes start from the same initial state and see the same batch;
"loss after" is the total loss of the last timed step (after 1 + repeats updates).
`--objective modules` times/measures only the gradient of a simple loss through the KP detector
(twice) and the generator plus an SGD update, without the VGG pyramid and Adam (the renderer
modules' own activations, where remat of the hourglasses can show). Prints a markdown table
(and writes it to --out when given). Measured CPU results and their reading:
benchmarks/results/precision_remat.md (on XLA:CPU remat compiles to the same program).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MODES = (("float32", False), ("float32", True), ("bfloat16", False), ("bfloat16", True))


def _cpu_model() -> str:
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
      if line.startswith("Model name:"):
        return line.split(":", 1)[1].strip()
  except (OSError, subprocess.CalledProcessError):
    pass
  return platform.processor() or "unknown"


def _modules_grad_fn(mcfg):
  """grad of an L1 reconstruction + keypoint loss through KP(source), KP(driving) and the
  generator (train-mode BatchNorm), without the VGG pyramid and Adam: the renderer modules'
  own activation memory, where the hourglasses' share is largest."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from osmnet_jax import renderer  # pylint: disable=g-import-not-at-top

  kp_mod = renderer.make_kp_detector(mcfg, train=True)
  gen_mod = renderer.make_generator(mcfg, train=True)

  def loss_fn(params, stats, batch):
    src = batch["source"].astype(jnp.float32) / 255  # [B,H,W,3]
    drv = batch["driving"].astype(jnp.float32) / 255
    kp_s, u = kp_mod.apply({"params": params["kp_detector"], "batch_stats": stats["kp_detector"]},
                           src, mutable=["batch_stats"])
    kp_d, u = kp_mod.apply({"params": params["kp_detector"], "batch_stats": u["batch_stats"]},
                           drv, mutable=["batch_stats"])
    out, _ = gen_mod.apply({"params": params["generator"], "batch_stats": stats["generator"]},
                           src, kp_d, kp_s, mutable=["batch_stats"])
    return jnp.mean(jnp.abs(out["prediction"] - drv)) + jnp.mean(kp_d["value"] ** 2)

  def step(state, batch, rng):
    del rng
    loss, grads = jax.value_and_grad(loss_fn)(state["params"], state["stats"], batch)
    params = jax.tree.map(lambda p, g: p - 1e-3 * g, state["params"], grads)  # plain SGD
    return {"params": params, "stats": state["stats"]}, {"total": loss}

  return step


def bench_one(stage_cls, mcfg, state0, batch, repeats: int, objective: str) -> dict:
  import jax  # pylint: disable=g-import-not-at-top

  if objective == "train_step":
    stage = stage_cls(mcfg, backbone=(state0[1].vgg, state0[1]._vgg_vars))  # pylint: disable=protected-access
    fn, state = stage.train_step, state0[0]
  else:  # "modules": grads of the modules' loss and an SGD update
    fn = _modules_grad_fn(mcfg)
    state = {"params": state0[0].params, "stats": state0[0].batch_stats}
  step = jax.jit(fn, donate_argnums=(0,))
  # A fresh copy of the initial state per mode (the step donates its input state).
  state = jax.tree.map(lambda x: x.copy(), state)
  rng = jax.random.PRNGKey(1)
  t = time.perf_counter()
  compiled = step.lower(state, batch, rng).compile()
  compile_s = time.perf_counter() - t
  mem = compiled.memory_analysis()
  arg, out, tmp = mem.argument_size_in_bytes, mem.output_size_in_bytes, mem.temp_size_in_bytes
  r = {"compile_s": compile_s, "arg_mb": arg / 2**20, "out_mb": out / 2**20,
       "temp_mb": tmp / 2**20, "peak_mb": (arg + out - mem.alias_size_in_bytes + tmp) / 2**20}
  if repeats == 0:  # compile time and memory only
    return r | {"median_s": float("nan"), "min_s": float("nan"), "loss": float("nan")}
  state, m = compiled(state, batch, rng)  # warm-up
  jax.block_until_ready((state, m))
  times = []
  for i in range(repeats):
    t = time.perf_counter()
    state, m = compiled(state, batch, jax.random.fold_in(rng, i))
    jax.block_until_ready((state, m))
    times.append(time.perf_counter() - t)
  return r | {"median_s": statistics.median(times), "min_s": min(times), "loss": float(m["total"])}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--resolution", type=int, nargs="+", default=[64, 128])
  p.add_argument("--batch", type=int, default=4)
  p.add_argument("--repeats", type=int, default=5, help="timed steps; 0: compile + memory only")
  p.add_argument("--model", default="tiny", choices=["tiny", "vox256"])
  p.add_argument("--objective", default="train_step", choices=["train_step", "modules"],
                 help="train_step: the full stage step; modules: grads of KP x2 + generator only")
  p.add_argument("--out", default="", help="write the markdown table here too")
  args = p.parse_args()

  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from osmnet_jax import renderer  # pylint: disable=g-import-not-at-top
  from osmnet_jax.stages import renderer_step as renderer_stage  # pylint: disable=g-import-not-at-top

  maker = {"tiny": renderer.tiny_config, "vox256": renderer.vox256_config}[args.model]
  dev = jax.devices()[0]
  lines = [
      f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; device: "
      f"{dev.platform} ({dev.device_kind}); nproc {os.cpu_count()}; CPU {_cpu_model()}; "
      f"jax {jax.__version__}",
      f"command: python benchmarks/bench_precision_remat.py --resolution "
      f"{' '.join(map(str, args.resolution))} --batch {args.batch} --repeats {args.repeats} "
      f"--model {args.model} --objective {args.objective}",
      "",
      "| px | compute | remat | median step s | ratio | min s | compile s | temp MB | "
      "argument MB | output MB | peak est. MB | loss after |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  print("\n".join(lines), flush=True)
  for res in args.resolution:
    cfg32 = maker()
    stage32 = renderer_stage.RendererStage(cfg32)
    state0 = stage32.init_state(jax.random.PRNGKey(0), res)
    rs = np.random.RandomState(0)
    batch = {k: rs.randint(0, 256, (args.batch, res, res, 3)).astype(np.uint8)
             for k in ("source", "driving")}
    base = None
    for dtype, remat in MODES:
      mcfg = maker()
      mcfg.compute_dtype, mcfg.remat = dtype, remat
      r = bench_one(renderer_stage.RendererStage, mcfg, (state0, stage32), batch, args.repeats,
                    args.objective)
      base = base or r["median_s"]
      row = (f"| {res} | {dtype} | {'on' if remat else 'off'} | {r['median_s']:.3f} | "
             f"{r['median_s'] / base:.2f} | {r['min_s']:.3f} | {r['compile_s']:.1f} | "
             f"{r['temp_mb']:.1f} | {r['arg_mb']:.1f} | {r['out_mb']:.1f} | {r['peak_mb']:.1f} | "
             f"{r['loss']:.3f} |")
      lines.append(row)
      print(row, flush=True)
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
  main()
