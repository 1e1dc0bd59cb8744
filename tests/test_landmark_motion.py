"""The renderer's landmark motion [ours]: a thin-plate spline through the 68 landmarks as one more
motion of FOMM's dense motion network (nn/tps.py, models/dense_motion.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from osmnet_jax import renderer
from osmnet_jax.evaluation import reconstruction
from osmnet_jax.models import dense_motion
from osmnet_jax.nn import tps
from osmnet_jax.nn.keypoints import make_coordinate_grid
from osmnet_jax.stages import config_check
from osmnet_jax.stages import renderer_step as rs
from tests.test_landmark_anchors import SIZE, _posed_frames, _rot, _small_renderer_cfg, _step_batch


def test_spline_meets_its_points_and_keeps_an_affine_map_affine():
  rng = np.random.default_rng(0)
  ctrl = jnp.asarray(rng.uniform(-0.7, 0.7, (2, 30, 2)), jnp.float32)
  targets = jnp.asarray(rng.uniform(-0.7, 0.7, (2, 30, 2)), jnp.float32)
  coef = tps.fit(ctrl, targets)
  np.testing.assert_allclose(tps.apply(coef, ctrl, ctrl), targets, atol=2e-4)
  # A regulariser trades exactness for smoothness: the points are missed, by more as it grows.
  miss = [float(jnp.abs(tps.apply(tps.fit(ctrl, targets, r), ctrl, ctrl) - targets).max())
          for r in (1e-3, 1e-1)]
  assert 1e-3 < miss[0] < miss[1], miss
  # Targets an affine map of the points: the spline is that map everywhere, not just on them.
  a = jnp.asarray(1.1 * _rot(12.0), jnp.float32)
  t = jnp.asarray([0.05, -0.1], jnp.float32)
  coef = tps.fit(ctrl, ctrl @ a.T + t)
  z = jnp.asarray(rng.uniform(-1, 1, (2, 7, 5, 2)), jnp.float32)
  np.testing.assert_allclose(tps.apply(coef, ctrl, z), z @ a.T + t, atol=2e-4)


def test_landmark_motion_turns_the_grid_with_the_landmarks_of_a_turned_face():
  """The driving face is the source face rolled by 10 degrees about the frame centre: the motion
  (driving point -> where to read the source) is the inverse roll, all over the grid."""
  _, lm = _posed_frames(np.random.default_rng(3), [0.0])
  src = renderer.with_landmarks({}, lm, SIZE)["landmarks"]  # [1, 68, 2] normalised
  r = jnp.asarray(_rot(10.0), jnp.float32)
  drv = src @ r.T
  motion = dense_motion.landmark_motion({"landmarks": src}, {"landmarks": drv}, 16, 16, 0.0)
  grid = make_coordinate_grid(16, 16)
  assert motion.shape == (1, 1, 16, 16, 2)
  np.testing.assert_allclose(motion[0, 0], grid @ r, atol=1e-3)  # r^-1 z = r^T z
  with pytest.raises(ValueError, match="with_landmarks"):
    dense_motion.landmark_motion({"landmarks": src}, {}, 16, 16, 0.0)


def _tps_cfg():
  cfg = _small_renderer_cfg()
  cfg.generator.dense_motion_params.landmark_motion = "tps"
  return cfg


def test_generator_with_the_landmark_motion_warps_by_the_spline_where_the_mask_picks_it():
  cfg = _tps_cfg()
  assert renderer.uses_landmarks(cfg) and not renderer.uses_landmarks(renderer.vox256_config())
  variables = renderer.init(jax.random.PRNGKey(0), cfg, SIZE)
  mask_bias = variables["generator"]["params"]["dense_motion_network"]["mask"]["bias"]
  assert mask_bias.shape == (cfg.num_kp + 2,)  # background, K keypoints, the spline
  fomm = renderer.init(jax.random.PRNGKey(0), renderer.tiny_config(), SIZE)
  assert fomm["generator"]["params"]["dense_motion_network"]["mask"]["bias"].shape == (
      cfg.num_kp + 1,)  # FOMM's configs keep FOMM's mask (checkpoints load unchanged)

  x, lm = _posed_frames(np.random.default_rng(1), [0.0, 8.0])
  src = jnp.asarray(x[:1] / 255.0, jnp.float32)
  kp = renderer.detect_keypoints(variables, cfg, jnp.asarray(x / 255.0, jnp.float32))
  kp_s = renderer.with_landmarks(jax.tree.map(lambda a: a[:1], kp), lm[:1], SIZE)
  kp_d = renderer.with_landmarks(jax.tree.map(lambda a: a[1:], kp), lm[1:], SIZE)
  with pytest.raises(ValueError, match="landmarks"):
    renderer.render(variables, cfg, src, jax.tree.map(lambda a: a[:1], kp), kp_d)
  # A mask head that puts all the weight on the spline: the flow is the spline.
  mask_bias = mask_bias.at[-1].add(100.0)
  variables["generator"]["params"]["dense_motion_network"]["mask"]["bias"] = mask_bias
  out = renderer.render(variables, cfg, src, kp_s, kp_d)
  h, w = out["deformation"].shape[1:3]
  assert float(out["mask"][..., -1].min()) > 0.999
  expect = dense_motion.landmark_motion(kp_s, kp_d, h, w, 1e-6)[:, 0]
  np.testing.assert_allclose(out["deformation"], expect, atol=1e-4)


def test_train_step_feeds_the_landmarks_to_the_flow_and_reconstruction_needs_them():
  cfg = _tps_cfg()
  cfg.train.loss_weights.update(flow_anchor=10.0)
  stage = rs.RendererStage(cfg)
  state = stage.init_state(jax.random.PRNGKey(0), SIZE)
  batch = _step_batch()
  x, lm = batch["source"], batch["source_landmarks"]
  new, metrics = jax.jit(stage.train_step)(state, batch, jax.random.PRNGKey(1))
  assert int(new.step) == 1 and all(np.isfinite(float(v)) for v in metrics.values())
  grads_reach = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()),
                             new.params["generator"]["dense_motion_network"]["mask"],
                             state.params["generator"]["dense_motion_network"]["mask"])
  assert grads_reach["kernel"] > 0
  # The flow needs landmarks even with every landmark term off: the error says how to go on.
  cfg.train.loss_weights.update(flow_anchor=0.0, keypoint_anchor=0.0, keypoint_motion=0.0,
                                mask_background=0.0, mask_anchor=0.0, mouth=0.0,
                                heatmap_anchor=0.0)
  with pytest.raises(ValueError, match="landmark motion"):
    rs.RendererStage(cfg).train_step(state, {"source": x, "driving": x}, jax.random.PRNGKey(1))
  variables = {k: {"params": new.params[k], "batch_stats": new.batch_stats[k]}
               for k in ("kp_detector", "generator")}
  with pytest.raises(ValueError, match="landmarks"):
    reconstruction.reconstruct_clip(variables, cfg, x)
  pred = reconstruction.reconstruct_clip(variables, cfg, x, landmarks=lm)
  assert pred.shape == x.shape and np.isfinite(pred).all()


def test_config_check_names_a_bad_landmark_motion():
  from configs import tiny_test

  cfg = tiny_test.get_config()
  cfg.renderer.generator.dense_motion_params.landmark_motion = "spline"
  with pytest.raises(ValueError, match="landmark_motion='spline'"):
    config_check.check(cfg)


def test_generate_program_for_accelerators_carries_the_landmarks():
  """`python -m osmnet_jax.aot`'s generate program of a spline renderer takes landmarks in both
  keypoint dicts, and lowers (traces through the spline)."""
  from configs import tiny_test
  from osmnet_jax.aot import compile as aot_compile

  prog = aot_compile.build("generate", tiny_test.get_config(), jax.devices("cpu")[:1], 4, "dp")
  _, _, kp_src, kp_drv = prog.args
  assert kp_src["landmarks"].shape == (1, 68, 2) and kp_drv["landmarks"].shape == (4, 68, 2)
  prog.fn.lower(*prog.args)
