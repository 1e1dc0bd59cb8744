r"""Renderer train-step throughput: JAX (jit) vs the PyTorch FOMM mirror, same machine, same run.

  python benchmarks/bench_train_step.py                       # tiny model, 64/128/256 px, batch 4/8
  python benchmarks/bench_train_step.py --model vox256 --resolutions 256 --batches 2 --repeats 3

Both sides run the same function (tests/test_renderer_train_torch.py checks losses, BatchNorm
statistics and gradients agree): keypoints of source and driving frames, the occlusion-aware
generator, the perceptual pyramid with a VGG19 (random weights, the same on both sides),
equivariance value + Jacobian under a random TPS, backward, Adam on detector and generator.
Frames/s counts driving frames (= batch size) per step. The two frameworks alternate inside every
repeat so machine noise hits both alike; the ratio is torch time / JAX time (> 1: JAX faster).
JAX also reports its compile time and XLA's memory analysis of the compiled step (temp +
arguments + outputs); torch reports its peak RSS growth over the run.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
from osmnet_jax.runtime import xla_cpu_tuning  # noqa: E402

xla_cpu_tuning.apply()  # what train.py runs with; OSMNET_XLA_CPU_TUNING=0 for XLA's defaults


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", default="tiny", choices=("tiny", "vox256"))
  p.add_argument("--resolutions", default="64,128,256", help="comma-separated image sizes")
  p.add_argument("--batches", default="4,8", help="comma-separated batch sizes")
  p.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
  p.add_argument("--steps", type=int, default=2, help="train steps per timed repeat")
  p.add_argument("--perceptual_layers", type=int, default=5, help="VGG19 relu levels used")
  p.add_argument("--out", default="", help="append the rows as JSON lines to this file")
  return p.parse_args(argv)


def cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def compile_step(step, state, batch, rng):
  """-> (executable, compile seconds, XLA temp + argument + output bytes or None)."""
  t0 = time.perf_counter()
  compiled = step.lower(state, batch, rng).compile()  # the executable the loop runs
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  mem_bytes = None
  if mem is not None:
    mem_bytes = int(mem.temp_size_in_bytes + mem.argument_size_in_bytes
                    + mem.output_size_in_bytes)
  return compiled, compile_s, mem_bytes


def time_alternating(jax_step, torch_step, repeats: int, steps: int) -> dict:
  """One warm-up step each, then ``repeats`` x ``steps`` steps, JAX and torch alternating so
  drift on a shared machine hits both -> median step seconds and peak RSS growth (MiB)."""
  rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  jax_step()  # warm-up: the compiled step's first call; torch's first step allocates
  torch_step()
  tj, tt = [], []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(steps):
      jax_step()
    tj.append((time.perf_counter() - t0) / steps)
    t0 = time.perf_counter()
    for _ in range(steps):
      torch_step()
    tt.append((time.perf_counter() - t0) / steps)
  return {"jax_step_s": statistics.median(tj), "torch_step_s": statistics.median(tt),
          "peak_rss_growth_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                  - rss0) / 1024}


def print_run_header(script: str, argv, torch_note: str = "") -> str:
  """Prints date, machine, versions, XLA_FLAGS and the command; returns the date stamp."""
  import jax
  import torch

  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  print(f"\n{stamp}; {cpu_name()}, {os.cpu_count()} cores; jax {jax.__version__} "
        f"({jax.default_backend()}), torch {torch.__version__}{torch_note}; XLA_FLAGS="
        f"{os.environ.get('XLA_FLAGS', '')!r}; command: python "
        f"benchmarks/{script} {' '.join(argv if argv is not None else sys.argv[1:])}")
  return stamp


def build(model: str, res: int, batch: int, layers: int, vgg_path: str):
  """-> (jax_step(), torch_step(), jax_info): each call runs one train step to completion."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch

  import torch_fomm
  from osmnet_jax import renderer
  from osmnet_jax.convert import fomm as convert
  from osmnet_jax.losses import equivariance, perceptual
  from osmnet_jax.stages import renderer_step as rs

  cfg = renderer.tiny_config() if model == "tiny" else renderer.vox256_config()
  # Pyramid levels that keep relu_{layers} non-empty: res * scale >= 2^(layers-1).
  cfg.train.scales = tuple(s for s in (1, 0.5, 0.25, 0.125) if res * s >= 2 ** (layers - 1))
  cfg.train.loss_weights.perceptual = (10.0,) * layers
  kp_t, gen_t = torch_fomm.build(cfg)
  torch_fomm.randomize_(kp_t, 0)
  torch_fomm.randomize_(gen_t, 1)
  variables, _ = convert.convert_fomm({"kp_detector": kp_t.state_dict(),
                                       "generator": gen_t.state_dict()})
  vgg_t = torch_fomm.VGG19Torchvision().eval()
  for p in vgg_t.parameters():
    p.requires_grad_(False)
  torch.save(vgg_t.state_dict(), vgg_path)

  # --- JAX: the training library's own jit step (donated state) on a one-device mesh.
  from osmnet_jax.runtime import sharding
  stage = rs.RendererStage(cfg, backbone=perceptual.make_backbone("vgg19", layers, vgg_path))
  mesh = sharding.make_mesh()
  state = jax.device_put(stage.state_from_variables(variables), sharding.replicated(mesh))
  step = stage.make_jit_step(mesh)
  r = np.random.RandomState(0)
  frames = (r.rand(2 * batch, res, res, 3) * 255).astype(np.uint8)
  batch_np = {"source": frames[:batch], "driving": frames[batch:]}
  batch_j = jax.device_put(batch_np, sharding.batch_sharding(mesh))
  rng = jax.random.PRNGKey(0)
  compiled, compile_s, mem_bytes = compile_step(step, state, batch_j, rng)
  holder = {"state": state}

  def jax_step():
    holder["state"], metrics = compiled(holder["state"], batch_j, rng)
    jax.block_until_ready(metrics["total"])

  # --- torch: the same objective (tests/torch_fomm.generator_full_loss) with Adam.
  kp_t.train()
  gen_t.train()
  opt = torch.optim.Adam(list(kp_t.parameters()) + list(gen_t.parameters()), lr=2e-4,
                         betas=(0.5, 0.999))
  tps = equivariance.random_tps(jax.random.fold_in(rng, 0), jnp.arange(batch),
                                **dict(cfg.train.transform_params))
  tt = torch_fomm.Transform(torch.from_numpy(np.array(tps["theta"])),
                            torch.from_numpy(np.array(tps["control_params"]))[:, None, :],
                            int(cfg.train.transform_params["points_tps"]))
  to_t = lambda x: torch.from_numpy(x.astype(np.float32).transpose(0, 3, 1, 2) / 255.0)
  src, drv = to_t(batch_np["source"]), to_t(batch_np["driving"])

  def torch_step():
    opt.zero_grad(set_to_none=True)
    loss = torch_fomm.generator_full_loss(kp_t, gen_t, vgg_t, src, drv, tt, cfg.train.scales,
                                          cfg.train.loss_weights.perceptual)["total"]
    loss.backward()
    opt.step()

  return jax_step, torch_step, {"compile_s": compile_s, "xla_memory_bytes": mem_bytes,
                                "compiled": compiled}


def main(argv=None):
  args = parse_args(argv)
  import torch

  torch.set_num_threads(os.cpu_count() or 1)  # both frameworks get every core
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for res in [int(x) for x in args.resolutions.split(",")]:
      for batch in [int(x) for x in args.batches.split(",")]:
        jax_step, torch_step, info = build(args.model, res, batch, args.perceptual_layers,
                                           os.path.join(tmp, "vgg19.pth"))
        t = time_alternating(jax_step, torch_step, args.repeats, args.steps)
        mj, mt = t["jax_step_s"], t["torch_step_s"]
        row = {"model": args.model, "res": res, "batch": batch, "jax_step_s": mj,
               "torch_step_s": mt, "jax_frames_per_s": batch / mj,
               "torch_frames_per_s": batch / mt, "ratio_torch_over_jax": mt / mj,
               "jax_compile_s": info["compile_s"],
               "jax_xla_memory_mib": (info["xla_memory_bytes"] or 0) / 2**20,
               "peak_rss_growth_mib": t["peak_rss_growth_mib"],
               "repeats": args.repeats, "steps_per_repeat": args.steps}
        rows.append(row)
        print(json.dumps(row), flush=True)
  stamp = print_run_header("bench_train_step.py", argv)
  print("| model | px | batch | JAX frames/s | torch frames/s | torch/JAX time | JAX compile s |"
        " XLA memory MiB |")
  print("|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['model']} | {r['res']} | {r['batch']} | {r['jax_frames_per_s']:.2f} | "
          f"{r['torch_frames_per_s']:.2f} | {r['ratio_torch_over_jax']:.2f} | "
          f"{r['jax_compile_s']:.1f} | {r['jax_xla_memory_mib']:.0f} |")
  if args.out:
    with open(args.out, "a") as f:
      for r in rows:
        f.write(json.dumps({**r, "date": stamp}) + "\n")


if __name__ == "__main__":
  main()
