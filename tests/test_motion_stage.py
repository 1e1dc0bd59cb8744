"""Motion stage: run_motion (a few steps) -> sigma -> evaluation on the tiny
synth_talk, and jit-over-mesh == FSDP (params split over 4 devices) == pmap == single-device
updates on 4 simulated CPU devices."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from configs import default
from osmnet_jax import workdir as workdir_lib
from osmnet_jax.runtime import sharding
from osmnet_jax.stages import motion as motion_stage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_cfg(model="osmnet", **kw):
  """T=8 <= the tiny dataset's 25-frame clips; every size small enough for a 2-core CPU."""
  c = default.get_config().motion
  c.sigma_holdout_pct = 0  # all 6 tiny train clips train and measure sigma
  c.update(model=model, num_frames=8, overlap=4, num_bases=4, motion_dim=8, hidden=16, depth=1,
           audio_dim=16, audio_channels=(4, 8), rhythm_dim=4, lstm_layers=1, noise_dim=4,
           batch_size=4, num_steps=3, log_every=1, save_every=2, sigma_passes=1, warmup_steps=1,
           **kw)
  return c


def _batch(b=4, t=8, seed=0):
  rng = np.random.default_rng(seed)
  return {"mel": rng.normal(-7, 4, (b, t, 20, 80)).astype(np.float32),
          "pose": rng.normal(size=(b, t, 6)).astype(np.float32)}


def test_run_motion_stores_sigma_and_evaluates(tiny_synth, tmp_path):
  from configs import tiny_test
  from osmnet_jax.evaluation import motion as motion_eval

  cfg = tiny_test.get_config()
  mesh = sharding.make_mesh()
  workdir = str(tmp_path)
  # osmnet and audio2pose_lstm train 3 steps here (jit over the mesh); noise_sampler trains
  # 3 steps in the equivalence test below (each layout), which checks its loss too.
  for model in ("osmnet", "audio2pose_lstm"):
    cfg.motion = tiny_cfg(model)
    out = motion_stage.run_motion(cfg, tiny_synth, mesh, workdir, None)
    assert out["step"] == 3 and np.isfinite(out["last_metrics"]["loss"])
    assert out["last_metrics"]["loss"] > 0
    if model == "osmnet":
      assert {"rec_l1", "map_mse", "rec_mapped_l1"} <= set(out["last_metrics"])
      assert out["last_metrics"]["q_orth_err"] < 1e-5
  # The trained bases are still orthonormal.
  motion = workdir_lib.load_motion(workdir, "osmnet")
  q = jax.jit(lambda p: motion.model.apply({"params": p}, method=motion.model.bases))(
      motion.params)
  np.testing.assert_allclose(np.asarray(q.T @ q), np.eye(4), atol=1e-5)
  ckdir = workdir_lib.motion_dir(workdir, "osmnet")
  with open(os.path.join(ckdir, "sigma.json")) as f:
    stats = json.load(f)
  assert len(stats["sigma"]) == 4 and all(s > 0 for s in stats["sigma"])
  assert stats["num_windows"] == 6  # one pass over the 6 train clips
  # A rerun finds the finished checkpoint and does not train again.
  cfg.motion = tiny_cfg("osmnet")
  again = motion_stage.run_motion(cfg, tiny_synth, mesh, workdir, None)
  assert again["step"] == 3 and again["last_metrics"] == {}
  res = motion_eval.evaluate_motion(workdir, tiny_synth, num_samples=3)
  assert set(res) == {"osmnet", "audio2pose_lstm"}
  hm = res["osmnet"]["head_motion"]
  assert hm["diversity"] > 0 and hm["true_diversity"] > 0
  assert hm["diversity_ratio"] == pytest.approx(hm["diversity"] / hm["true_diversity"])
  assert 0 <= hm["out_of_range_frac"] <= 1 and hm["pose_fd"] >= 0
  assert res["osmnet"]["meta"]["diversity_at_r0"] == 0.0
  assert res["osmnet"]["meta"]["num_clips"] == 2 and res["osmnet"]["meta"]["num_frames"] == 25
  assert res["audio2pose_lstm"]["head_motion"]["diversity"] == 0.0  # one-to-one


_EQUIVALENCE = textwrap.dedent("""
    import jax
    jax.config.update("jax_num_cpu_devices", 4)
    import json, sys
    import numpy as np
    sys.path.insert(0, {root!r})
    from osmnet_jax.runtime import sharding
    from osmnet_jax.stages import motion as motion_stage
    from tests.test_motion_stage import tiny_cfg, _batch

    out = {{}}
    for name, model, kw in (("osmnet", "osmnet", {{}}), ("noise_sampler", "noise_sampler", {{}}),
                            ("osmnet_clipped", "osmnet", {{"grad_clip": 1e-3}})):
      # decoder_skip off: with it, one output bias's L1 gradient cancels exactly on this tiny
      # batch and Adam scales the layouts' different rounding residues there up to a sizeable
      # fraction of a step; the layouts' equivalence does not depend on the decoder branch.
      stage = motion_stage.MotionStage(tiny_cfg(model, lr=1e-3, decoder_skip=False, **kw))
      init = jax.device_get(stage.init_state(jax.random.PRNGKey(0)))
      batches = [_batch(8, seed=s) for s in range(3)]
      rngs = [jax.random.PRNGKey(10 + s) for s in range(3)]
      single = jax.jit(stage.train_step)
      mesh_step = stage.make_jit_step(sharding.make_mesh())
      pmap_step = stage.make_pmap_step()
      # FSDP: params and Adam moments split over a 4-device 'fsdp' axis.
      fmesh = sharding.make_mesh(data=1, fsdp=4)
      fsh = stage.state_shardings(fmesh, init)
      fsdp_step = stage.make_jit_step(fmesh, fsh)
      # ZeRO-1 (runtime/zero1.py): Adam moments split over the 4 devices, gradient
      # reduce-scattered, global-norm clip on the whole gradient.
      zmesh = sharding.make_mesh()
      zsh = stage.state_shardings(zmesh, init, shard_optimizer=True)
      zero1_step = stage.make_zero1_step(zmesh, zsh)
      s5 = jax.device_put(init, zsh)
      s1, s2 = init, jax.device_put(init, sharding.replicated(sharding.make_mesh()))
      s3 = sharding.replicate(init)
      s4 = jax.device_put(init, fsh)
      for b, r in zip(batches, rngs):
        s1, m1 = single(s1, b, r)
        s2, m2 = mesh_step(s2, b, r)
        s3, m3 = pmap_step(s3, {{k: v.reshape((4, 2) + v.shape[1:]) for k, v in b.items()}}, r)
        s4, m4 = fsdp_step(s4, jax.device_put(b, sharding.batch_sharding(fmesh)), r)
        s5, m5 = zero1_step(s5, b, r)
      split = sharding.sharded_fraction(s4.params)
      p1, p2 = jax.device_get(s1.params), jax.device_get(s2.params)
      p3 = jax.device_get(sharding.unreplicate(s3.params))
      diff = lambda a, b: max(float(np.abs(x - y).max())
                              for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
      moved = diff(p1, jax.device_get(init.params))
      out[name] = {{"mesh": diff(p1, p2), "pmap": diff(p1, p3), "moved": moved,
                   "zero1": diff(p1, jax.device_get(s5.params)),
                   "zero1_opt_split": sharding.sharded_fraction(s5.opt_state),
                   "zero1_params_split": sharding.sharded_fraction(s5.params),
                   "grad_norm": [float(m1["grad_norm"]), float(m5["grad_norm"])],
                    "fsdp": diff(p1, jax.device_get(s4.params)), "fsdp_split": split,
                    "devices": jax.device_count(),
                    "loss": [float(m1["loss"]), float(m2["loss"]), float(np.mean(m3["loss"])),
                             float(m4["loss"]), float(m5["loss"])],
                    "pmap_replicas_equal": diff(jax.tree.map(lambda x: x[0], s3.params),
                                                jax.tree.map(lambda x: x[3], s3.params))}}
    print("RESULT" + json.dumps(out))
""")


def test_jit_mesh_pmap_and_single_device_give_the_same_update():
  env = {**os.environ, "PYTHONPATH": ROOT, "XLA_FLAGS": ""}
  proc = subprocess.run([sys.executable, "-c", _EQUIVALENCE.format(root=ROOT)], env=env,
                        capture_output=True, text=True, timeout=600, cwd=ROOT)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
  assert proc.returncode == 0 and lines, proc.stderr[-3000:]
  res = json.loads(lines[-1][len("RESULT"):])
  for model, r in res.items():
    assert r["devices"] == 4
    assert r["moved"] > 1e-3, (model, r)            # 3 steps really changed the params
    assert r["mesh"] < 2e-5, (model, r)             # jit over the 4-device mesh == 1 device
    assert r["pmap"] < 2e-5, (model, r)             # pmap + pmean == 1 device
    assert r["fsdp"] < 2e-5, (model, r)             # params split over 'fsdp' == 1 device
    assert r["fsdp_split"] > 0.3, (model, r)        # ... and really split (0.46 and up)
    # ZeRO-1 == 1 device, moments split, params whole, the same (clipped) gradient norm.
    assert r["zero1"] < 2e-5, (model, r)
    assert r["zero1_opt_split"] > 0.3 and r["zero1_params_split"] == 0.0, (model, r)
    np.testing.assert_allclose(r["grad_norm"][1], r["grad_norm"][0], rtol=1e-5)
    assert r["pmap_replicas_equal"] == 0.0
    assert np.all(np.isfinite(r["loss"])) and r["loss"][0] > 0
    np.testing.assert_allclose(r["loss"], r["loss"][0], rtol=1e-5)
  # The clip really acts in that run (the norm is far above 1e-3): ZeRO-1 must apply it to the
  # whole gradient, not to each device's slice, to match one device.
  assert res["osmnet_clipped"]["grad_norm"][0] > 100 * 1e-3, res


def test_sigma_holdout_splits():
  c = tiny_cfg()
  assert motion_stage.splits(c) == ("train", "train")
  c.sigma_holdout_pct = 10
  assert motion_stage.splits(c) == ("train[:90%]", "train[90%:]")
  c.sigma_holdout_pct = 100
  with pytest.raises(ValueError, match="sigma_holdout_pct"):
    motion_stage.splits(c)
