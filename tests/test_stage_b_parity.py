"""Cross-framework parity of stage B: the JAX motion and expression stages vs the PyTorch mirror
(tests/torch_osmnet.py) with the same weights (Flax params -> torch state_dict).

Tiny configs, float32, random params, one small random batch. Compared: forward outputs, the loss
and its terms, every parameter's gradient, the global grad norm, and the parameters after one
step of the stage's own optimizer (optax clip + Adam) vs the mirror's (torch_osmnet.make_step). Error measure per
tensor: max |jax - torch| / max(max |jax|, 1e-6) (relative to the tensor's own scale).
"""  # noqa: E501
from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from configs import default
from osmnet_jax import renderer
from osmnet_jax.convert import fomm as convert
from osmnet_jax.face import geometry as fg
from osmnet_jax.models import motion_space
from osmnet_jax.stages import expression as es
from osmnet_jax.stages import motion as ms

sys.path.insert(0, os.path.dirname(__file__))
import torch_fomm  # noqa: E402  pylint: disable=wrong-import-position
import torch_osmnet as to  # noqa: E402  pylint: disable=wrong-import-position

FWD_TOL = 1e-4   # forward outputs and loss terms (measured: <~2e-6)
GRAD_TOL = 1e-4  # gradients (measured: <~2e-5; printed with -s)
# Params after one clip + Adam step, relative to lr: Adam's first step is lr * g / (|g| + 1e-8),
# which turns float32 noise on near-zero gradient entries into O(lr) differences there
# (measured: 3.6e-3 * lr motion, 3.0e-3 * lr expression).
UPDATE_TOL = 1e-2


# XLA:CPU compile dominates this file's runtime; these options halve it (measured 25 s -> 13 s on
# the motion check, busy 2-core machine) and change nothing the tolerances can see.
CHEAP_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _run_cheap(fn, *args):
  return jax.device_get(jax.jit(fn).lower(*args).compile(compiler_options=CHEAP_COMPILE)(*args))


def _rel(a, b) -> float:
  a = np.asarray(a, np.float64)
  b = np.asarray(b.detach().numpy() if torch.is_tensor(b) else b, np.float64)
  assert a.shape == b.shape, (a.shape, b.shape)
  return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-6))


def random_params(init_fn, seed):
  """Random params with the shapes of ``init_fn()`` (traced only: eval_shape compiles nothing,
  a jitted init costs ~20 s of XLA compile on a busy 2-core machine). Kernels ~ N(0, 1/fan_in),
  LayerNorm scales 1 + N(0, 0.1^2), biases and raw params N(0, 0.1^2) (w: N(0, 1)); nothing is
  zero, so the zero-initialised output layers of the real init do not hide whole paths."""
  r = np.random.RandomState(seed)

  def leaf(path, x):
    name = path[-1].key
    if name == "kernel":
      v = r.randn(*x.shape) / np.sqrt(np.prod(x.shape[:-1]))
    elif name == "scale":
      v = 1.0 + 0.1 * r.randn(*x.shape)
    elif name == "w":
      v = r.randn(*x.shape)
    else:
      v = 0.1 * r.randn(*x.shape)
    return v.astype(x.dtype)

  return jax.tree_util.tree_map_with_path(leaf, jax.eval_shape(init_fn))


def _check_grads(grads_jax, module, tol, label):
  want = to.flax_to_state_dict(jax.device_get(grads_jax))  # same renames/transposes as params
  got = {k: p.grad for k, p in module.named_parameters()}
  assert set(want) == set(got), set(want) ^ set(got)
  errs = {k: _rel(want[k].numpy(), got[k]) for k in want}
  worst = max(errs, key=errs.get)
  print(f"{label}: max grad rel err {errs[worst]:.2e} ({worst}) over {len(errs)} tensors")
  assert errs[worst] < tol, (worst, errs[worst])
  return errs[worst]


def _check_update(new_params_jax, module, lr, label):
  want = to.flax_to_state_dict(jax.device_get(new_params_jax))
  got = dict(module.named_parameters())
  err = max(float(np.abs(want[k].numpy() - got[k].detach().numpy()).max()) for k in want)
  print(f"{label}: max |param diff| after one Adam step {err:.2e} (lr {lr:.1e})")
  assert err < UPDATE_TOL * lr, err


# ----------------------------------------------------------------------------------------------
# Motion stage (model="osmnet").

def tiny_motion_cfg(identity="none"):
  c = default.get_config().motion
  c.update(num_frames=8, num_bases=4, motion_dim=8, hidden=16, depth=2, audio_dim=16,
           audio_channels=(4, 8), rhythm_dim=4, identity=identity, image_size=16,
           warmup_steps=1, num_steps=10)
  return c


def motion_batch(c, b=3, seed=0):
  r = np.random.RandomState(seed)
  batch = {"mel": (r.randn(b, c.num_frames, 20, 80) * 4 - 7).astype(np.float32),
           "pose": r.randn(b, c.num_frames, 6).astype(np.float32)}
  if c.identity == "image":
    batch["source"] = r.randint(0, 256, (b, c.image_size, c.image_size, 3)).astype(np.uint8)
  return batch


def test_motion_stage_parity():
  """identity='image' (the optional ImageIdentityEncoder branch; 'none' is the same minus it)."""
  c = tiny_motion_cfg("image")
  stage = ms.MotionStage(c)
  params = random_params(lambda: stage.init_params(jax.random.PRNGKey(0)), 1)
  batch = motion_batch(c)
  rng = jax.random.PRNGKey(2)

  def jax_side(params):  # one compile: loss, grads, outputs and the stage optimizer's update
    (loss, metrics), grads = jax.value_and_grad(stage.loss, has_aux=True)(params, batch, rng)
    out = stage.model.apply({"params": params}, batch["mel"], batch["pose"], batch["source"])
    pose_m = stage.model.apply({"params": params}, out["alpha_hat"], out["rhythm"],
                               method=motion_space.OSMNetMotion.decode)
    updates, _ = stage.tx.update(grads, stage.tx.init(params), params)
    return (loss, metrics, grads, out, pose_m, optax.tree.norm(grads),
            optax.apply_updates(params, updates))

  loss_j, metrics_j, grads_j, out_j, pose_m_j, gnorm_j, new_j = _run_cheap(jax_side, params)

  model = to.OSMNetMotion.from_config(c)
  to.load_flax_params(model, params)
  tb = {k: torch.from_numpy(v) for k, v in batch.items()}
  loss_t, m_t = to.motion_loss(model, tb, c)
  loss_t.backward()

  errs = {k: _rel(out_j[k], m_t["out"][k]) for k in ("alpha", "alpha_hat", "recon", "rhythm",
                                                      "feats")}
  errs["pose_mapped"] = _rel(pose_m_j, m_t["pose_m"])
  for k in ("loss", "rec_l1", "map_mse", "rec_mapped_l1", "alpha_rms"):
    errs[k] = _rel(metrics_j[k], m_t[k])
  print("motion forward rel errs:", {k: f"{v:.1e}" for k, v in errs.items()})
  assert max(errs.values()) < FWD_TOL, errs
  assert float(m_t["q_orth_err"]) < 1e-5 and metrics_j["q_orth_err"] < 1e-5
  _check_grads(grads_j, model, GRAD_TOL, "motion")

  # One step of the mirror's optimizer (clip_by_global_norm + Adam, schedule's step-0 lr;
  # motion warmup = 1 step, so lr(0) = lr / 1).
  lr = to.warmup_cosine_lr(c.lr / 1, c.lr, 1, c.num_steps, c.lr * 0.05)
  model.zero_grad(set_to_none=True)
  step = to.make_step(model, lambda b: to.motion_loss(model, b, c), lr, c.grad_clip)
  m = step(tb)
  assert _rel(gnorm_j, m["grad_norm"]) < GRAD_TOL
  _check_update(new_j, model, lr(0), "motion")


# ----------------------------------------------------------------------------------------------
# Expression stage (default objective: w_rec = 0).

B, T, S = 2, 4, 32


def tiny_expression_cfg():
  c = default.get_config().expression
  c.update(dict(num_frames=T, batch_size=B, audio_dim=16, audio_channels=(4, 8), identity_dim=16,
                identity_channels=(4, 8), expression_dim=16, temporal_layers=2,
                landmark_hidden=32, kp_hidden=32, warmup_steps=1, num_steps=10))
  return c


def expression_batch(seed=0):
  r = np.random.RandomState(seed)
  return {"frames": r.randint(0, 256, (B, T, S, S, 3)).astype(np.uint8),
          "source": r.randint(0, 256, (B, S, S, 3)).astype(np.uint8),
          "source_landmarks": (r.rand(B, 68, 2) * S).astype(np.float32),
          "landmarks": (r.rand(B, T, 68, 2) * S).astype(np.float32),
          "mel": (r.randn(B, T, 20, 80) * 4 - 7).astype(np.float32),
          "pose": r.randn(B, T, 6).astype(np.float32)}


def frozen_renderer(rcfg):
  """Random torch KPDetector/generator (BatchNorm stats too) and their converted JAX variables."""
  kp_t, gen_t = torch_fomm.build(rcfg)
  torch_fomm.randomize_(kp_t, 0)
  torch_fomm.randomize_(gen_t, 1)
  variables, _ = convert.convert_fomm({"kp_detector": kp_t.state_dict(),
                                       "generator": gen_t.state_dict()})
  for p in kp_t.parameters():
    p.requires_grad_(False)
  return kp_t.eval(), {k: variables[k] for k in ("kp_detector", "generator")}


# Dataset-like pose statistics for the geometric mode (yaw, pitch, roll rad; tx, ty; scale).
POSE_MEAN, POSE_STD = (0.01, -0.02, 0.03, 0.02, -0.01, 0.8), (0.1, 0.08, 0.06, 0.03, 0.04, 0.05)


@pytest.mark.parametrize("inplane_pose", ["learned", "geometric"])
def test_expression_stage_parity(inplane_pose):
  c, rcfg = tiny_expression_cfg(), renderer.tiny_config()
  c.inplane_pose = inplane_pose
  c.pose_mean, c.pose_std = POSE_MEAN, POSE_STD
  kp_t, rvars = frozen_renderer(rcfg)
  stage = es.ExpressionStage(c, rcfg)
  params = random_params(lambda: stage.init_params(jax.random.PRNGKey(0), S), 1)
  batch = expression_batch()

  def jax_side(params):  # one compile: loss, grads, outputs and the stage optimizer's update
    (loss, metrics), grads = jax.value_and_grad(stage.loss, has_aux=True)(params, rvars, batch)
    updates, _ = stage.tx.update(grads, stage.tx.init(params), params)
    return (loss, metrics, grads, stage.forward(params, rvars, batch), optax.tree.norm(grads),
            optax.apply_updates(params, updates))

  loss_j, metrics_j, grads_j, out_j, gnorm_j, new_j = _run_cheap(jax_side, params)

  models = to.ExpressionModels(c, rcfg.num_kp)
  to.load_flax_params(models, params)
  tb = {k: torch.from_numpy(v) for k, v in batch.items()}
  loss_t, m_t = to.expression_loss(models, kp_t, tb, c)
  loss_t.backward()

  errs = {"landmarks": _rel(out_j["landmarks"], m_t["landmarks"]),
          "expression": _rel(out_j["expression"], m_t["expression"]),
          "kp_value": _rel(out_j["kp"]["value"], m_t["kp"]["value"]),
          "kp_jacobian": _rel(out_j["kp"]["jacobian"], m_t["kp"]["jacobian"])}
  for k in ("loss", "landmark_loss", "kp_value_l1", "kp_jacobian_l1", "landmark_l1"):
    errs[k] = _rel(metrics_j[k], m_t[k])
  print("expression forward rel errs:", {k: f"{v:.1e}" for k, v in errs.items()})
  assert max(errs.values()) < FWD_TOL, errs
  _check_grads(grads_j, models, GRAD_TOL, "expression")

  # Expression warmup starts at lr / 100 (1 warmup step here).
  lr = to.warmup_cosine_lr(c.lr * 0.01, c.lr, 1, c.num_steps, c.lr * 0.05)
  models.zero_grad(set_to_none=True)
  step = to.make_step(models, lambda b: to.expression_loss(models, kp_t, b, c), lr, c.grad_clip)
  m = step(tb)
  assert _rel(gnorm_j, m["grad_norm"]) < GRAD_TOL
  _check_update(new_j, models, lr(0), "expression")


# ----------------------------------------------------------------------------------------------
# Converter and helpers.

def test_converter_rejects_missing_and_extra_keys():
  c = tiny_motion_cfg()
  stage = ms.MotionStage(c)
  params = random_params(lambda: stage.init_params(jax.random.PRNGKey(0)), 0)
  model = to.OSMNetMotion.from_config(c)
  to.load_flax_params(model, params)  # the full tree loads
  missing = {**params, "space": {k: v for k, v in params["space"].items() if k != "enc_linear"}}
  with pytest.raises(ValueError, match=r"missing: \['space.enc_linear.bias', 'space.enc_linear.weight'\]"):  # noqa: E501
    to.load_flax_params(model, missing)
  extra = {**params, "rhythm2": params["rhythm"]}
  with pytest.raises(ValueError, match=r"extra: \['rhythm2.bias', 'rhythm2.weight'\]"):
    to.load_flax_params(model, extra)
  bad = {**params, "space": {**params["space"], "w": np.zeros((3, 3), np.float32)}}
  with pytest.raises(ValueError, match="bad shape"):
    to.load_flax_params(model, bad)


def test_mirror_constants_and_schedule():
  np.testing.assert_array_equal(to.MOUTH, fg.MOUTH)
  sched = optax.warmup_cosine_decay_schedule(1e-5, 1e-3, 10, 100, end_value=5e-5)
  lr = to.warmup_cosine_lr(1e-5, 1e-3, 10, 100, 5e-5)
  for s in (0, 3, 10, 11, 57, 99, 100, 150):
    assert lr(s) == pytest.approx(float(sched(s)), rel=1e-5), s
  # SAME padding at stride 2 is asymmetric (XLA puts the odd pixel at the end).
  assert to._same_pad(20, 3, 2) == (0, 1) and to._same_pad(5, 3, 2) == (1, 1)  # pylint: disable=protected-access
  x = jnp.asarray(np.random.RandomState(0).randn(2, 7, 9, 3).astype(np.float32))
  import flax.linen as nn
  conv = nn.Conv(5, (3, 3), strides=(2, 2), padding="SAME")
  p = conv.init(jax.random.PRNGKey(0), x)["params"]
  tc = to.Conv2dSame(3, 5, 3, stride=2)
  tc.load_state_dict(to.flax_to_state_dict(jax.device_get(p)))
  assert _rel(conv.apply({"params": p}, x), tc(torch.from_numpy(np.array(x)))) < 1e-5


@pytest.mark.parametrize("identity", ["image", "landmarks"])
def test_converter_covers_the_other_identity_modes(identity):
  """Key/shape structure only (eval_shape, no compile): the parity tests run 'image+landmarks'
  (expression) and 'image' (motion, the default linear encoder + decoder skip); these are the
  remaining configurable branches (and the conv motion encoder)."""
  c = tiny_expression_cfg()
  c.update(identity=identity, landmark_use_pose=False, kp_jacobian=False)
  rcfg = renderer.tiny_config()
  stage = es.ExpressionStage(c, rcfg)
  to.load_flax_params(to.ExpressionModels(c, rcfg.num_kp),
                      random_params(lambda: stage.init_params(jax.random.PRNGKey(0), S), 0))
  m = tiny_motion_cfg("none")
  m.update(encoder="conv", decoder_skip=False)  # the other motion-space branch
  to.load_flax_params(to.OSMNetMotion.from_config(m), random_params(
      lambda: ms.MotionStage(m).init_params(jax.random.PRNGKey(0)), 0))
