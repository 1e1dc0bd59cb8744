"""Runs -> plans: FLOPs per step (cached per model), step count, and the run folders.

W/runs/<name>/plan.json holds what the worker needs (the Run, steps, FLOPs per step); it is
rewritten while the run has no result.json. W/flops_cache.json keeps each distinct step's cost
(keyed by the stage and the config fields that change the step), so a resumed or re-planned
sweep compiles nothing twice.
"""
from __future__ import annotations

import hashlib
import json
import os

from osmnet_jax.scaling import flops as flops_lib
from osmnet_jax.scaling import sweep

BUDGET_TOLERANCE = 0.10   # |steps * flops_per_step - budget| / budget
RESULT = "result.json"
PLAN = "plan.json"


def run_dir(workdir: str, name: str) -> str:
  return os.path.join(workdir, "runs", name)


def _cost_key(stage: str, cfg) -> str:
  relevant = {"stage": stage, "stage_cfg": cfg[stage].to_dict(),
              "batch": sweep.batch_size(cfg, stage), "image": str(cfg.data.builder_config)}
  if stage == "expression":  # the frozen renderer runs inside the expression step
    relevant["renderer"] = cfg.renderer.to_dict()
  for k in ("renderer.steps", "motion.num_steps", "expression.num_steps"):
    relevant["stage_cfg"].pop(k.split(".")[1], None)
  text = json.dumps(relevant, sort_keys=True, default=list)
  return hashlib.sha1(text.encode()).hexdigest()[:16]


def write_json_atomic(path: str, obj: dict) -> None:
  """Write to a temporary file in the same folder, then rename: readers see all or nothing."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, default=str)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def read_json(path: str) -> dict | None:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def make_plans(runs: list[sweep.Run], workdir: str, progress=None) -> list[dict]:
  """One plan per run: params, FLOPs per step (XLA and analytic), steps, total FLOPs, status
  ("planned", or "skipped" with the reason when the budget cannot be met within tolerance)."""
  cache_path = os.path.join(workdir, "flops_cache.json")
  cache = read_json(cache_path) or {}
  plans = []
  for run in runs:
    cfg = sweep.materialize(run)
    key = _cost_key(run.stage, cfg)
    if key not in cache:
      if progress:
        progress(f"compiling {run.stage} step of {run.name} for its FLOPs")
      cache[key] = flops_lib.step_cost(run.stage, cfg)
      os.makedirs(workdir, exist_ok=True)
      write_json_atomic(cache_path, cache)
    cost = cache[key]
    steps = run.steps if run.steps is not None else flops_lib.steps_for_budget(
        run.flops_budget, cost["flops"])
    total = steps * cost["flops"]
    plan = {"run": run.to_dict(), "name": run.name, "stage": run.stage, "steps": int(steps),
            "params": cost["params"], "flops_per_step": cost["flops"],
            "flops_analytic_per_step": cost["flops_analytic"], "batch": cost["batch"],
            "flops_budget": run.flops_budget, "flops_planned": total, "status": "planned"}
    if run.flops_budget is not None:
      err = abs(total - run.flops_budget) / run.flops_budget
      if err > BUDGET_TOLERANCE:
        plan["status"] = "skipped"
        exact = run.flops_budget / cost["flops"]
        plan["error"] = (
            f"budget {run.flops_budget:.3g} FLOPs is {exact:.2f} steps of {cost['flops']:.3g} "
            f"FLOPs: {steps} steps miss it by {100 * err:.0f} % (> "
            f"{100 * BUDGET_TOLERANCE:.0f} %); raise the budget or drop this size")
    plans.append(plan)
  return plans


def write_plans(plans: list[dict], workdir: str) -> None:
  """plan.json of every run without a result; finished runs are left untouched."""
  for plan in plans:
    d = run_dir(workdir, plan["name"])
    if os.path.exists(os.path.join(d, RESULT)):
      continue
    os.makedirs(d, exist_ok=True)
    write_json_atomic(os.path.join(d, PLAN), plan)


def result(workdir: str, name: str) -> dict | None:
  return read_json(os.path.join(run_dir(workdir, name), RESULT))
