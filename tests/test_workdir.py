"""osmnet_jax/workdir.py: one loader per trained part, one checkpoint format, clear errors."""
from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from configs import default
from osmnet_jax import checkpointing, renderer
from osmnet_jax import workdir as workdir_lib
from osmnet_jax.runtime import sharding
from osmnet_jax.stages import motion as motion_stage


def tiny_motion_cfg():
  c = default.get_config().motion
  c.update(num_frames=8, overlap=4, num_bases=4, motion_dim=8, hidden=16, depth=1, audio_dim=16,
           audio_channels=(4, 8), rhythm_dim=4, batch_size=4, num_steps=3)
  return c


def _write_motion(wd: str, replicas: int = 0) -> dict:
  """A motion checkpoint as run_motion writes it (replicas > 0: the replicated pmap layout of
  workdirs written before checkpoints were saved unreplicated). Returns the saved params."""
  cfg = tiny_motion_cfg()
  state = jax.device_get(motion_stage.MotionStage(cfg).init_state(jax.random.PRNGKey(0)))
  ckdir = workdir_lib.motion_dir(wd, "osmnet")
  saved = sharding.stack_replicas(state, replicas) if replicas else state
  ck = checkpointing.Checkpointer(ckdir)
  ck.save(3, saved, {"step": 3, "data_step": 3, "stage": "motion"}, force=True)
  ck.close()
  extra = {"parallel": "pmap", "replicas": replicas} if replicas else {"parallel": "jit"}
  with open(os.path.join(ckdir, workdir_lib.MOTION_CONFIG), "w") as f:
    json.dump({**cfg.to_dict(), **extra}, f)
  with open(os.path.join(ckdir, workdir_lib.SIGMA), "w") as f:
    json.dump({"sigma": [0.5, 1.0, 1.5, 2.0]}, f)
  return state.params


def _same(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_load_motion_one_format(tmp_path):
  params = _write_motion(str(tmp_path))
  motion = workdir_lib.load_motion(str(tmp_path), "osmnet")
  _same(motion.params, params)
  assert motion.stats["checkpoint_step"] == 3 and motion.stats["sigma"] == [0.5, 1.0, 1.5, 2.0]
  assert workdir_lib.trained_motion_models(str(tmp_path)) == ("osmnet",)
  with pytest.raises(workdir_lib.WorkdirError, match="motion_config.json missing"):
    workdir_lib.load_motion(str(tmp_path), "noise_sampler")


def test_replicated_workdir_fails_clearly_and_upgrades(tmp_path, capsys):
  """A workdir whose pmap run saved replicated checkpoints is refused with the command that
  converts it; after `python -m osmnet_jax.workdir upgrade W` it loads, same params and step."""
  params = _write_motion(str(tmp_path), replicas=2)
  with pytest.raises(workdir_lib.WorkdirError,
                     match="replicated.*python -m osmnet_jax.workdir upgrade"):
    workdir_lib.load_motion(str(tmp_path), "osmnet")
  assert workdir_lib.main(["upgrade", str(tmp_path)]) == 0
  assert "rewrote" in capsys.readouterr().out
  motion = workdir_lib.load_motion(str(tmp_path), "osmnet")
  _same(motion.params, params)
  assert motion.stats["checkpoint_step"] == 3
  # Training resumes from it: the stage's restore target (MotionState) fits the rewritten tree.
  target = jax.device_get(motion_stage.MotionStage(tiny_motion_cfg()).init_state(
      jax.random.PRNGKey(1)))
  ck = checkpointing.Checkpointer(workdir_lib.motion_dir(str(tmp_path), "osmnet"))
  state, meta = ck.restore(target)
  ck.close()
  assert type(state) is type(target) and meta["step"] == 3
  _same(state.params, params)
  assert workdir_lib.main(["upgrade", str(tmp_path)]) == 0  # idempotent
  assert "nothing to upgrade" in capsys.readouterr().out


def test_incompatible_checkpoint_names_the_config(tmp_path):
  _write_motion(str(tmp_path))
  path = os.path.join(workdir_lib.motion_dir(str(tmp_path), "osmnet"), workdir_lib.MOTION_CONFIG)
  with open(path) as f:
    saved = json.load(f)
  saved["motion_dim"] = 12
  with open(path, "w") as f:
    json.dump(saved, f)
  with pytest.raises(workdir_lib.WorkdirError, match="incompatible.*motion_dim=12"):
    workdir_lib.load_motion(str(tmp_path), "osmnet")


def test_renderer_trained_or_converted_and_clear_errors(tmp_path):
  wd = str(tmp_path)
  with pytest.raises(workdir_lib.WorkdirError, match="no renderer.*train.py.*convert"):
    workdir_lib.load_renderer(wd)
  cfg = renderer.tiny_config()
  rvars = jax.device_get(renderer.init(jax.random.PRNGKey(1), cfg, 32, False))
  workdir_lib.save_converted(rvars, cfg, os.path.join(wd, workdir_lib.CONVERTED))
  assert workdir_lib.has_renderer(wd)
  got, got_cfg = workdir_lib.load_renderer(wd)
  assert got_cfg.num_kp == cfg.num_kp
  _same(got, rvars)


def test_missing_files_name_the_command(tmp_path):
  with pytest.raises(workdir_lib.WorkdirError, match="does not exist.*train.py"):
    workdir_lib.load_config(str(tmp_path / "nowhere"))
  with pytest.raises(workdir_lib.WorkdirError, match="config.json missing"):
    workdir_lib.load_config(str(tmp_path))
  with pytest.raises(workdir_lib.WorkdirError, match="pose_stats.json missing.*train.py"):
    workdir_lib.load_pose_stats(str(tmp_path))
  with pytest.raises(workdir_lib.WorkdirError, match="no expression checkpoint.*train.py"):
    workdir_lib.load_expression(str(tmp_path))


def test_pmap_run_saves_the_unreplicated_state(tiny_synth, tmp_path):
  """A pmap run checkpoints the same tree as a jit run: the loader needs no device count, and
  the run resumes from it (a rerun finds the finished checkpoint)."""
  from configs import tiny_test

  cfg = tiny_test.get_config()
  cfg.parallel = "pmap"
  cfg.motion = tiny_motion_cfg()
  cfg.motion.update(num_steps=2, save_every=1, log_every=1, sigma_passes=1)
  mesh = sharding.make_mesh()
  out = motion_stage.run_motion(cfg, tiny_synth, mesh, str(tmp_path), None)
  motion = workdir_lib.load_motion(str(tmp_path), "osmnet")
  assert motion.stats["checkpoint_step"] == out["step"] == 2
  want = jax.device_get(motion_stage.MotionStage(cfg.motion).init_state(jax.random.PRNGKey(0)))
  for got, w in zip(jax.tree.leaves(motion.params), jax.tree.leaves(want.params), strict=True):
    assert np.shape(got) == np.shape(w)
  again = motion_stage.run_motion(cfg, tiny_synth, mesh, str(tmp_path), None)
  assert again["step"] == 2 and again["last_metrics"] == {}
