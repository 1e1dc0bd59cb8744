"""bf16 compute and rematerialisation of the stage-B steps (motion, expression), issue 16.

* bf16 vs float32: the gradient of one motion step and of one expression step from the same
  params and batch point the same way (cosine) with about the same norm, the bf16 programs
  really run their convolutions and matmuls in bf16 (read off the lowered StableHLO), and the
  trained params and Adam moments stay float32.
* remat: the parameter tree is identical with and without `remat` (checkpoints do not change),
  the gradients are equal to float rounding, and the gradient program really contains a
  rematerialised region (jax.checkpoint's primitive).

Tiny configs of test_motion_stage / test_expression, one device, in process.
"""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from osmnet_jax import renderer
from osmnet_jax.stages import expression as expression_stage
from osmnet_jax.stages import motion as motion_stage
from test_expression import random_batch, tiny_expression_config
from test_motion_stage import _batch, tiny_cfg

_BF16_OP = re.compile(r"stablehlo\.(convolution|dot_general)\b.*-> tensor<[0-9x]*bf16>")
_ANY_OP = re.compile(r"stablehlo\.(convolution|dot_general)\b")
_REMAT = {"remat2", "checkpoint"}  # jax.checkpoint's primitive (named remat2 in jax 0.10)


def _flat(tree) -> np.ndarray:
  return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def _motion(dtype: str, remat: bool):
  stage = motion_stage.MotionStage(tiny_cfg("osmnet", compute_dtype=dtype, remat=remat))
  params = stage.init_state(jax.random.PRNGKey(0)).params
  batch = _batch(4, seed=3)
  rng = jax.random.PRNGKey(1)
  fn = jax.value_and_grad(lambda p: stage.loss(p, batch, rng), has_aux=True)
  return stage, params, batch, rng, fn


@pytest.fixture(scope="module")
def expression_parts():
  rcfg = renderer.tiny_config()
  rvars = jax.device_get(renderer.init(jax.random.PRNGKey(7), rcfg, 32, False))
  return rcfg, rvars, random_batch(seed=5)


def _expression(parts, dtype: str, remat: bool):
  rcfg, rvars, batch = parts
  stage = expression_stage.ExpressionStage(tiny_expression_config(compute_dtype=dtype,
                                                                  remat=remat), rcfg)
  params = stage.init_state(jax.random.PRNGKey(0), rvars, 32).params
  fn = jax.value_and_grad(lambda p: stage.loss(p, rvars, batch), has_aux=True)
  return stage, params, batch, fn


def _compare(fn32, fnbf, params):
  (l32, _), g32 = jax.jit(fn32)(params)
  (lbf, _), gbf = jax.jit(fnbf)(params)
  a, b = _flat(g32), _flat(gbf)
  cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
  return float(l32), float(lbf), cos, float(np.linalg.norm(b) / np.linalg.norm(a)), gbf


def _primitives(fn, params) -> set[str]:
  """Names of the top-level primitives of fn's jaxpr."""
  return {e.primitive.name for e in jax.make_jaxpr(fn)(params).jaxpr.eqns}


def _bf16_ops(fn, params) -> tuple[int, int]:
  text = jax.jit(fn).lower(params).as_text()
  return len(_BF16_OP.findall(text)), len(_ANY_OP.findall(text))


def test_motion_bf16_gradient_matches_float32():
  _, params, _, _, f32 = _motion("float32", False)
  stage, params_bf, batch, rng, fbf = _motion("bfloat16", False)
  assert jax.tree.structure(params_bf) == jax.tree.structure(params)
  l32, lbf, cos, ratio, gbf = _compare(f32, fbf, params)
  assert lbf == pytest.approx(l32, rel=2e-2)
  assert cos > 0.99 and 0.95 < ratio < 1.05, (cos, ratio)
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(gbf))
  nbf, n = _bf16_ops(fbf, params)
  assert nbf >= n // 2 and _bf16_ops(f32, params)[0] == 0, (nbf, n)
  state, _ = jax.jit(stage.train_step)(stage.init_state(jax.random.PRNGKey(0)), batch, rng)
  assert {str(x.dtype) for x in jax.tree.leaves((state.params, state.opt_state))} <= {
      "float32", "int32"}


def test_motion_remat_same_params_and_gradient():
  _, params, _, _, plain = _motion("float32", False)
  stage, params_r, _, _, remat = _motion("float32", True)
  assert jax.tree.structure(params_r) == jax.tree.structure(params)
  (_, _), g0 = jax.jit(plain)(params)
  (_, _), g1 = jax.jit(remat)(params)
  np.testing.assert_allclose(_flat(g1), _flat(g0), rtol=1e-4, atol=1e-6)
  assert _REMAT & _primitives(remat, params)
  assert not _REMAT & _primitives(plain, params)


def test_expression_bf16_and_remat(expression_parts):
  _, params, _, f32 = _expression(expression_parts, "float32", False)
  _, params_bf, _, fbf = _expression(expression_parts, "bfloat16", True)
  assert jax.tree.structure(params_bf) == jax.tree.structure(params)
  l32, lbf, cos, ratio, _ = _compare(f32, fbf, params)
  assert lbf == pytest.approx(l32, rel=2e-2)
  assert cos > 0.99 and 0.95 < ratio < 1.05, (cos, ratio)
  assert _bf16_ops(fbf, params)[0] > 0 and _bf16_ops(f32, params)[0] == 0
  assert _REMAT & _primitives(fbf, params)
  _, _, _, remat32 = _expression(expression_parts, "float32", True)
  (_, _), g0 = jax.jit(f32)(params)
  (_, _), g1 = jax.jit(remat32)(params)
  np.testing.assert_allclose(_flat(g1), _flat(g0), rtol=1e-4, atol=1e-6)
