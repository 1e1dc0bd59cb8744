"""configs/: every renderer model field is spelled in the default config, and every shipped config
passes train.py's up-front checks."""
from __future__ import annotations

import ml_collections
import pytest

from configs import default, quality, renderer_cpu_budget, renderer_vox256, tiny_test, vox256
from osmnet_jax import renderer
from osmnet_jax.stages import config_check, renderer_step
from osmnet_jax.stages import renderer as renderer_train


def _keys(d, prefix=""):
  out = set()
  for k, v in d.items():
    out.add(prefix + k)
    if isinstance(v, dict):
      out |= _keys(v, f"{prefix}{k}.")
  return out


# [ours] model fields that FOMM's config does not carry (absent = FOMM's behaviour).
OURS_MODEL_FIELDS = {"generator.dense_motion_params.landmark_motion",
                     "generator.dense_motion_params.landmark_tps_reg"}


def test_default_renderer_lists_every_model_field():
  mcfg = renderer_train.model_config(default.get_config().renderer)
  assert _keys(mcfg.to_dict()) == _keys(renderer.vox256_config().to_dict()) | OURS_MODEL_FIELDS


def test_vox256_config_is_fomms_architecture():
  mcfg = renderer_train.model_config(renderer_vox256.get_config().renderer)
  assert mcfg.to_dict() == renderer.vox256_config().to_dict()


@pytest.mark.parametrize(
    "module", [default, tiny_test, renderer_cpu_budget, renderer_vox256, vox256, quality])
def test_shipped_configs_pass_the_checks(module):
  config_check.check(module.get_config())


def test_check_lists_every_bad_field():
  c = default.get_config()
  c.renderer.steps = -5
  c.motion.sigma_holdout_pct = 100
  c.expression.identity = "face"
  c.motion.encoder = "mlp"
  c.renderer.train.anchor_landmarks = (36, 45, 99)
  c.renderer.train.loss_weights.mouth = -1.0
  c.renderer.train.heatmap_floor = -2.0
  c.renderer.train.heatmap_anchor_sigma = 0.0
  c.renderer.train.heatmap_anchor_until = -1
  c.renderer.train.lr_milestones = (600, 300)
  c.renderer.train.lr_gamma = 0.0
  c.motion.compute_dtype = "float16"
  # A config file can create the field with any type (attribute assignment would be refused).
  c.expression = ml_collections.ConfigDict({**c.expression.to_dict(), "remat": "yes"})
  with pytest.raises(config_check.ConfigError) as e:
    config_check.check(c)
  msg = str(e.value)
  assert "config.renderer.steps=-5" in msg and "config.motion.sigma_holdout_pct=100" in msg
  assert "config.expression.identity='face'" in msg and "config.motion.encoder='mlp'" in msg
  assert "config.renderer.train.anchor_landmarks=(36, 45, 99)" in msg
  assert "config.renderer.train.loss_weights.mouth=-1.0" in msg
  assert "config.renderer.train.heatmap_floor=-2.0" in msg
  assert "config.renderer.train.heatmap_anchor_sigma=0.0" in msg
  assert "config.renderer.train.heatmap_anchor_until=-1" in msg
  assert "config.renderer.train.lr_milestones=(600, 300)" in msg
  assert "config.renderer.train.lr_gamma=0.0" in msg
  assert "config.motion.compute_dtype='float16'" in msg
  assert "config.expression.remat='yes'" in msg


def test_shard_optimizer_needs_a_bool_and_jit():
  c = default.get_config()
  c.mesh = ml_collections.ConfigDict({**c.mesh.to_dict(), "shard_optimizer": "yes"})
  with pytest.raises(config_check.ConfigError, match=r"config.mesh.shard_optimizer='yes'"):
    config_check.check(c)
  c.mesh = ml_collections.ConfigDict({**c.mesh.to_dict(), "shard_optimizer": True})
  config_check.check(c)  # jit: fine
  c.parallel = "pmap"
  with pytest.raises(config_check.ConfigError, match=r"shard_optimizer=True needs .*'jit'"):
    config_check.check(c)
  c.parallel = "jit"
  c.mesh.fsdp = 2
  with pytest.raises(config_check.ConfigError, match=r"shard_optimizer=True with .*fsdp=2"):
    config_check.check(c)


def test_landmark_terms_are_on_by_default_and_off_in_fomm_configs():
  on = default.get_config().renderer.train.loss_weights
  assert on.keypoint_anchor > 0 and on.flow_anchor > 0 and on.mouth > 0 and on.heatmap_peak > 0
  for module in (renderer_vox256, vox256):
    w = module.get_config().renderer.train.loss_weights
    assert all(w[k] == 0.0 for k in renderer_step.OURS_KEYPOINT_TERMS), \
        module.__name__
