r"""Compile every stage for a TPU pod or GPU cluster you do not have, and price it.

  python -m osmnet_jax.aot --config configs/vox256.py --topology tpu:v5e:4x4 [--out DIR]
      [--batch-per-chip N] [--stages renderer,motion,expression,generate] [--modes dp,fsdp,zero1]
  python -m osmnet_jax.aot --config configs/vox256.py --topology cuda:h100:1x4x8

For each stage's train step and generate's render call, in DP and FSDP layouts (and ZeRO-1 on
request: DP with the Adam moments split over the chips): per-device
memory against HBM, FLOPs, collectives with their bytes, a roofline step time, predicted MFU and
(without --batch-per-chip) the largest per-chip batch that fits. --out DIR writes DIR/aot.md
and DIR/aot.json. Exit status 3 (and a message naming the stage) when --batch-per-chip N does
not fit on the target. Needs the `aot` extra (pip install -e ".[aot]"); how the numbers are
computed: osmnet_jax/aot/report.py.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import sys

EXIT_DOES_NOT_FIT = 3


def load_config(path: str):
  spec = importlib.util.spec_from_file_location("aot_config", path)
  if spec is None or not os.path.exists(path):
    raise SystemExit(f"--config {path}: file not found")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m osmnet_jax.aot", description=__doc__.split("\n")[0])
  p.add_argument("--config", required=True, help="config file with get_config()")
  p.add_argument("--topology", required=True,
                 help="tpu:<gen>:<grid>[:<slices>] (tpu:v5e:4x4) or cuda:<gpu>:<s>x<h>x<g>")
  p.add_argument("--out", default="", help="write OUT/aot.md and OUT/aot.json")
  p.add_argument("--batch-per-chip", type=int, default=0,
                 help="check this per-chip batch only (exit 3 if it does not fit); default: "
                      "search the largest that fits")
  p.add_argument("--stages", default="renderer,motion,expression,generate")
  p.add_argument("--modes", default="dp,fsdp",
                 help="layouts to compile: dp (state replicated), fsdp (params and Adam moments "
                      "split), zero1 (only the Adam moments split: config.mesh.shard_optimizer)")
  p.add_argument("--max-batch", type=int, default=1024, help="upper end of the search")
  p.add_argument("--search-from", type=int, default=1,
                 help="first batch the search compiles (a size known to fit skips the small "
                      "probes; each probe is a full compile)")
  return p.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  # Ordinary (non-target) work in this process stays on the CPU: with the TPU/CUDA plugins
  # installed but no accelerator present, jax would otherwise probe them first.
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")
  import jax

  from osmnet_jax.aot import report, search, targets

  cfg = load_config(args.config)
  target = targets.parse(args.topology)
  stages = [s for s in args.stages.split(",") if s]
  modes = [m for m in args.modes.split(",") if m]
  summary = {"topology": args.topology, "config": args.config, "chip": target.chip.name,
             "num_devices": target.num_devices, "hbm_bytes": int(target.chip.hbm_bytes),
             "jax_version": jax.__version__,
             "command": "python -m osmnet_jax.aot " + " ".join(map(shlex.quote, sys.argv[1:]
                                                                   if argv is None else argv)),
             "stages": {}}
  not_fitting = []
  for stage in stages:
    print(f"[aot] {stage} on {args.topology} ({target.num_devices} devices) ...", flush=True)
    st = search.stage_report(target, cfg, stage, modes, args.batch_per_chip, args.max_batch,
                             log=lambda m: print(f"[aot]   {m}", flush=True),
                             search_from=args.search_from)
    summary["stages"][stage] = st
    if not st["fits"]:
      not_fitting.append(stage)
  text = report.markdown(summary)
  print(text)
  if args.out:
    md, js = report.write(args.out, summary)
    print(f"[aot] wrote {md} and {js}")
  if not_fitting:
    b = args.batch_per_chip
    what = f"batch {b} per chip" if b else "even batch 1 per chip"
    print(f"[aot] DOES NOT FIT: {', '.join(not_fitting)} with {what} on {args.topology} "
          f"({target.chip.name}, {target.chip.hbm_bytes / 2**30:.2f} GiB HBM per chip) in any of "
          f"the layouts {modes}; lower --batch-per-chip, or turn on remat / bfloat16 in the "
          "config.", file=sys.stderr)
    return EXIT_DOES_NOT_FIT
  return 0


if __name__ == "__main__":
  sys.exit(main())
