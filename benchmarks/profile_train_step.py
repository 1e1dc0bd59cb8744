r"""Where a train step spends its time: XLA ops (JAX) and aten ops (PyTorch mirror).

  python benchmarks/profile_train_step.py --res 64 --batch 8 --steps 3 --top 25   # renderer
  python benchmarks/profile_train_step.py --stage motion --batch 16                # stage B
  python benchmarks/profile_train_step.py --stage expression --batch 8 --res 64

Builds the same two steps as `bench_train_step.py` (renderer) or `bench_stage_b.py` (motion,
expression; default configs), runs `--steps` warm steps of each under its
framework's profiler and prints the top ops by total self time. For JAX the trace of
`jax.profiler` is read back (the XLA:CPU thunks are named after their HLO instructions; fusions
are grouped by the op that roots them, e.g. `convolution`, `scatter`, `gather`, `fusion`). For
torch, `torch.profiler`'s key averages. This is the "profile" half of issue 7's profile-guided
speed-ups: it says which hot path to work on, and the bench then says whether it helped.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--stage", default="renderer", choices=("renderer", "motion", "expression"))
  p.add_argument("--model", default="tiny", choices=("tiny", "vox256"), help="renderer model")
  p.add_argument("--res", type=int, default=64)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--steps", type=int, default=3, help="profiled warm steps per framework")
  p.add_argument("--top", type=int, default=25)
  p.add_argument("--perceptual_layers", type=int, default=5)
  p.add_argument("--no_torch", action="store_true")
  return p.parse_args(argv)


def _op_kind(name: str) -> str:
  """HLO instruction name -> kind: 'convolution.12' -> 'convolution', 'fusion.3' -> 'fusion'."""
  return re.sub(r"[._]\d+$", "", name.split("/")[-1])


def _op_names(hlo_text: str) -> dict:
  """HLO instruction name -> its op_name metadata with the jit/jvp/transpose wrappers kept."""
  out = {}
  for m in re.finditer(r"%([\w.\-]+) = [^\n]*?op_name=\"([^\"]+)\"", hlo_text):
    src = re.sub(r"^jit\(train_step\)/", "", m.group(2))
    out[m.group(1)] = re.sub(r"\[[^\]]*\]", "", src)
  return out


def jax_profile(jax_step, steps: int, logdir: str):
  import jax
  jax.profiler.start_trace(logdir)
  for _ in range(steps):
    jax_step()
  jax.profiler.stop_trace()
  files = glob.glob(os.path.join(logdir, "**", "*.trace.json.gz"), recursive=True)
  if not files:
    raise RuntimeError(f"jax.profiler wrote no *.trace.json.gz under {logdir}")
  with gzip.open(sorted(files)[-1]) as f:
    trace = json.load(f)
  # Thread names: keep events on XLA's compute threads (not the Python thread's TraceMes).
  by_name = collections.Counter()
  count = collections.Counter()
  for ev in trace.get("traceEvents", []):
    if ev.get("ph") != "X" or "dur" not in ev:
      continue
    args = ev.get("args", {})
    name = ev.get("name", "")
    hlo = args.get("hlo_op") or args.get("long_name") or ""
    if not hlo and not re.search(r"(fusion|convolution|scatter|gather|dot|copy|reduce|"
                                 r"transpose|select|broadcast|pad|slice|concatenate|"
                                 r"custom-call|sort|while|add|multiply)", name):
      continue
    by_name[name] += ev["dur"] / 1e3  # ms
    count[name] += 1
  return by_name, count


def main(argv=None):
  args = parse_args(argv)
  import bench_train_step as bts
  with tempfile.TemporaryDirectory() as tmp:
    if args.stage == "renderer":
      jax_step, torch_step, info = bts.build(args.model, args.res, args.batch,
                                          args.perceptual_layers, os.path.join(tmp, "vgg19.pth"))
    else:
      import bench_stage_b as bsb
      jax_step, torch_step, info = (bsb.build_motion(args.batch) if args.stage == "motion"
                                    else bsb.build_expression(args.batch, args.res))
    jax_step()
    torch_step()
    by_name, count = jax_profile(jax_step, args.steps, os.path.join(tmp, "trace"))
    total = sum(by_name.values())
    kinds = collections.Counter()
    for n, ms in by_name.items():
      kinds[_op_kind(n)] += ms
    where = _op_names(info["compiled"].as_text())
    by_src = collections.Counter()
    for n, ms in by_name.items():
      by_src[where.get(n, "?")] += ms
    print(f"JAX: {total / args.steps:.0f} ms of XLA ops per step "
          f"({args.stage}, {args.res} px, batch {args.batch}, {args.steps} steps)")
    print("  by kind:", ", ".join(f"{k} {v / args.steps:.0f} ms" for k, v in kinds.most_common(8)))
    for n, ms in by_name.most_common(args.top):
      print(f"  {ms / args.steps:8.1f} ms/step  {100 * ms / total:5.1f} %  x{count[n] // args.steps:<3d} {n}")  # noqa: E501
    by_mod = collections.Counter()
    for n, ms in by_src.items():
      by_mod[n.split("/")[0]] += ms
    print("  by module:", ", ".join(f"{k} {v / args.steps:.0f} ms" for k, v in by_mod.most_common(12)))  # noqa: E501
    print("  by source op (jax op_name of the HLO instruction):")
    for n, ms in by_src.most_common(args.top):
      print(f"  {ms / args.steps:8.1f} ms/step  {100 * ms / total:5.1f} %  {n}")
    if args.no_torch:
      return
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
      for _ in range(args.steps):
        torch_step()
    avgs = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    ttotal = sum(e.self_cpu_time_total for e in avgs) / 1e3
    print(f"\ntorch: {ttotal / args.steps:.0f} ms of aten self time per step")
    for e in avgs[:args.top]:
      ms = e.self_cpu_time_total / 1e3
      print(f"  {ms / args.steps:8.1f} ms/step  {100 * ms / ttotal:5.1f} %  x{e.count // args.steps:<3d} {e.key}")  # noqa: E501


if __name__ == "__main__":
  main()
