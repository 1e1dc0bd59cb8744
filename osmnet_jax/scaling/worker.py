r"""One run of a sweep in its own process: train.py's train() on the run's config, then the
held-out score, then W/runs/<name>/result.json (written once, atomically).

  python -m osmnet_jax.scaling.worker W/runs/<name>      # what the launchers start

The run folder is train.py's workdir (config.json, checkpoints/, tb/), so a killed run resumes
from its checkpoints. A lock (fcntl.flock on <run>/.lock, released by the kernel when the
process dies) keeps two workers off one run. Exit status: 0 done (or already done), 1 the run
failed (result.json says why), 75 another worker holds the run.
"""
from __future__ import annotations

import fcntl
import os
import sys
import time
import traceback

from osmnet_jax.runtime import parent_death

BUSY = 75
PARENT_ENV = "OSMNET_SCALING_PARENT"  # the launcher's pid


def die_with_parent() -> None:
  """Linux: SIGKILL this worker when the launcher named in $OSMNET_SCALING_PARENT dies (set
  here, after exec: a pre-exec hook in a forked multi-threaded launcher could deadlock)."""
  parent = os.environ.get(PARENT_ENV)
  if not parent:
    return
  if not parent_death.arm_parent_death_signal():
    return  # not Linux
  if os.getppid() != int(parent):  # the launcher died before the signal was armed
    sys.exit(1)


def _import_train():
  """train.py (repo root) as a module: its flags and train(), the code a user runs."""
  from osmnet_jax.scaling import sweep

  root = sweep.repo_root()
  if not os.path.exists(os.path.join(root, "train.py")):
    raise FileNotFoundError(f"train.py not found in {root}: run the sweep from a checkout")
  if root not in sys.path:
    sys.path.insert(0, root)
  import train  # pylint: disable=import-outside-toplevel

  return train


def _steps_done(run_dir: str, stage: str) -> int:
  from osmnet_jax import workdir as workdir_lib

  ckdir = (workdir_lib.motion_dir(run_dir, "osmnet") if stage == "motion"
           else workdir_lib.checkpoint_dir(run_dir, stage))
  steps = [int(d) for d in os.listdir(ckdir) if d.isdigit()] if os.path.isdir(ckdir) else []
  return max(steps, default=0)


def execute(run_dir: str) -> dict:
  """Train and score the run planned in ``run_dir``; returns the result (status ok)."""
  from osmnet_jax.scaling import heldout, sweep
  from osmnet_jax.scaling import plan as plan_lib

  plan = plan_lib.read_json(os.path.join(run_dir, plan_lib.PLAN))
  run = sweep.Run.from_dict(plan["run"])
  cfg = sweep.with_steps(sweep.materialize(run), run.stage, plan["steps"])
  train = _import_train()
  train.FLAGS([sys.argv[0], f"--workdir={run_dir}"])
  import jax

  t0 = time.perf_counter()
  try:
    train.train(cfg, run_dir)
  except train._Exit as e:  # noqa: SLF001  config errors: the message, not a traceback
    raise ValueError(str(e)) from e
  wall = time.perf_counter() - t0
  steps = _steps_done(run_dir, run.stage)
  scores = heldout.score(run.stage, run_dir, cfg) if jax.process_index() == 0 else {}
  return {**_base(plan), **scores, "status": "ok", "steps": steps,
          "flops_actual": steps * plan["flops_per_step"], "wall_s": wall,
          "devices": jax.device_count(), "processes": jax.process_count()}


def _base(plan: dict) -> dict:
  run = plan["run"]
  return {"name": plan["name"], "stage": plan["stage"], "params": plan["params"],
          "flops_budget": plan["flops_budget"], "flops_per_step": plan["flops_per_step"],
          "flops_analytic_per_step": plan["flops_analytic_per_step"], "steps": plan["steps"],
          "width": run["width"], "depth": run["depth"], "seed": run["seed"],
          "data_size": run["data_size"]}


def failed(plan: dict, error: str) -> dict:
  return {**_base(plan), "status": "failed", "error": error, "flops_actual": None,
          "heldout_loss": None}


def main(argv=None) -> int:
  from osmnet_jax.scaling import plan as plan_lib

  argv = sys.argv[1:] if argv is None else argv
  if len(argv) != 1:
    print(__doc__, file=sys.stderr)
    return 2
  die_with_parent()
  run_dir = os.path.abspath(argv[0])
  result_path = os.path.join(run_dir, plan_lib.RESULT)
  lock = open(os.path.join(run_dir, ".lock"), "w")  # noqa: SIM115  held until exit
  try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    print(f"{run_dir}: another worker runs it", file=sys.stderr)
    return BUSY
  if os.path.exists(result_path):
    return 0
  try:
    result = execute(run_dir)
  except (KeyboardInterrupt, SystemExit):
    raise  # interrupted, not failed: no result, the next sweep resumes it
  except Exception as e:  # noqa: BLE001  recorded; the sweep goes on
    from osmnet_jax.stages import loop

    if isinstance(e, loop.Interrupted):
      raise
    plan = plan_lib.read_json(os.path.join(run_dir, plan_lib.PLAN))
    tb = traceback.format_exc()
    print(tb, file=sys.stderr)
    plan_lib.write_json_atomic(result_path, failed(plan, f"{type(e).__name__}: {e}\n{tb[-2000:]}"))
    return 1
  import jax

  if jax.process_index() == 0:
    plan_lib.write_json_atomic(result_path, result)
  return 0


if __name__ == "__main__":
  from osmnet_jax.runtime import accelerator_probe, xla_cpu_tuning

  xla_cpu_tuning.apply()
  accelerator_probe.apply()
  sys.exit(main())
