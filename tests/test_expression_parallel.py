"""Expression train step: single device (full batch) vs jit over a 2x2 ('data', 'fsdp') mesh vs
the FSDP layout (data=1 x fsdp=4: params and Adam moments split by `stage.state_shardings`) vs
the ZeRO-1 step (runtime/zero1.py) vs pmap on 4 simulated CPU devices give the same parameters,
Adam states and metrics after 2 steps, and none of them touches the frozen renderer.

float64 (x64) so the comparison can be tight (1e-9): in float32 the layouts agree to rounding, but
Adam's first steps (update ~ lr * g / |g|) turn rounding noise in near-zero gradients into +-lr
differences. Runs in a subprocess so the simulated device count cannot clash with other test
modules that already initialised JAX with one device.
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from conftest import run_worker

N_DEV = 4
STEPS = 2


def _worker():
  t0 = time.time()
  os.environ["JAX_PLATFORMS"] = "cpu"
  import jax  # pylint: disable=g-import-not-at-top

  jax.config.update("jax_num_cpu_devices", N_DEV)
  jax.config.update("jax_enable_x64", True)
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from osmnet_jax import renderer  # pylint: disable=g-import-not-at-top
  from osmnet_jax.runtime import sharding
  from osmnet_jax.stages import expression as es  # pylint: disable=g-import-not-at-top

  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  from test_expression import random_batch, tiny_expression_config  # pylint: disable=g-import-not-at-top

  assert jax.device_count() == N_DEV, jax.devices()
  size, b, t = 32, 4, 4  # one example per device under pmap
  rcfg = renderer.tiny_config()
  rvars = jax.device_get(renderer.init(jax.random.PRNGKey(7), rcfg, size, False))
  # A fresh KPDetector's Jacobian head is zero (every Jacobian = I up to rounding), so the
  # Jacobian L1 would sit at ~1e-17 where its gradient, sign(error), is rounding noise that
  # differs between layouts. Random head weights give real per-frame Jacobian targets.
  jac = rvars["kp_detector"]["params"]["jacobian"]
  jac["kernel"] = 0.1 * np.random.RandomState(3).randn(*jac["kernel"].shape)
  stage = es.ExpressionStage(tiny_expression_config(batch_size=b, num_frames=t), rcfg,
                             dtype=jnp.float64)
  f64 = lambda tree: jax.tree.map(
      lambda x: np.asarray(x, np.float64 if np.issubdtype(x.dtype, np.floating) else x.dtype), tree)
  state0 = f64(jax.device_get(stage.init_state(jax.random.PRNGKey(0), rvars, size)))
  batches = [f64(random_batch(seed=10 + i, b=b, t=t, size=size)) for i in range(STEPS)]
  keys = [jax.random.PRNGKey(20 + i) for i in range(STEPS)]

  def run(step, put_state, put_batch, get):
    state = put_state(state0)
    hist = []
    for batch, k in zip(batches, keys):
      state, m = step(state, put_batch(batch), k)
      hist.append(get(m))
    return get(state), hist

  host = lambda tree: jax.tree.map(np.asarray, tree)
  single = run(jax.jit(stage.train_step), lambda s: jax.tree.map(jnp.asarray, s), lambda x: x, host)
  mesh = sharding.make_mesh(data=2, fsdp=2)
  meshed = run(stage.make_jit_step(mesh), lambda s: jax.device_put(s, sharding.replicated(mesh)),
               lambda x: jax.device_put(x, sharding.batch_sharding(mesh)), host)
  fmesh = sharding.make_mesh(data=1, fsdp=N_DEV)
  fsh = stage.state_shardings(fmesh, jax.tree.map(jnp.asarray, state0))
  fsdp_state = {}

  def get_fsdp(tree):
    if isinstance(tree, es.ExpressionState):  # the final state: record its layout first
      fsdp_state["sharded_fraction"] = sharding.sharded_fraction(tree.params)
      fsdp_state["opt_sharded_fraction"] = sharding.sharded_fraction(tree.opt_state)
      fsdp_state["renderer_sharded_fraction"] = sharding.sharded_fraction(tree.renderer)
      k = tree.params["keypoints"]["head_0"]["kernel"]
      fsdp_state["head_0_shard"] = list(k.addressable_shards[0].data.shape)
      fsdp_state["head_0_shape"] = list(k.shape)
    return host(tree)

  fsdp = run(stage.make_jit_step(fmesh, fsh), lambda s: jax.device_put(s, fsh),
             lambda x: jax.device_put(x, sharding.batch_sharding(fmesh)), get_fsdp)
  # ZeRO-1 (runtime/zero1.py): Adam moments split over the 4 devices, gradient reduce-scattered.
  zmesh = sharding.make_mesh(data=N_DEV, fsdp=1)
  zsh = stage.state_shardings(zmesh, jax.tree.map(jnp.asarray, state0), shard_optimizer=True)
  zero1_split = {}

  def get_zero1(tree):
    if isinstance(tree, es.ExpressionState):
      zero1_split["opt"] = sharding.sharded_fraction(tree.opt_state)
      zero1_split["params"] = sharding.sharded_fraction(tree.params)
    return host(tree)

  zero1 = run(stage.make_zero1_step(zmesh, zsh), lambda s: jax.device_put(s, zsh),
              lambda x: jax.device_put(x, sharding.batch_sharding(zmesh)), get_zero1)
  pmapped = run(
      stage.make_pmap_step(), sharding.replicate,
      lambda x: jax.tree.map(lambda a: a.reshape((N_DEV, -1) + a.shape[1:]), x),
      lambda tree: jax.tree.map(lambda a: np.asarray(a)[0], tree))

  def maxdiff(a, b):
    return float(max(jax.tree.leaves(jax.tree.map(lambda x, y: np.abs(x - y).max(), a, b))))

  out = {}
  for name, (st, hist) in (("mesh", meshed), ("fsdp", fsdp), ("pmap", pmapped),
                           ("zero1", zero1)):
    out[name] = {"params": maxdiff(st.params, single[0].params),
                 "opt_state": maxdiff(st.opt_state, single[0].opt_state),
                 "metrics": maxdiff(hist, single[1]),
                 "renderer_moved": maxdiff(st.renderer, state0.renderer),
                 "step": int(st.step)}
  out["moved"] = maxdiff(single[0].params, state0.params)
  out["single_renderer_moved"] = maxdiff(single[0].renderer, state0.renderer)
  out["metrics"] = [{k: float(v) for k, v in h.items()} for h in single[1]]
  out["dtype"] = str(single[0].params["keypoints"]["out"]["kernel"].dtype)
  out["fsdp_layout"] = fsdp_state
  out["zero1_layout"] = zero1_split
  out["seconds"] = time.time() - t0
  print("RESULT " + json.dumps(out))


def test_jit_mesh_pmap_single_device_agree():
  res = run_worker(__file__)
  print(res)
  assert res["dtype"] == "float64"
  # Adam at lr 1e-3 (first steps at lr/100 warm-up .. lr) moves params by ~1e-5..1e-3.
  assert res["moved"] > 1e-6
  assert res["single_renderer_moved"] == 0.0
  for h in res["metrics"]:
    assert all(np.isfinite(v) for v in h.values()), h
  lay = res["fsdp_layout"]
  # Most of the trained elements are split over 'fsdp' (the small biases and norms are not);
  # the frozen renderer stays replicated; a [128, 128] head kernel holds 128 / 4 columns.
  assert lay["sharded_fraction"] > 0.5 and lay["opt_sharded_fraction"] > 0.5, lay
  assert lay["renderer_sharded_fraction"] == 0.0, lay
  assert lay["head_0_shard"][-1] * 4 == lay["head_0_shape"][-1], lay
  # ZeRO-1: the moments split (the same rule), the params whole.
  assert res["zero1_layout"]["opt"] > 0.5 and res["zero1_layout"]["params"] == 0.0, res
  for name in ("mesh", "fsdp", "pmap", "zero1"):
    r = res[name]
    assert r["step"] == STEPS
    assert r["params"] < 1e-9, (name, r)
    assert r["opt_state"] < 1e-9, (name, r)
    assert r["metrics"] < 1e-9, (name, r)
    assert r["renderer_moved"] == 0.0, (name, r)


if __name__ == "__main__" and sys.argv[-1] == "worker":
  _worker()
