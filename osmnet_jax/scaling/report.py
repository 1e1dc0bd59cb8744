"""W/runs/*/result.json -> W/runs.csv, W/fit.json, W/frontier.png, W/n_opt.png,
W/data_size.png (when the sweep varies the data) and W/summary.md."""
from __future__ import annotations

import collections
import csv
import glob
import json
import os

import numpy as np

from osmnet_jax.scaling import fit as fit_lib
from osmnet_jax.scaling import plan as plan_lib

COLUMNS = ("name", "stage", "params", "flops_budget", "flops_actual", "steps", "heldout_loss",
           "status", "width", "depth", "seed", "data_size", "flops_per_step",
           "flops_analytic_per_step", "wall_s", "error")


def collect(workdir: str) -> list[dict]:
  """Every run's result.json, or its plan (status planned / skipped) while it has none."""
  rows = []
  for d in sorted(glob.glob(os.path.join(workdir, "runs", "*"))):
    res = plan_lib.read_json(os.path.join(d, plan_lib.RESULT))
    if res is None:
      plan = plan_lib.read_json(os.path.join(d, plan_lib.PLAN))
      if plan is None:
        continue
      res = {**plan["run"], **plan, "status": plan["status"]}
    rows.append(res)
  return rows


def write_csv(rows: list[dict], path: str) -> None:
  extra = sorted({k for r in rows for k, v in r.items()
                  if k not in COLUMNS and isinstance(v, (int, float, str, type(None)))})
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(COLUMNS) + extra, extrasaction="ignore")
    w.writeheader()
    for r in rows:
      w.writerow({k: ("" if r.get(k) is None else str(r[k]).splitlines()[0] if k == "error"
                      else r[k]) for k in list(COLUMNS) + extra})


def _points(rows: list[dict], stage: str, data_size=None) -> list[dict]:
  return [{"params": r["params"], "flops": r["flops_actual"], "loss": r["heldout_loss"],
           "seed": r["seed"], "budget": r["flops_budget"] or r["flops_actual"]}
          for r in rows if r["stage"] == stage and r["status"] == "ok"
          and r.get("heldout_loss") is not None and r.get("data_size") == data_size]


def analyze(workdir: str) -> dict:
  """Write every artefact; returns fit.json's content."""
  rows = collect(workdir)
  if not rows:
    raise FileNotFoundError(f"{workdir}/runs/ holds no run; start the sweep first")
  write_csv(rows, os.path.join(workdir, "runs.csv"))
  ok = [r for r in rows if r["status"] == "ok"]
  stages = sorted({r["stage"] for r in ok})
  out = {"stages": {}, "runs": len(rows), "ok": len(ok),
         "failed": sum(r["status"] == "failed" for r in rows)}
  for stage in stages:
    data_sizes = sorted({r.get("data_size") for r in ok if r["stage"] == stage},
                        key=lambda x: -1 if x is None else x)
    main_data = data_sizes[-1] if None not in data_sizes else None
    pts = _points(ok, stage, main_data)
    fr = {"stage": stage, "data_size": main_data, "points": len(pts)}
    try:
      env = fit_lib.envelope(pts)
      fr["frontier"] = fit_lib.fit_power_law(*env[:2])
      fr["envelope"] = [[float(c), float(loss), float(n)] for c, loss, n in zip(*env)]
      fr["monotonic"] = bool(np.all(np.diff(env[1]) < 0))
    except ValueError as e:
      fr["frontier"], fr["frontier_error"] = None, str(e)
    nfit = fit_lib.fit_n_opt(pts)
    fr["n_opt_exponent"], fr["n_opt"] = nfit["k"], nfit
    fr["bootstrap"] = fit_lib.bootstrap(pts)
    fr["data_curves"] = _data_curves(ok, stage)
    out["stages"][stage] = fr
  if stages:  # the first stage's fit at the top level (a sweep usually has one stage)
    first = out["stages"][stages[0]]
    out["frontier"], out["n_opt_exponent"] = first.get("frontier"), first["n_opt_exponent"]
  with open(os.path.join(workdir, "fit.json"), "w") as f:
    json.dump(out, f, indent=2)
  _plots(workdir, ok, out)
  _summary(workdir, rows, out)
  return out


def _data_curves(ok: list[dict], stage: str) -> list[dict]:
  """Loss against data size for every (params, budget) the sweep ran at >= 2 data sizes."""
  groups = collections.defaultdict(list)
  for r in ok:
    if r["stage"] == stage and r.get("data_size") is not None:
      groups[(r["params"], r["flops_budget"])].append((r["data_size"], r["heldout_loss"]))
  curves = []
  for (n, budget), pts in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
    by = collections.defaultdict(list)
    for d, loss in pts:
      by[d].append(loss)
    if len(by) >= 2:
      curves.append({"params": n, "flops_budget": budget,
                     "points": [[d, float(np.mean(v))] for d, v in sorted(by.items())]})
  return curves


def _plots(workdir: str, ok: list[dict], out: dict) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, max(1, len(out["stages"])), figsize=(6 * len(out["stages"]), 4.5),
                           squeeze=False)
  for ax, (stage, fr) in zip(axes[0], out["stages"].items()):
    by_n = collections.defaultdict(lambda: collections.defaultdict(list))
    for p in _points(ok, stage, fr["data_size"]):
      by_n[p["params"]][p["budget"]].append((p["flops"], p["loss"]))
    for n, cells in sorted(by_n.items()):
      # One point per budget (seed mean); the seeds themselves as small dots.
      mean = np.array(sorted(tuple(np.mean(v, axis=0)) for v in cells.values()))
      line, = ax.plot(mean[:, 0], mean[:, 1], "o-", ms=4, alpha=0.8,
                      label=f"{n / 1e3:.0f}k params")
      seeds = np.array([x for v in cells.values() if len(v) > 1 for x in v]).reshape(-1, 2)
      ax.plot(seeds[:, 0], seeds[:, 1], ".", ms=3, color=line.get_color())
    if fr.get("frontier"):
      f = fr["frontier"]
      cs = np.geomspace(min(p[0] for p in fr["envelope"]), max(p[0] for p in fr["envelope"]), 50)
      ax.plot(cs, f["a"] * cs ** -f["b"] + f["c"], "k--",
              label=f"frontier {f['a']:.3g} C^-{f['b']:.3f} + {f['c']:.3g}")
    ax.set(xscale="log", xlabel="training FLOPs (XLA cost analysis)",
           ylabel="held-out loss (osmnet_jax/scaling/heldout.py)",
           title=f"{stage}: held-out loss vs compute")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "frontier.png"), dpi=110)
  plt.close(fig)

  fig, ax = plt.subplots(figsize=(5, 4))
  for stage, fr in out["stages"].items():
    pts = np.array(fr["n_opt"]["points"]) if fr["n_opt"]["points"] else None
    if pts is None:
      continue
    k = fr["n_opt_exponent"]
    ax.plot(pts[:, 0], pts[:, 1], "o", label=f"{stage}")
    ax.plot(pts[:, 0], fr["n_opt"]["n0"] * pts[:, 0] ** k, "--", label=f"{stage}: C^{k:.2f}")
  ax.set(xscale="log", yscale="log", xlabel="training FLOPs", ylabel="compute-optimal params",
         title="N_opt(C)")
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "n_opt.png"), dpi=110)
  plt.close(fig)

  curves = [(s, c) for s, fr in out["stages"].items() for c in fr["data_curves"]]
  if curves:
    fig, ax = plt.subplots(figsize=(5, 4))
    for stage, c in curves:
      pts = np.array(c["points"])
      ax.plot(pts[:, 0], pts[:, 1], "o-", label=f"{stage} {c['params'] / 1e3:.0f}k, "
              f"C={c['flops_budget'] or 0:.2g}")
    ax.set(xscale="log", xlabel="train clips", ylabel="held-out loss", title="data size")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, "data_size.png"), dpi=110)
    plt.close(fig)


def _summary(workdir: str, rows: list[dict], out: dict) -> None:
  lines = ["# Scaling sweep summary", "",
           f"{out['runs']} runs: {out['ok']} ok, {out['failed']} failed, "
           f"{out['runs'] - out['ok'] - out['failed']} not run (planned / skipped).", ""]
  for stage, fr in out["stages"].items():
    lines += [f"## {stage}", ""]
    f = fr.get("frontier")
    if f:
      lines.append(f"Frontier L(C) = {f['a']:.4g} * C^-{f['b']:.4f} + {f['c']:.4g} "
                   f"(rmse of log L {f['rmse_log']:.3g}; {fr['points']} runs; frontier "
                   f"{'improves monotonically' if fr['monotonic'] else 'is NOT monotonic'} "
                   "with compute).")
    else:
      lines.append(f"No frontier fit: {fr.get('frontier_error')}")
    if fr["n_opt_exponent"] is not None:
      lines.append(f"Compute-optimal size N_opt(C) ~ C^{fr['n_opt_exponent']:.3f}.")
    for k, (lo, mid, hi) in fr["bootstrap"].items():
      lines.append(f"- seed bootstrap {k}: {mid:.4g} [{lo:.4g}, {hi:.4g}] (95 %)")
    lines.append("")
  lines += ["| run | params | FLOPs budget | FLOPs | steps | held-out loss | wall s | status |",
            "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    fa = r.get("flops_actual") or r.get("flops_planned")
    budget = "-" if r.get("flops_budget") is None else format(r["flops_budget"], ".3g")
    lines.append(f"| {r['name']} | {r['params']} | {budget} | "
                 f"{fa or 0:.3g} | {r['steps']} | "
                 f"{'' if r.get('heldout_loss') is None else format(r['heldout_loss'], '.4g')} | "
                 f"{'' if r.get('wall_s') is None else format(r['wall_s'], '.0f')} | "
                 f"{r['status']} |")
  lines += ["", "Plots: frontier.png (loss vs FLOPs per size, with the frontier), n_opt.png "
            "(compute-optimal size vs budget), data_size.png (when the data size varies)."]
  with open(os.path.join(workdir, "summary.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
