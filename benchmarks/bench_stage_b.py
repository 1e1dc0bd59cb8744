r"""Stage-B train-step throughput: JAX (jit) vs the PyTorch mirror, same machine, same run.

  python benchmarks/bench_stage_b.py                          # default configs, two batch sizes
  python benchmarks/bench_stage_b.py --stages motion --motion_batches 16 --repeats 3

Both sides run the same function at the DEFAULT configs (configs/default.py: cfg.motion,
cfg.expression, the renderer model of cfg.renderer, 64 px images); tests/test_stage_b_parity.py
checks that outputs, losses, gradients and the clip + Adam update agree (tiny configs):
  motion      OSM-Net motion space + audio mapper (MotionStage, model='osmnet'): relative mapping
              loss, decode of alpha_hat with the motion space frozen, clip + Adam.
  expression  ExpressionEncoder + KeypointPredictor on the frozen KPDetector (ExpressionStage,
              w_rec = 0 as in the default): landmark loss + keypoint distillation, clip + Adam.
JAX runs the stage's own jit step (make_jit_step: state replicated and donated, one-device
mesh); torch runs tests/torch_osmnet.py's step (forward, backward, clip, Adam, the same lr
schedule). Clips/s counts T-frame windows per step (= batch size), frames/s = batch * T. The two
frameworks alternate inside every repeat so machine noise hits both alike; the ratio is
torch time / JAX time (> 1: JAX faster). On a machine shared with other work, run it with
--torch_threads 1 as well (see the flag): torch's multi-threaded step collapses under contention,
JAX's much less, so the default setting then overstates JAX's lead.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
# bench_train_step applies train.py's XLA:CPU options on import (OSMNET_XLA_CPU_TUNING=0 for
# XLA's defaults) and holds the compile / timing / header helpers both benchmarks share.
import bench_train_step as bts  # noqa: E402


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--stages", default="motion,expression", help="comma-separated: motion, expression")  # noqa: E501
  p.add_argument("--motion_batches", default="16,32", help="clips per step (default config: 16)")
  p.add_argument("--expression_batches", default="8,16", help="windows per step (default: 8)")
  p.add_argument("--image_size", type=int, default=64, help="expression stage image size (px)")
  p.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
  p.add_argument("--steps", type=int, default=5, help="train steps per timed repeat")
  p.add_argument("--torch_threads", type=int, default=0,
                 help="torch intra-op threads; 0: every core (the fair setting on a quiet "
                      "machine). On a machine shared with other work, torch's OpenMP barriers "
                      "stall when a thread is descheduled (measured: motion step 3.6 s with 2 "
                      "threads vs 0.2 s with 1 on a busy 2-core box), so compare with 1 there")
  p.add_argument("--out", default="", help="append the rows as JSON lines to this file")
  return p.parse_args(argv)


def _jax_runner(compiled, state, batch, rng):
  import jax

  holder = {"state": state}

  def jax_step():
    holder["state"], metrics = compiled(holder["state"], batch, rng)  # state donated
    jax.block_until_ready((holder["state"], metrics))

  return jax_step


def build_motion(batch: int):
  """-> (jax_step(), torch_step(), info) for cfg.motion at ``batch`` clips."""
  import jax
  import numpy as np
  import torch

  import torch_osmnet as to
  from configs import default
  from osmnet_jax.runtime import sharding
  from osmnet_jax.stages import motion as motion_stage

  mcfg = default.get_config().motion
  mcfg.batch_size = batch
  stage = motion_stage.MotionStage(mcfg)
  mesh = sharding.make_mesh()
  rng = jax.random.PRNGKey(0)
  state = stage.init_state(rng)
  params = jax.device_get(state.params)  # copied before the first (donating) step
  state = jax.device_put(state, sharding.replicated(mesh))
  r = np.random.RandomState(0)
  t = mcfg.num_frames
  batch_np = {"mel": (r.randn(batch, t, 20, 80) * 4.5 - 7).astype(np.float32),
              "pose": r.randn(batch, t, 6).astype(np.float32)}
  if stage.uses_source:
    batch_np["source"] = r.randint(0, 256, (batch, mcfg.image_size, mcfg.image_size, 3),
                                   dtype=np.uint8)
  batch_j = jax.device_put(batch_np, sharding.batch_sharding(mesh))
  compiled, compile_s, mem = bts.compile_step(stage.make_jit_step(mesh), state, batch_j, rng)

  model = to.OSMNetMotion.from_config(mcfg)
  to.load_flax_params(model, params)
  warmup = max(1, min(mcfg.warmup_steps, mcfg.num_steps // 2))
  lr = to.warmup_cosine_lr(mcfg.lr / warmup, mcfg.lr, warmup, max(mcfg.num_steps, 2),
                           mcfg.lr * 0.05)
  batch_t = {k: torch.from_numpy(v) for k, v in batch_np.items()}
  step_t = to.make_step(model, lambda b: to.motion_loss(model, b, mcfg), lr, mcfg.grad_clip)
  return (_jax_runner(compiled, state, batch_j, rng), lambda: step_t(batch_t),
          {"frames": t, "compile_s": compile_s, "xla_memory_bytes": mem, "compiled": compiled})


def build_expression(batch: int, size: int):
  """-> (jax_step(), torch_step(), info) for cfg.expression at ``batch`` windows of ``size`` px,
  on a random (converted) renderer of the default renderer model config."""
  import jax
  import numpy as np
  import torch

  import torch_fomm
  import torch_osmnet as to
  from configs import default
  from osmnet_jax.convert import fomm as convert
  from osmnet_jax.runtime import sharding
  from osmnet_jax.stages import expression as expression_stage
  from osmnet_jax.stages import renderer as renderer_train

  cfg = default.get_config()
  ecfg = cfg.expression
  ecfg.batch_size = batch
  rcfg = renderer_train.model_config(cfg.renderer)
  kp_t, gen_t = torch_fomm.build(rcfg)
  torch_fomm.randomize_(kp_t, 0)
  torch_fomm.randomize_(gen_t, 1)
  variables, _ = convert.convert_fomm({"kp_detector": kp_t.state_dict(),
                                       "generator": gen_t.state_dict()})
  kp_t.eval()
  for p in kp_t.parameters():
    p.requires_grad_(False)
  del gen_t  # w_rec = 0: the generator only rides along in the JAX state

  stage = expression_stage.ExpressionStage(ecfg, rcfg)
  mesh = sharding.make_mesh()
  rng = jax.random.PRNGKey(0)
  state = stage.init_state(rng, variables, size)
  params = jax.device_get(state.params)
  state = jax.device_put(state, sharding.replicated(mesh))
  r = np.random.RandomState(0)
  t = ecfg.num_frames
  batch_np = {"frames": r.randint(0, 256, (batch, t, size, size, 3), dtype=np.uint8),
              "source": r.randint(0, 256, (batch, size, size, 3), dtype=np.uint8),
              "source_landmarks": (r.rand(batch, 68, 2) * size).astype(np.float32),
              "landmarks": (r.rand(batch, t, 68, 2) * size).astype(np.float32),
              "mel": (r.randn(batch, t, 20, 80) * 4.5 - 7).astype(np.float32),
              "pose": r.randn(batch, t, 6).astype(np.float32)}
  batch_j = jax.device_put(batch_np, sharding.batch_sharding(mesh))
  compiled, compile_s, mem = bts.compile_step(stage.make_jit_step(mesh), state, batch_j, rng)

  models = to.ExpressionModels(ecfg, rcfg.num_kp)
  to.load_flax_params(models, params)
  warmup = max(1, min(ecfg.warmup_steps, ecfg.num_steps // 2))
  lr = to.warmup_cosine_lr(ecfg.lr * 0.01, ecfg.lr, warmup, max(ecfg.num_steps, 2),
                           ecfg.lr * 0.05)
  batch_t = {k: torch.from_numpy(v) for k, v in batch_np.items()}
  step_t = to.make_step(models, lambda b: to.expression_loss(models, kp_t, b, ecfg), lr,
                        ecfg.grad_clip)
  return (_jax_runner(compiled, state, batch_j, rng), lambda: step_t(batch_t),
          {"frames": t, "compile_s": compile_s, "xla_memory_bytes": mem, "compiled": compiled})


def main(argv=None):
  args = parse_args(argv)
  import torch

  threads = args.torch_threads or os.cpu_count() or 1
  torch.set_num_threads(threads)  # default: both frameworks get every core
  runs = []
  stages = [s.strip() for s in args.stages.split(",") if s.strip()]
  for s in stages:
    if s not in ("motion", "expression"):
      raise SystemExit(f"--stages: unknown stage {s!r} (motion, expression)")
    key = "motion_batches" if s == "motion" else "expression_batches"
    runs += [(s, int(b)) for b in getattr(args, key).split(",")]
  rows = []
  for stage, batch in runs:
    if stage == "motion":
      jax_step, torch_step, info = build_motion(batch)
    else:
      jax_step, torch_step, info = build_expression(batch, args.image_size)
    tm = bts.time_alternating(jax_step, torch_step, args.repeats, args.steps)
    mj, mt = tm["jax_step_s"], tm["torch_step_s"]
    t = info["frames"]
    row = {"stage": stage, "batch": batch, "frames_per_clip": t,
           "image_size": args.image_size if stage == "expression" else None,
           "jax_step_s": mj, "torch_step_s": mt,
           "jax_clips_per_s": batch / mj, "torch_clips_per_s": batch / mt,
           "jax_frames_per_s": batch * t / mj, "torch_frames_per_s": batch * t / mt,
           "ratio_torch_over_jax": mt / mj, "jax_compile_s": info["compile_s"],
           "jax_xla_memory_mib": (info["xla_memory_bytes"] or 0) / 2**20,
           "peak_rss_growth_mib": tm["peak_rss_growth_mib"],
           "torch_threads": threads, "repeats": args.repeats, "steps_per_repeat": args.steps}
    rows.append(row)
    print(json.dumps(row), flush=True)
  stamp = bts.print_run_header("bench_stage_b.py", argv, f" ({threads} threads)")
  print("| stage | batch | T | JAX clips/s | torch clips/s | JAX frames/s | torch frames/s |"
        " torch/JAX time | JAX compile s | XLA memory MiB |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['stage']} | {r['batch']} | {r['frames_per_clip']} | {r['jax_clips_per_s']:.1f} |"
          f" {r['torch_clips_per_s']:.1f} | {r['jax_frames_per_s']:.0f} |"
          f" {r['torch_frames_per_s']:.0f} | {r['ratio_torch_over_jax']:.2f} |"
          f" {r['jax_compile_s']:.1f} | {r['jax_xla_memory_mib']:.0f} |")
  if args.out:
    with open(args.out, "a") as f:
      for r in rows:
        f.write(json.dumps({**r, "date": stamp}) + "\n")


if __name__ == "__main__":
  main()
