"""The jitted train steps compile once and donate the state (issue 7: no recompilation).

A step that silently recompiles (a Python scalar turning into a new static value, a dtype or
sharding drifting between the first and the second call) costs a full compile per step on an
accelerator; a state that is not donated doubles its memory. Both are checked on the real
stage steps, three steps each, with the output state of one step fed to the next as train.py
does.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from osmnet_jax.runtime import sharding
from osmnet_jax.stages import motion as motion_stage
from osmnet_jax.stages import renderer_step as renderer_stage
from test_motion_stage import tiny_cfg  # pylint: disable=import-error  (tests/ on sys.path)
from test_renderer_train import small_renderer_config  # pylint: disable=import-error

STEPS = 3


def _run(step, state, batches):
  first_leaf = jax.tree.leaves(state)[0]
  for i, b in enumerate(batches):
    state, metrics = step(state, b, jax.random.PRNGKey(i))
  jax.block_until_ready(state)
  assert all(np.isfinite(float(v)) for v in metrics.values())
  return state, first_leaf


def test_renderer_jit_step_compiles_once_and_donates_state():
  stage = renderer_stage.RendererStage(small_renderer_config())
  mesh = sharding.make_mesh()
  step = stage.make_jit_step(mesh)
  state = jax.device_put(stage.init_state(jax.random.PRNGKey(0), 32), sharding.replicated(mesh))
  rng = np.random.RandomState(0)
  batches = [{"source": rng.randint(0, 255, (2, 32, 32, 3), np.uint8),
              "driving": rng.randint(0, 255, (2, 32, 32, 3), np.uint8)} for _ in range(STEPS)]
  state, first_leaf = _run(step, state, batches)
  assert int(state.step) == STEPS
  assert step._cache_size() == 1  # pylint: disable=protected-access
  assert first_leaf.is_deleted()  # the input state's buffers were donated to the output
  # The perceptual backbone's weights ride in the donated state; the stage's own copy must
  # survive, or the next init_state / state_from_variables (resume, a second run) fails.
  assert not any(x.is_deleted() for x in jax.tree.leaves(stage._vgg_vars))  # pylint: disable=protected-access
  again = stage.init_state(jax.random.PRNGKey(1), 32)
  assert jax.tree.structure(again.loss_params) == jax.tree.structure(state.loss_params)


def test_motion_jit_step_compiles_once_and_donates_state():
  stage = motion_stage.MotionStage(tiny_cfg())  # num_steps=3 = STEPS
  mesh = sharding.make_mesh()
  step = stage.make_jit_step(mesh)
  state = jax.device_put(stage.init_state(jax.random.PRNGKey(0)), sharding.replicated(mesh))
  rng = np.random.RandomState(0)
  batches = [{"mel": jnp.asarray(rng.randn(4, 8, 20, 80), jnp.float32),
              "pose": jnp.asarray(rng.randn(4, 8, 6), jnp.float32)} for _ in range(STEPS)]
  state, first_leaf = _run(step, state, batches)
  assert int(state.step) == STEPS
  assert step._cache_size() == 1  # pylint: disable=protected-access
  assert first_leaf.is_deleted()
