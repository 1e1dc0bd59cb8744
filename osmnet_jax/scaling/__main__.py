r"""Scaling sweeps: plan, train (resumable), analyse.

  python -m osmnet_jax.scaling --sweep configs/sweeps/default.py --workdir W --dry-run
  python -m osmnet_jax.scaling --sweep configs/sweeps/default.py --workdir W     # run + analyse
  python -m osmnet_jax.scaling --analyze W                                      # analyse only
  python -m osmnet_jax.scaling --sweep S --workdir W --launcher local --parallel 4 \
      --devices-per-run 2                                                       # 4 runs at once
  python -m osmnet_jax.scaling --sweep S --workdir W --launcher slurm --slurm-partition gpu \
      --nodes 2 --tasks-per-node 8 --gpus-per-node 8 --timeout-min 240          # one job per run

Planning compiles each distinct train step once for its FLOPs (XLA cost analysis, checked
against an analytic matmul/conv count) and sets every run's steps = budget / FLOPs per step.
Each run trains with train.py's train() in W/runs/<name>/ and ends in W/runs/<name>/result.json.
A rerun of the same command skips finished runs and resumes unfinished ones from their
checkpoints; --retry-failed reruns the failed ones. Analysis writes W/runs.csv, W/fit.json,
W/frontier.png, W/n_opt.png, W/data_size.png (data axis only) and W/summary.md.
"""
from __future__ import annotations

import argparse
import os
import sys

from osmnet_jax.runtime import accelerator_probe, xla_cpu_tuning


def parse_args(argv=None):
  p = argparse.ArgumentParser(prog="python -m osmnet_jax.scaling",
                              description=__doc__.split("\n\n")[0],
                              epilog=__doc__.split("\n\n", 1)[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--sweep", help="configs/sweeps/<name>.py (defines get_runs())")
  p.add_argument("--workdir", help="sweep folder W (runs/, runs.csv, fit.json, plots)")
  p.add_argument("--analyze", metavar="W", help="only analyse the finished runs in W")
  p.add_argument("--dry-run", action="store_true",
                 help="list the runs with params, FLOPs and steps; train nothing")
  p.add_argument("--retry-failed", action="store_true", help="rerun runs whose result failed")
  p.add_argument("--launcher", choices=("local", "slurm"), default="local")
  p.add_argument("--parallel", type=int, default=1, help="local: runs at once")
  p.add_argument("--devices-per-run", type=int, default=0,
                 help="local: accelerators per concurrent run (0: do not split devices)")
  p.add_argument("--device-env", default="CUDA_VISIBLE_DEVICES",
                 help="local: variable that selects a run's devices (TPU: TPU_VISIBLE_CHIPS)")
  g = p.add_argument_group("slurm (submitit)")
  g.add_argument("--submitit-cluster", default="slurm", choices=("slurm", "local"),
                 help="local: submitit's local executor (tests, debugging)")
  g.add_argument("--slurm-partition")
  g.add_argument("--timeout-min", type=int, default=60)
  g.add_argument("--nodes", type=int, default=1, help="hosts per run (multi-host JAX)")
  g.add_argument("--tasks-per-node", type=int, default=1, help="JAX processes per host")
  g.add_argument("--gpus-per-node", type=int)
  g.add_argument("--cpus-per-task", type=int)
  g.add_argument("--no-wait", action="store_true",
                 help="submit and exit; analyse later with --analyze W")
  args = p.parse_args(argv)
  if args.analyze is None and not (args.sweep and args.workdir):
    p.error("give --sweep and --workdir (or --analyze W)")
  return args


def _print_plan(plans: list[dict], workdir: str) -> None:
  from osmnet_jax.scaling import plan as plan_lib

  print(f"{'run':44s} {'params':>9s} {'FLOPs/step':>10s} {'steps':>6s} {'budget':>9s} "
        f"{'FLOPs':>9s} {'analytic':>8s}  status")
  for pl in plans:
    done = plan_lib.result(workdir, pl["name"])
    status = done["status"] if done else pl["status"]
    print(f"{pl['name']:44s} {pl['params']:9d} {pl['flops_per_step']:10.3g} {pl['steps']:6d} "
          f"{pl['flops_budget'] or 0:9.3g} {pl['flops_planned']:9.3g} "
          f"{pl['flops_analytic_per_step'] / pl['flops_per_step']:8.2f}  {status}")


def _pending(plans: list[dict], workdir: str, retry_failed: bool) -> list[str]:
  from osmnet_jax.scaling import plan as plan_lib

  dirs = []
  for pl in plans:
    d = plan_lib.run_dir(workdir, pl["name"])
    res = plan_lib.result(workdir, pl["name"])
    if res is not None and res["status"] == "failed" and retry_failed:
      os.replace(os.path.join(d, plan_lib.RESULT), os.path.join(d, "result.failed.json"))
      res = None
    if res is None and pl["status"] == "planned":
      dirs.append(d)
  return dirs


def _prepare_data(plans: list[dict]) -> None:
  """Build each distinct dataset once here, so concurrent runs never build one twice."""
  from osmnet_jax.input import datasets
  from osmnet_jax.scaling import sweep

  seen = set()
  for pl in plans:
    data = sweep.materialize(sweep.Run.from_dict(pl["run"])).data
    key = data.to_json(sort_keys=True)
    if key not in seen:
      seen.add(key)
      datasets.get_builder(data)


def main(argv=None) -> int:
  args = parse_args(argv)
  from osmnet_jax.scaling import report

  if args.analyze:
    out = report.analyze(os.path.abspath(args.analyze))
    print(open(os.path.join(args.analyze, "summary.md")).read())
    return 0 if out["ok"] else 1
  from osmnet_jax.scaling import launch, sweep
  from osmnet_jax.scaling import plan as plan_lib

  workdir = os.path.abspath(args.workdir)
  runs = sweep.load_runs(args.sweep)
  plans = plan_lib.make_plans(runs, workdir, progress=lambda m: print(m, file=sys.stderr))
  plan_lib.write_plans(plans, workdir)
  _print_plan(plans, workdir)
  if args.dry_run:
    return 0
  pending = _pending(plans, workdir, args.retry_failed)
  print(f"{len(plans) - len(pending)} runs finished or skipped, {len(pending)} to run",
        file=sys.stderr)
  _prepare_data(plans)

  def progress(d, rc):
    res = plan_lib.read_json(os.path.join(d, plan_lib.RESULT)) or {}
    print(f"{os.path.basename(d)}: {res.get('status', f'exit {rc}')} "
          f"heldout_loss={res.get('heldout_loss')}", file=sys.stderr)

  if args.launcher == "local":
    num_devices = 0
    if args.devices_per_run:
      import jax

      num_devices = jax.device_count()
    launch.run_local(pending, args.parallel, args.devices_per_run, args.device_env, num_devices,
                     progress)
  else:
    launch.run_slurm(pending, os.path.join(workdir, "submitit"), args.submitit_cluster,
                     wait=not args.no_wait, progress=progress, timeout_min=args.timeout_min,
                     slurm_partition=args.slurm_partition, nodes=args.nodes,
                     tasks_per_node=args.tasks_per_node, gpus_per_node=args.gpus_per_node,
                     cpus_per_task=args.cpus_per_task)
    if args.no_wait:
      return 0
  report.analyze(workdir)
  print(open(os.path.join(workdir, "summary.md")).read())
  return 0


if __name__ == "__main__":
  xla_cpu_tuning.apply()
  accelerator_probe.apply()
  sys.exit(main())
