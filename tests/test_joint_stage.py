"""Stage "joint" (stages/joint.py): the expression models fine-tuned through the frozen renderer;
the session's tiny workdir ran it (configs/tiny_test.py: 2 steps after the expression stage)."""
import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def joint_workdir(tiny_trained):
  return tiny_trained[0]


def test_joint_stage_trains_from_the_expression_checkpoint(joint_workdir):
  from osmnet_jax import workdir

  result = json.loads((joint_workdir / "checkpoints" / "joint" / "eval.json").read_text())
  assert result["step"] == 2
  assert result["base_checkpoint"].endswith("checkpoints/expression")
  last = result["last_metrics"]
  # Both pixel terms ran: the frames were rendered and their mouth boxes scored.
  assert 0 < last["rec_l1"] < 1 and 0 < last["rec_mouth_l1"] < 1
  assert 0 <= result["eval"]["landmark_l1_px"] < 32
  # Loaders: the joint checkpoint is the default, the expression one stays reachable.
  joint, base = workdir.load_expression(joint_workdir), workdir.load_expression(
      joint_workdir, stage="expression")
  assert joint.checkpoint_dir.endswith("joint") and base.checkpoint_dir.endswith("expression")
  diff = max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(
      _leaves(joint.params), _leaves(base.params)))
  assert diff > 0  # two optimizer steps moved the expression models
  # The renderer is frozen: identical variables.
  for a, b in zip(_leaves(joint.renderer_variables), _leaves(base.renderer_variables)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _leaves(tree):
  import jax
  return jax.tree.leaves(tree)


def test_joint_needs_a_pixel_term(tmp_path):
  from configs import tiny_test
  from osmnet_jax.stages import joint

  c = tiny_test.get_config()
  c.joint.w_rec = 0.0
  c.joint.w_rec_mouth = 0.0
  with pytest.raises(ValueError, match="w_rec_mouth"):
    joint.joint_expression_config(c)


@pytest.mark.parametrize("landmark_grad", [False, True])
def test_pixel_terms_reach_the_landmark_head_only_when_asked(joint_workdir, landmark_grad):
  """With the renderer's landmark spline the predicted landmarks drive the rendered frames;
  expression.render_landmark_grad decides whether the pixel loss trains the landmark head
  through them (False, the default: the landmark loss alone does)."""
  import jax
  import jax.numpy as jnp

  from osmnet_jax import renderer, workdir
  from osmnet_jax.stages import expression as expression_stage
  from tests.test_landmark_anchors import _posed_frames

  expr = workdir.load_expression(joint_workdir)
  assert renderer.uses_landmarks(expr.renderer_cfg)  # tiny_test inherits the default's spline
  ecfg = expr.cfg.copy_and_resolve_references()
  ecfg.update(w_landmark=0.0, w_kp_value=0.0, w_kp_jacobian=0.0, w_rec=1.0, w_rec_mouth=0.0,
              render_landmark_grad=landmark_grad)
  stage = expression_stage.ExpressionStage(ecfg, expr.renderer_cfg)
  b, t, s = 2, int(ecfg.num_frames), expr.image_size
  frames, marks = _posed_frames(np.random.default_rng(0), np.linspace(-10, 10, b * t))
  assert frames.shape[1] == s
  rng = np.random.default_rng(1)
  batch = {"source": frames[::t], "source_landmarks": marks[::t].astype(np.float32),
           "frames": frames.reshape(b, t, s, s, 3),
           "landmarks": marks.reshape(b, t, 68, 2).astype(np.float32),
           "mel": rng.normal(0, 1, (b, t, 20, 80)).astype(np.float32),
           "pose": rng.normal(0, 1, (b, t, 6)).astype(np.float32)}
  grads = jax.grad(lambda p: stage.loss(p, expr.renderer_variables, batch)[0])(expr.params)
  head = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads["expression"]["landmarks"]))
  kp = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads["keypoints"]))
  assert kp > 0  # the pixel loss always tunes the keypoint predictor
  assert (head > 0) == landmark_grad, head
