"""ExpressionEncoder, landmark loss and the expression stage (one step, runner, renderer loading)."""  # noqa: E501
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default
from osmnet_jax import checkpointing, renderer
from osmnet_jax import workdir as workdir_lib
from osmnet_jax.face import geometry as fg
from osmnet_jax.models import expression as ex
from osmnet_jax.runtime import sharding
from osmnet_jax.stages import expression as es
from osmnet_jax.stages import renderer_step as rs

B, T, S = 2, 4, 32


# synth_talk/64px's pose statistics (yaw, pitch, roll, tx, ty, scale).
POSE_MEAN = (-0.001, 0.010, -0.0004, 0.003, 0.069, 0.637)
POSE_STD = (0.175, 0.107, 0.075, 0.035, 0.032, 0.033)


def tiny_expression_config(**kw) -> ml_collections.ConfigDict:
  c = default.get_config().expression
  c.update(dict(num_frames=T, batch_size=B, audio_dim=16, audio_channels=(4, 8), identity_dim=16,
                identity_channels=(4, 8), expression_dim=16, temporal_layers=1,
                landmark_hidden=32, kp_hidden=32, warmup_steps=1, num_steps=10,
                # the default inplane_pose="geometric" reads them (the stage fills them from
                # the dataset; these tests build it directly)
                pose_mean=POSE_MEAN, pose_std=POSE_STD))
  c.update(kw)
  return c


def random_batch(seed=0, b=B, t=T, size=S):
  r = np.random.RandomState(seed)
  return {"frames": r.randint(0, 256, (b, t, size, size, 3)).astype(np.uint8),
          "source": r.randint(0, 256, (b, size, size, 3)).astype(np.uint8),
          "source_landmarks": (r.rand(b, 68, 2) * size).astype(np.float32),
          "landmarks": (r.rand(b, t, 68, 2) * size).astype(np.float32),
          "mel": (r.randn(b, t, 20, 80) - 7).astype(np.float32),
          "pose": r.randn(b, t, 6).astype(np.float32)}


# ----------------------------------------------------------------------------------------------
def test_landmark_coordinates_follow_the_crop_convention():
  px = jnp.array([-0.5, 31.5, 15.5])  # left edge, right edge, centre of a 32-px crop
  np.testing.assert_allclose(ex.normalise_landmarks(px, 32), [-1.0, 1.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(ex.denormalise_landmarks(ex.normalise_landmarks(px, 32), 32), px,
                             atol=1e-5)


def test_landmark_loss_weights_the_mouth():
  target = jnp.zeros((3, 68, 2))
  mouth_err = target.at[:, fg.MOUTH, :].set(0.1)  # every mouth coordinate off by 0.1
  # 20 mouth points x weight 5 out of a total weight 48 + 100 = 148.
  assert float(ex.landmark_loss(mouth_err, target, 5.0)) == pytest.approx(0.1 * 100 / 148, rel=1e-6)
  assert float(ex.landmark_loss(mouth_err, target, 1.0)) == pytest.approx(0.1 * 20 / 68, rel=1e-6)
  jaw_err = target.at[:, 0, 0].set(0.3)  # one non-mouth x coordinate off by 0.3
  assert float(ex.landmark_loss(jaw_err, target, 5.0)) == pytest.approx(0.3 / (2 * 148), rel=1e-6)
  # Signs do not matter (L1).
  assert float(ex.landmark_loss(-mouth_err, target, 5.0)) == pytest.approx(0.1 * 100 / 148, rel=1e-6)  # noqa: E501


def test_encoder_shapes_determinism_and_identity_at_init():
  cfg = tiny_expression_config()
  enc = ex.from_config(cfg)
  b = random_batch()
  src = b["source"].astype(np.float32) / 255.0
  src_lm = ex.normalise_landmarks(b["source_landmarks"], S)
  init = jax.jit(enc.init)
  p0 = init(jax.random.PRNGKey(0), b["mel"], src, src_lm, b["pose"])
  p0b = init(jax.random.PRNGKey(0), b["mel"], src, src_lm, b["pose"])
  p1 = init(jax.random.PRNGKey(1), b["mel"], src, src_lm, b["pose"])
  for x, y in zip(jax.tree.leaves(p0), jax.tree.leaves(p0b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  k = p0["params"]["audio"]["Dense_0"]["kernel"]
  assert np.abs(np.asarray(k) - np.asarray(p1["params"]["audio"]["Dense_0"]["kernel"])).max() > 1e-3
  out = jax.jit(enc.apply)(p0, b["mel"], src, src_lm, b["pose"])
  assert out["expression"].shape == (B, T, cfg.expression_dim)
  assert out["identity"].shape == (B, cfg.identity_dim)
  assert out["landmarks"].shape == (B, T, 68, 2)
  # Zero-initialised residual head: the first prediction is the source face in every frame.
  np.testing.assert_allclose(np.asarray(out["landmarks"]),
                             np.broadcast_to(np.asarray(src_lm)[:, None], (B, T, 68, 2)), atol=1e-6)
  # Expression depends on the audio: a different mel window gives a different feature.
  out2 = jax.jit(enc.apply)(p0, b["mel"] + 3.0, src, src_lm, b["pose"])
  assert np.abs(np.asarray(out2["expression"] - out["expression"])).mean() > 1e-2


@pytest.fixture(scope="module")
def tiny_renderer():
  cfg = renderer.tiny_config()
  return cfg, jax.device_get(renderer.init(jax.random.PRNGKey(7), cfg, S, False))


def test_resolve_renderer_from_the_renderer_checkpoint(tmp_path, tiny_renderer):
  rcfg, rvars = tiny_renderer
  cfg = ml_collections.ConfigDict(dict(seed=0, renderer=rcfg, expression=tiny_expression_config()))
  _, _, source = es.resolve_renderer(cfg, str(tmp_path), S)
  assert source == "init"  # nothing there yet
  # The renderer stage's RendererState (params / batch_stats keyed by module, + optimizer),
  # saved unreplicated, with the model config beside it (what run_renderer writes).
  marked = jax.tree.map(lambda x: x + 1.0, rvars)
  state = rs.RendererState(step=np.int32(5),
                           params={k: v["params"] for k, v in marked.items()},
                           batch_stats={k: v["batch_stats"] for k, v in marked.items()},
                           opt_state={"kp_detector": {"mu": np.zeros(3)}}, loss_params={})
  ck = checkpointing.Checkpointer(os.path.join(tmp_path, "checkpoints", "renderer"))
  ck.save(5, state, {"step": 5}, force=True)
  ck.close()
  with pytest.raises(workdir_lib.WorkdirError, match="renderer_config.json"):
    es.resolve_renderer(cfg, str(tmp_path), S)  # a checkpoint without its config: loud
  with open(os.path.join(tmp_path, "renderer_config.json"), "w") as f:
    json.dump({"model": rcfg.to_dict(), "image_size": S}, f, default=list)
  got, mcfg = workdir_lib.load_renderer(str(tmp_path))
  assert set(got) == {"kp_detector", "generator"} and mcfg.num_kp == rcfg.num_kp
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(marked)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # What the stage runner uses: checkpoint under 'auto', a fresh init under 'init', the argument
  # when one is given.
  got, mcfg, source = es.resolve_renderer(cfg, str(tmp_path), S)
  assert source == "checkpoint" and mcfg.num_kp == rcfg.num_kp
  np.testing.assert_array_equal(got["generator"]["params"]["final"]["kernel"],
                                marked["generator"]["params"]["final"]["kernel"])
  _, _, source = es.resolve_renderer(cfg, str(tmp_path), S, renderer_variables=rvars)
  assert source == "argument"
  cfg.expression.renderer_source = "init"
  got, _, source = es.resolve_renderer(cfg, str(tmp_path), S)
  assert source == "init"
  np.testing.assert_array_equal(  # seed + 1, as documented
      np.asarray(got["generator"]["params"]["final"]["kernel"]),
      np.asarray(renderer.init(jax.random.PRNGKey(1), rcfg, S, False)
                 ["generator"]["params"]["final"]["kernel"]))


def test_run_expression_trains_models_not_the_frozen_renderer(tmp_path, tiny_synth):
  """Stage runner end to end on the tiny dataset: 2 steps (incl. the rendered-frame L1), finite
  losses, both models move, the renderer does not; held-out eval; checkpoint reload."""
  rcfg = renderer.tiny_config()
  cfg = ml_collections.ConfigDict()
  cfg.seed = 0
  cfg.parallel = "jit"
  cfg.renderer = rcfg
  cfg.data = ml_collections.ConfigDict(dict(shuffle_buffer=8, prefetch=1, augment=()))
  cfg.expression = tiny_expression_config(num_steps=2, log_every=1, save_every=1, eval_passes=1,
                                          eval_batch=2, w_rec=0.5)
  mesh = sharding.make_mesh()
  res = es.run_expression(cfg, tiny_synth, mesh, str(tmp_path), None)
  assert res["step"] == 2 and res["renderer_source"] == "init"
  m = res["last_metrics"]  # step 2
  for k in ("loss", "landmark_loss", "kp_value_l1", "kp_jacobian_l1", "rec_l1", "grad_norm"):
    assert np.isfinite(m[k]), (k, m)
  assert m["grad_norm"] > 0 and m["rec_l1"] > 0.01
  expected = (m["landmark_loss"] + m["kp_value_l1"] + 0.5 * m["kp_jacobian_l1"]
              + 0.5 * m["rec_l1"])
  assert m["loss"] == pytest.approx(expected, rel=1e-5)
  ev = res["eval"]
  # 2 held-out clips of 25 frames, one window of T frames each.
  assert ev["split"] == "test" and ev["num_frames"] == 2 * T and ev["image_size"] == S
  for k in ("mouth_open_corr", "landmark_l1", "landmark_l1_px", "mouth_l1_px", "lmd_mouth_px",
            "copy_source_landmark_l1_px", "kp_value_l1", "kp_jacobian_l1",
            "mouth_open_corr_shuffled_audio"):
    assert np.isfinite(ev[k]), (k, ev)
  assert -1.0 <= ev["mouth_open_corr"] <= 1.0
  assert ev["landmark_l1"] == pytest.approx(ev["landmark_l1_px"] * 2 / S, rel=1e-6)
  assert os.path.exists(os.path.join(res["checkpoint_dir"], "eval.json"))

  expr = workdir_lib.load_expression(str(tmp_path))
  stage, params, loaded_renderer = es.ExpressionStage(expr.cfg, expr.renderer_cfg), expr.params, \
      expr.renderer_variables
  assert stage.cfg.num_frames == T and expr.step == 2
  # Both trained models moved from their initialisation (run_expression's init rng) ...
  init_rng = jax.random.split(jax.random.PRNGKey(cfg.seed))[0]
  init = jax.device_get(stage.init_params(init_rng, S))
  for name in ("expression", "keypoints"):
    moved = max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(
        jax.tree.leaves(params[name]), jax.tree.leaves(init[name])))
    assert moved > 1e-6, name
  assert np.abs(params["keypoints"]["out"]["kernel"]).max() > 0  # zero-initialised, now trained
  # Generation path: the reloaded stage animates a source with given mel windows and poses.
  gen_batch = {k: v for k, v in random_batch(seed=3).items() if k != "frames" and k != "landmarks"}
  anim = jax.device_get(stage.animate(params, loaded_renderer, gen_batch))
  assert anim["frames"].shape == (B, T, S, S, 3) and anim["landmarks"].shape == (B, T, 68, 2)
  assert anim["kp"]["value"].shape == (B, T, rcfg.num_kp, 2)
  assert np.isfinite(anim["frames"]).all() and 0 <= anim["frames"].min() <= anim["frames"].max() <= 1  # noqa: E501
  # ... and the renderer in the checkpoint is, bit for bit, the one "init" made.
  want = renderer.init(jax.random.PRNGKey(cfg.seed + 1), rcfg, S, False)
  for a, b in zip(jax.tree.leaves(loaded_renderer), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
