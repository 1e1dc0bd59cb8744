"""expression.inplane_pose="geometric": the frame's roll, position and scale move the predicted
keypoints by an exact image-plane similarity; the KeypointPredictor learns the rest."""
from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from osmnet_jax import renderer
from osmnet_jax.face import geometry as fg
from osmnet_jax.inference import keypoints as keypoints_lib
from osmnet_jax.models import keypoint_predictor as kp_lib
from osmnet_jax.stages import expression as es
from osmnet_jax.stages import joint as joint_stage
from tests.test_expression import POSE_MEAN, POSE_STD, B, S, T, random_batch, tiny_expression_config

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCHMARKS)
import inplane_keypoint_ceiling as ceiling  # noqa: E402
import renderer_motion_chain as rmc  # noqa: E402

MEAN, STD = POSE_MEAN, POSE_STD  # synth_talk/64px's pose statistics


def _normalise(raw):
  return (np.asarray(raw, np.float64) - MEAN) / STD


def _angle(p, q):
  """Radians (image y down, so > 0 is clockwise on screen) of the similarity p -> q: the
  chain benchmark's Procrustes angle."""
  return np.radians(rmc.procrustes_angle(p, q))


def test_similarity_is_the_projection_for_in_plane_motion():
  """A face projected at the mean roll/position/scale, moved by the similarity, lands exactly
  where face/geometry.project puts it at the frame's pose (same yaw and pitch)."""
  r = np.random.RandomState(0)
  for _ in range(5):
    yaw, pitch = r.uniform(-0.3, 0.3, 2)
    mean_pose = np.array([yaw, pitch, MEAN[2], MEAN[3], MEAN[4], MEAN[5]])
    frame = mean_pose.copy()
    frame[2:] += r.randn(4) * np.array(STD[2:]) * 2  # roll, tx, ty, scale at 2 std
    n_mean = (fg.project(fg.MEAN_FACE, mean_pose, 2)[0] + 0.5) - 1.0  # size 2: n = p + 0.5 - 1
    n_frame = (fg.project(fg.MEAN_FACE, frame, 2)[0] + 0.5) - 1.0
    a, b = kp_lib.inplane_similarity(jnp.asarray(_normalise(frame), jnp.float32), MEAN, STD)
    moved = n_mean @ np.asarray(a, np.float64).T + np.asarray(b, np.float64)
    np.testing.assert_allclose(moved, n_frame, atol=2e-5)
  # At the mean pose the similarity is the identity.
  a, b = kp_lib.inplane_similarity(jnp.zeros(6), MEAN, STD)
  np.testing.assert_allclose(a, np.eye(2), atol=1e-7)
  np.testing.assert_allclose(b, 0.0, atol=1e-7)


def _predictor_and_params(seed=0):
  cfg = tiny_expression_config(inplane_pose="geometric", pose_mean=MEAN, pose_std=STD)
  pred = kp_lib.from_config(cfg)
  r = np.random.RandomState(seed)
  k = 10
  kp_src = {"value": jnp.asarray(r.uniform(-0.6, 0.6, (B, k, 2)), jnp.float32),
            "jacobian": jnp.asarray(np.eye(2) + 0.1 * r.randn(B, k, 2, 2), jnp.float32)}
  expr = jnp.asarray(r.randn(B, T, cfg.expression_dim), jnp.float32)
  params = pred.init(jax.random.PRNGKey(0), kp_src, expr, jnp.zeros((B, T, 6)))["params"]
  # Trained-looking params: the zero-initialised output layer made nonzero.
  params = jax.tree.map(lambda x: x + 0.05 * jnp.asarray(r.randn(*x.shape), x.dtype), params)
  return cfg, pred, params, kp_src, expr


def test_geometric_keypoints_follow_the_asked_roll_exactly():
  cfg, pred, params, kp_src, expr = _predictor_and_params()
  r = np.random.RandomState(1)
  pose = r.randn(B, T, 6).astype(np.float32)
  rolled = pose.copy()
  rolled[..., 2] += 0.2 / STD[2]  # the same frames turned by 0.2 rad more
  moved = rolled.copy()
  moved[..., 3] += 0.1 / STD[3]   # ... and shifted right by 0.1
  kp = kp_lib.predict(pred, params, kp_src, expr, jnp.asarray(pose), cfg)
  kp_r = kp_lib.predict(pred, params, kp_src, expr, jnp.asarray(rolled), cfg)
  kp_m = kp_lib.predict(pred, params, kp_src, expr, jnp.asarray(moved), cfg)
  v, vr, vm = (np.asarray(x["value"], np.float64) for x in (kp, kp_r, kp_m))
  for i in range(B):
    for t in range(T):
      # roll > 0 is counter-clockwise on screen: -0.2 rad in y-down coordinates.
      assert _angle(v[i, t], vr[i, t]) == pytest.approx(-0.2, abs=1e-4)
  np.testing.assert_allclose(vm - vr, np.broadcast_to([0.1, 0.0], vm.shape), atol=1e-5)
  # The Jacobians turn with their keypoints: J_r = Rz J.
  c, s = np.cos(-0.2), np.sin(-0.2)
  rot = np.array([[c, -s], [s, c]])
  np.testing.assert_allclose(np.asarray(kp_r["jacobian"]),
                             np.einsum("ij,btkjl->btkil", rot, np.asarray(kp["jacobian"])),
                             atol=1e-5)
  # The learned mode sees the roll through its MLP instead: not an exact rotation.
  learned = cfg.copy_and_resolve_references()
  learned.inplane_pose = "learned"
  a = np.asarray(kp_lib.predict(pred, params, kp_src, expr, jnp.asarray(pose), learned)["value"])
  b = np.asarray(kp_lib.predict(pred, params, kp_src, expr, jnp.asarray(rolled), learned)["value"])
  assert abs(_angle(a[0, 0], b[0, 0]) + 0.2) > 0.01


def test_geometric_mode_needs_pose_statistics():
  cfg, pred, params, kp_src, expr = _predictor_and_params()
  cfg.pose_mean = ()
  with pytest.raises(ValueError, match="pose_mean"):
    kp_lib.predict(pred, params, kp_src, expr, jnp.zeros((B, T, 6)), cfg)


def test_stage_training_and_generation_use_the_same_keypoints(tiny_synth, monkeypatch):
  """The stage fills the dataset's statistics; its forward (training) and the generation
  keypoint function agree; a step trains; joint refuses a checkpoint of the other mode."""
  from osmnet_jax.input import pipeline as input_pipeline

  base = tiny_expression_config(inplane_pose="geometric", pose_mean=(), pose_std=())
  ecfg = es.with_pose_stats(base, tiny_synth)
  mean, std = input_pipeline.pose_stats(tiny_synth)
  np.testing.assert_allclose(ecfg.pose_mean, mean, rtol=1e-6)
  np.testing.assert_allclose(ecfg.pose_std, std, rtol=1e-6)
  assert base.pose_mean == ()  # a copy: the run config is not changed
  rcfg = renderer.tiny_config()
  stage = es.ExpressionStage(ecfg, rcfg)
  rvars = renderer.init(jax.random.PRNGKey(7), rcfg, S, False)
  state = stage.init_state(jax.random.PRNGKey(0), rvars, S)
  batch = random_batch(seed=2)
  state, metrics = jax.jit(stage.train_step)(state, batch, jax.random.PRNGKey(1))
  assert np.isfinite(float(metrics["loss"])) and float(metrics["grad_norm"]) > 0
  fwd = stage.forward(state.params, state.renderer, batch, train=False)["kp"]
  _, gen = keypoints_lib.make_keypoints_fn(ecfg, rcfg)(state.params, state.renderer, batch)
  for x, y in zip(jax.tree.leaves(fwd), jax.tree.leaves(gen)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)

  class Base:  # what workdir.load_expression returns, trained in the learned mode
    cfg = tiny_expression_config(inplane_pose="learned")
    checkpoint_dir = "W/checkpoints/expression"
    image_size = int(tiny_synth.info.features["frames"].shape[1])

  import ml_collections
  cfg = ml_collections.ConfigDict(dict(
      expression=base, joint=dict(num_steps=1, lr=1e-4, warmup_steps=1, save_every=1, w_rec=1.0,
                                  w_rec_mouth=0.0, render_frames_per_call=0, batch_size=B)))
  monkeypatch.setattr(joint_stage.workdir_lib, "load_expression", lambda *a, **k: Base())
  with pytest.raises(ValueError, match="inplane_pose='geometric'.*'learned'"):
    joint_stage.run_joint(cfg, tiny_synth, None, "W", None)


def test_canonical_frames_sample_each_frame_at_the_similarity():
  """C(n) = F(a n + b): on frames whose channels are the pixel-centre coordinates x and y
  (bilinear sampling reproduces a linear function exactly), C holds a n + b inside the image."""
  h = w = 16
  xs = (2.0 * np.arange(w) + 1.0) / w - 1.0
  grid = np.stack(np.meshgrid(xs, xs), -1)  # [H,W,2] (x, y)
  img = np.concatenate([grid, np.zeros_like(grid[..., :1])], -1).astype(np.float32)
  frames = jnp.asarray(np.broadcast_to(img, (B, T, h, w, 3)))
  pose = np.random.RandomState(3).randn(B, T, 6).astype(np.float32)  # ~1 std of each
  a, b = kp_lib.inplane_similarity(jnp.asarray(pose), MEAN, STD)
  out = np.asarray(kp_lib.canonical_frames(frames, a, b))
  want = np.einsum("btij,hwj->bthwi", np.asarray(a), grid) + np.asarray(b)[:, :, None, None]
  inside = np.all(np.abs(want) <= 1.0 - 1.0 / w, -1)  # between the outer pixel centres
  assert inside.mean() > 0.5
  np.testing.assert_allclose(out[..., :2][inside], want[inside], atol=1e-5)
  # At the mean in-plane pose nothing moves.
  a0, b0 = kp_lib.inplane_similarity(jnp.zeros((B, T, 6)), MEAN, STD)
  np.testing.assert_allclose(np.asarray(kp_lib.canonical_frames(frames, a0, b0)), frames,
                             atol=1e-6)


def test_canonical_kp_targets():
  """kp_target='canonical': the targets are the detector's keypoints of the canonical frames
  moved back by the similarity; at the mean in-plane pose they are the frame's own; a step
  trains; config_check refuses it with the learned mode."""
  from configs import default
  from osmnet_jax.stages import config_check

  cfg = tiny_expression_config(inplane_pose="geometric", pose_mean=MEAN, pose_std=STD,
                               kp_target="canonical")
  rcfg = renderer.tiny_config()
  stage = es.ExpressionStage(cfg, rcfg)
  rvars = renderer.init(jax.random.PRNGKey(7), rcfg, S, False)
  batch = random_batch(seed=4)
  frames = jnp.asarray(batch["frames"], jnp.float32) / 255.0
  plain = stage.detect(rvars, frames)
  pose = np.asarray(batch["pose"]).copy()
  pose[..., 2:] = 0.0  # yaw and pitch only: the similarity is the identity
  same = stage.kp_targets(rvars, frames, jnp.asarray(pose))
  for x, y in zip(jax.tree.leaves(plain), jax.tree.leaves(same)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5)
  moved = stage.kp_targets(rvars, frames, jnp.asarray(batch["pose"]))
  a, b = kp_lib.inplane_similarity(jnp.asarray(batch["pose"]), MEAN, STD)
  want = kp_lib.move_keypoints(stage.detect(rvars, kp_lib.canonical_frames(frames, a, b)), a, b)
  for x, y in zip(jax.tree.leaves(moved), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)
  assert np.abs(np.asarray(moved["value"]) - np.asarray(plain["value"])).max() > 1e-3
  state = stage.init_state(jax.random.PRNGKey(0), rvars, S)
  _, metrics = jax.jit(stage.train_step)(state, batch, jax.random.PRNGKey(1))
  assert np.isfinite(float(metrics["loss"])) and float(metrics["grad_norm"]) > 0

  full = default.get_config()
  full.expression.kp_target = "canonical"
  full.expression.inplane_pose = "learned"
  with pytest.raises(config_check.ConfigError, match="kp_target='canonical' needs"):
    config_check.check(full)
  full.expression.kp_target = "canon"
  with pytest.raises(config_check.ConfigError, match="kp_target"):
    config_check.check(full)


def test_ceiling_benchmark_recovers_a_known_similarity():
  """benchmarks/inplane_keypoint_ceiling.py's fit: the landmarks of a face turned, scaled and
  shifted give back that similarity."""
  pts = (fg.project(fg.MEAN_FACE, np.array([0.1, -0.05, 0.0, 0.0, 0.05, 0.6]), 2)[0] - 0.5)
  th, s, b = 0.15, 1.07, np.array([0.03, -0.02])
  a = s * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
  got_a, got_b = ceiling.similarity(pts[ceiling.RIGID], pts[ceiling.RIGID] @ a.T + b)
  np.testing.assert_allclose(got_a, a, atol=1e-9)
  np.testing.assert_allclose(got_b, b, atol=1e-9)


def test_local_affine_recovers_an_affine_and_stays_local():
  """benchmarks/inplane_keypoint_ceiling.py's 'local' fit: points moved by one affine map give
  it back at every centre; a deformation confined to the mouth is seen at the mouth's centre and
  not at the eyes'."""
  pts = (fg.project(fg.MEAN_FACE, np.array([0.1, -0.05, 0.0, 0.0, 0.05, 0.6]), 2)[0] - 0.5)
  a = np.array([[1.05, 0.08], [-0.04, 0.93]])
  b = np.array([0.02, -0.03])
  for i in (30, 36, 62):
    got_a, got_b = ceiling.local_affine(pts, pts @ a.T + b, pts[i], 0.2)
    np.testing.assert_allclose(got_a, a, atol=1e-9)
    np.testing.assert_allclose(got_b, b, atol=1e-9)
  opened = pts.copy()
  lips = np.arange(48, 68)
  centre = pts[lips].mean(0)
  opened[lips, 1] = centre[1] + 1.5 * (pts[lips, 1] - centre[1])  # mouth opens 1.5x vertically
  at_mouth, _ = ceiling.local_affine(pts, opened, pts[62], 0.05)
  at_eye, _ = ceiling.local_affine(pts, opened, pts[36], 0.05)
  assert at_mouth[1, 1] > 1.2                     # the opening, near its full 1.5x
  np.testing.assert_allclose(at_eye, np.eye(2), atol=0.02)  # the eye region does not move
