"""Renderer train step: single device vs jit over a 2x2 ('data', 'fsdp') mesh vs jit over a
('data',) mesh vs pmap on 4 simulated CPU devices give the same parameters, BatchNorm statistics,
Adam states and losses after 2 steps (float64; params/stats within 1e-8, Adam states and losses
within 1e-9; see the note in the worker about float32 and Adam).

The comparison runs in a subprocess so the simulated device count cannot clash with other test
modules that already initialised JAX.
"""

import json
import os
import sys
import time

import numpy as np

from conftest import run_worker

N_DEV = 4
STEPS = 2


def small_renderer_config():
  """renderer.tiny_config() trimmed further to keep several compilations fast (32 px)."""
  from osmnet_jax import renderer  # pylint: disable=g-import-not-at-top  (after jax.config)

  cfg = renderer.tiny_config()
  cfg.kp_detector.num_blocks = 2
  cfg.generator.num_bottleneck_blocks = 1
  cfg.generator.dense_motion_params = dict(
      block_expansion=8, max_features=32, num_blocks=2, scale_factor=0.25
  )
  cfg.train.scales = (1, 0.5)
  cfg.train.loss_weights.perceptual = (10.0, 10.0)  # relu1_2, relu2_2 of the shipped VGG16
  return cfg


def _worker():
  t0 = time.time()
  os.environ["JAX_PLATFORMS"] = "cpu"
  import jax  # pylint: disable=g-import-not-at-top

  jax.config.update("jax_num_cpu_devices", N_DEV)
  # float64 so that the comparison is tight: in float32 the three layouts agree to rounding
  # (losses ~1e-7 relative) but Adam's first steps (update ~ lr * g / |g|) turn rounding noise in
  # near-zero gradients (e.g. conv biases right before a BatchNorm, whose true gradient is 0)
  # into +-lr differences, so float32 params can only agree to 2 * lr * steps.
  jax.config.update("jax_enable_x64", True)
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding  # pylint: disable=g-import-not-at-top
  from jax.sharding import PartitionSpec as P

  from osmnet_jax.runtime import sharding  # pylint: disable=g-import-not-at-top
  from osmnet_jax.stages import renderer_step as rs  # pylint: disable=g-import-not-at-top

  assert jax.device_count() == N_DEV, jax.devices()
  cfg = small_renderer_config()
  stage = rs.RendererStage(cfg, dtype=jnp.float64)
  state0 = stage.init_state(jax.random.PRNGKey(0), 32)
  state0 = jax.tree.map(
      lambda x: np.asarray(x, np.float64 if np.issubdtype(x.dtype, np.floating) else x.dtype),
      state0,
  )
  rng = np.random.RandomState(0)
  # Smooth-ish uint8 frames: random low-res colour fields upsampled.
  def frames():
    low = rng.rand(8, 4, 4, 3)
    return (np.kron(low, np.ones((1, 8, 8, 1))) * 255).astype(np.uint8)

  batches = [{"source": frames(), "driving": frames()} for _ in range(STEPS)]
  keys = [jax.random.PRNGKey(10 + i) for i in range(STEPS)]

  times = {}

  def run(step_name, step, put_state, put_batch, get):
    t = time.time()
    state = put_state(state0)
    hist = []
    for b, k in zip(batches, keys):
      state, m = step(state, put_batch(b), k)
      hist.append(get(m))
      times.setdefault(step_name, []).append(round(time.time() - t, 1))
    return get(state), hist

  single = run("single", jax.jit(stage.train_step), lambda s: jax.tree.map(jnp.asarray, s),
               lambda b: b, lambda t: jax.tree.map(np.asarray, t))

  mesh = jax.make_mesh((2, 2), ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  repl = NamedSharding(mesh, P())
  bsh = NamedSharding(mesh, P(("data", "fsdp")))
  meshed = run("mesh", stage.make_jit_step(mesh), lambda s: jax.device_put(s, repl),
               lambda b: jax.device_put(b, bsh), lambda t: jax.tree.map(np.asarray, t))

  mesh1 = jax.make_mesh((N_DEV,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  meshed_data = run(
      "mesh_data", stage.make_jit_step(mesh1),
      lambda s: jax.device_put(s, NamedSharding(mesh1, P())),
      lambda b: jax.device_put(b, NamedSharding(mesh1, P("data"))),
      lambda t: jax.tree.map(np.asarray, t),
  )

  pmapped = run(
      "pmap",
      stage.make_pmap_step(),
      sharding.replicate,
      sharding.shard_batch,
      lambda t: jax.tree.map(lambda x: np.asarray(x)[0], t),
  )

  def maxdiff(a, b):
    return float(max(jax.tree.leaves(jax.tree.map(lambda x, y: np.abs(x - y).max(), a, b))))

  out = {}
  for name, (st, hist) in (("mesh", meshed), ("mesh_data", meshed_data), ("pmap", pmapped)):
    out[name] = {
        "params": maxdiff(st.params, single[0].params),
        "batch_stats": maxdiff(st.batch_stats, single[0].batch_stats),
        "opt_state": maxdiff(st.opt_state, single[0].opt_state),
        "losses": maxdiff(hist, single[1]),
        "step": int(st.step),
    }
  out["moved"] = maxdiff(single[0].params, state0.params)
  out["losses"] = [{k: float(v) for k, v in h.items()} for h in single[1]]
  out["seconds"] = time.time() - t0
  out["times"] = times
  print("RESULT " + json.dumps(out))


def test_jit_mesh_pmap_single_device_agree():
  # Cheap XLA:CPU codegen: compile time dominates this test; all three layouts use the same flags.
  res = run_worker(__file__)
  print(res)
  # Parameters moved (Adam at lr 2e-4 for 3 steps: ~6e-4) and every loss is finite.
  assert res["moved"] > 3e-4
  for h in res["losses"]:
    assert set(h) >= {"perceptual", "equivariance_value", "equivariance_jacobian", "total"}
    assert all(np.isfinite(v) for v in h.values())
  for name in ("mesh", "mesh_data", "pmap"):
    r = res[name]
    assert r["step"] == STEPS
    assert r["params"] < 1e-8, (name, r)
    assert r["batch_stats"] < 1e-8, (name, r)
    assert r["opt_state"] < 1e-9, (name, r)
    assert r["losses"] < 1e-9, (name, r)


if __name__ == "__main__" and sys.argv[-1] == "worker":
  _worker()
