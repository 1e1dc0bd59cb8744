"""Scaling sweeps (osmnet_jax/scaling): budget arithmetic, FLOP counts, fits, and a two-run
sweep end to end with a kill -9 and a resume through submitit's local executor."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from osmnet_jax.scaling import fit, flops, plan, sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "sweeps", "tiny.py")


def test_scale_model_scales_width_and_depth_fields():
  base = sweep.load_base("configs/default.py")
  cfg = sweep.scale_model(base, "motion", 2.0, 2.0)
  assert cfg.motion.hidden == 2 * base.motion.hidden
  assert tuple(cfg.motion.audio_channels) == tuple(2 * c for c in base.motion.audio_channels)
  assert cfg.motion.depth == 2 * base.motion.depth
  assert cfg.motion.num_bases == base.motion.num_bases  # not a width field
  r = sweep.scale_model(base, "renderer", 0.5, 1.0).renderer
  assert r.generator.dense_motion_params.block_expansion == 4
  assert r.kp_detector.max_features == 32
  assert base.motion.hidden == 64  # the base config is not modified


def test_grid_names_and_axes():
  runs = sweep.grid(base="configs/tiny_test.py", stage="motion", widths=(0.5, 1),
                    budgets=(1e9, 3e9), seeds=(0, 1), data_sizes=(None, 8))
  assert len(runs) == 16 and len({r.name for r in runs}) == 16
  assert runs[0].name == "motion_w0.5_d1_C1e09_s0"
  with pytest.raises(ValueError, match="exactly one of budgets"):
    sweep.grid(base="configs/tiny_test.py", stage="motion")
  cfg = sweep.materialize(runs[1])
  assert cfg.stages == ("motion",) and cfg.seed == 1
  data = [r for r in runs if r.data_size == 8][0]
  assert sweep.materialize(data).data.synth.num_train == 8


def test_analytic_count_matches_xla_on_convs_and_dots():
  """Strided, padded, dilated and grouped convs and a dense layer: the shape count agrees
  with XLA's cost analysis (only multiply-adds here, so the two must match)."""
  x = jax.ShapeDtypeStruct((2, 17, 19, 8), jnp.float32)
  k1 = jax.ShapeDtypeStruct((3, 3, 8, 16), jnp.float32)
  k2 = jax.ShapeDtypeStruct((5, 5, 4, 16), jnp.float32)   # 4 groups
  w = jax.ShapeDtypeStruct((16, 32), jnp.float32)
  dn = ("NHWC", "HWIO", "NHWC")

  def f(x, k1, k2, w):
    y = jax.lax.conv_general_dilated(x, k1, (2, 1), "SAME", rhs_dilation=(1, 2),
                                     dimension_numbers=dn)
    y = jax.lax.conv_general_dilated(y, k2, (1, 1), ((2, 2), (1, 3)), feature_group_count=4,
                                     dimension_numbers=dn)
    return jnp.sum(y.mean((1, 2)) @ w)

  g = jax.jit(jax.grad(f, argnums=(1, 2, 3)))
  xla = g.lower(x, k1, k2, w).compile().cost_analysis()
  xla = (xla[0] if isinstance(xla, (list, tuple)) else xla)["flops"]
  analytic = flops.jaxpr_matmul_flops(jax.make_jaxpr(g)(x, k1, k2, w).jaxpr)
  assert analytic == pytest.approx(xla, rel=0.02)


def test_steps_for_budget_and_tolerance(tmp_path):
  assert flops.steps_for_budget(1e9, 3e7) == 33
  assert flops.steps_for_budget(1e6, 3e7) == 1
  runs = sweep.load_runs(TINY)
  small = sweep.grid(base="configs/tiny_test.py", stage="motion", widths=(0.5,),
                     budgets=(5e7,), overrides={"motion.sigma_passes": 1})
  plans = plan.make_plans(runs + small, str(tmp_path))
  per_step = plans[0]["flops_per_step"]
  assert len({p["flops_per_step"] for p in plans}) == 1  # one size: compiled once, cached
  assert json.load(open(tmp_path / "flops_cache.json"))
  for p in plans[:2]:  # the tiny sweep's two budgets
    assert p["status"] == "planned"
    assert abs(p["flops_planned"] - p["flops_budget"]) <= 0.1 * p["flops_budget"]
    assert p["steps"] == round(p["flops_budget"] / per_step)
    assert flops.ANALYTIC_RANGE[0] <= p["flops_analytic_per_step"] / per_step <= 1.02
  # 5e7 FLOPs is ~1.4 steps: 1 step misses the budget by > 10 %.
  assert plans[2]["status"] == "skipped" and "raise the budget" in plans[2]["error"]


def test_fit_recovers_known_exponents():
  rng = np.random.default_rng(0)
  c = np.geomspace(1e10, 1e14, 8)
  loss = 1e3 * c ** -0.25 + 0.2
  exact = fit.fit_power_law(c, loss)
  assert exact["b"] == pytest.approx(0.25, abs=1e-4)
  assert exact["c"] == pytest.approx(0.2, abs=1e-4)
  assert exact["a"] == pytest.approx(1e3, rel=1e-3)
  noisy = fit.fit_power_law(c, loss * np.exp(rng.normal(0, 0.01, c.size)))
  assert noisy["b"] == pytest.approx(0.25, abs=0.02)
  # Chinchilla-form losses L(N, D = C / 6N): N_opt ~ C^(beta / (alpha + beta)).
  a_, b_ = 0.34, 0.28
  pts = [{"params": n, "budget": cc, "flops": cc, "seed": 0,
          "loss": 1.69 + 406.4 * n ** -a_ + 410.7 * (cc / (6 * n)) ** -b_}
         for cc in np.geomspace(1e15, 1e19, 5) for n in np.geomspace(1e5, 1e9, 25)]
  assert fit.fit_n_opt(pts)["k"] == pytest.approx(b_ / (a_ + b_), abs=0.01)
  # Seeds: two noisy seeds per cell -> a bootstrap interval around the point estimate.
  seeded = [{"params": 1.0, "budget": cc, "flops": cc, "seed": s,
             "loss": (1e3 * cc ** -0.25 + 0.2) * np.exp(rng.normal(0, 0.01))}
            for cc in c for s in (0, 1)]
  boot = fit.bootstrap(seeded, samples=50)
  lo, mid, hi = boot["b"]
  assert lo <= mid <= hi and lo < 0.25 < hi + 0.02


def _env(tmp_path):
  pypath = [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
  return {**os.environ, "PYTHONPATH": os.pathsep.join(pypath),
          "TFDS_DATA_DIR": os.environ.get("TFDS_DATA_DIR", str(tmp_path / "tfds"))}


def test_two_run_sweep_killed_resumed_and_analysed(tmp_path):
  """Two runs; kill -9 the sweep once the first result exists; resume it through submitit's
  local executor: the first run is not recomputed, the second finishes, analysis writes every
  artefact."""
  pytest.importorskip("submitit", reason="the scaling extra: pip install -e '.[scaling]'")
  w = tmp_path / "w"
  cmd = [sys.executable, "-m", "osmnet_jax.scaling", "--sweep", TINY, "--workdir", str(w)]
  env = _env(tmp_path)
  dry = subprocess.run(cmd + ["--dry-run"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=300)
  assert dry.returncode == 0, dry.stderr[-3000:]
  names = [r.name for r in sweep.load_runs(TINY)]
  assert all(n in dry.stdout for n in names)
  assert not (w / "runs" / names[0] / "result.json").exists()  # a dry run trains nothing

  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  first = w / "runs" / names[0] / "result.json"
  deadline = time.time() + 400
  while not first.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.5)
  assert first.exists(), "the first run did not finish"
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  before = (first.read_bytes(), first.stat().st_mtime_ns)

  resumed = subprocess.run(cmd + ["--launcher", "slurm", "--submitit-cluster", "local",
                                  "--timeout-min", "10"],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert (first.read_bytes(), first.stat().st_mtime_ns) == before
  results = [json.loads((w / "runs" / n / "result.json").read_text()) for n in names]
  for r in results:
    assert r["status"] == "ok", r.get("error")
    assert abs(r["flops_actual"] - r["flops_budget"]) <= 0.1 * r["flops_budget"]
    assert r["steps"] == round(r["flops_budget"] / r["flops_per_step"])
    assert np.isfinite(r["heldout_loss"]) and r["pose_fd"] is not None
  with open(w / "runs.csv") as f:
    rows = list(csv.DictReader(f))
  assert {"name", "stage", "params", "flops_budget", "flops_actual", "steps", "heldout_loss",
          "status"} <= set(rows[0])
  assert sorted(r["name"] for r in rows) == sorted(names)
  fitted = json.loads((w / "fit.json").read_text())
  assert set(fitted["frontier"]) >= {"a", "b", "c"} and "n_opt_exponent" in fitted
  for name in ("frontier.png", "summary.md"):
    assert (w / name).stat().st_size > 0


def test_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
  """A worker that fails (here: its base config is missing) writes a failed result.json with
  the error; one that dies without a result (exit 137) gets one from the launcher; the other
  runs still start, each on its own device group."""
  from osmnet_jax.scaling import launch

  bad = sweep.Run(name="bad", stage="motion", base="configs/no_such_config.py", steps=2)
  dirs = []
  for name in ("bad", "killed", "fine"):
    d = tmp_path / name
    d.mkdir()
    p = {"run": {**bad.to_dict(), "name": name}, "name": name, "stage": "motion", "steps": 2,
         "params": 1, "flops_per_step": 1.0, "flops_analytic_per_step": 1.0,
         "flops_budget": None}
    (d / "plan.json").write_text(json.dumps(p))
    dirs.append(str(d))
  assert launch.run_worker(dirs[0], {}) == 1
  res = json.loads((tmp_path / "bad" / "result.json").read_text())
  assert res["status"] == "failed" and "no_such_config.py" in res["error"]

  seen = []

  def fake_worker(d, env):
    seen.append((os.path.basename(d), env))
    if d.endswith("killed"):
      (tmp_path / "killed" / "worker.log").write_text("Killed\n")
      launch._record_crash(d, 137)  # noqa: SLF001
      return 137
    return 0

  monkeypatch.setattr(launch, "run_worker", fake_worker)
  launch.run_local(dirs[1:], parallel=2, devices_per_run=2, device_env="CUDA_VISIBLE_DEVICES",
                   num_devices=4)
  killed = json.loads((tmp_path / "killed" / "result.json").read_text())
  assert killed["status"] == "failed" and "status 137" in killed["error"]
  assert sorted(n for n, _ in seen) == ["fine", "killed"]
  groups = {e["CUDA_VISIBLE_DEVICES"] for _, e in seen}
  assert groups <= {"0,1", "2,3"}
  with pytest.raises(ValueError, match="needs 6 devices"):
    launch.run_local(dirs[1:], parallel=3, devices_per_run=2, num_devices=4)
