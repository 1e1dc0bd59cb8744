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
