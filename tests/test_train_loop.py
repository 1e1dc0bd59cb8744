"""Shared training loop: exact resume from orbax checkpoints, NaN guard, keep-N."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from osmnet_jax import checkpointing
from osmnet_jax.stages import loop as train_loop

TX = optax.adam(0.05)


def _init():
  params = {"w": jnp.zeros((3,)), "b": jnp.zeros(())}
  return {"params": params, "opt": TX.init(params), "step": jnp.zeros((), jnp.int32)}


@jax.jit
def _step(state, batch, rng):
  def loss_fn(p):
    noise = 0.01 * jax.random.normal(rng, batch["y"].shape)  # uses the per-step RNG
    pred = batch["x"] @ p["w"] + p["b"]
    return jnp.mean((pred - batch["y"] - noise) ** 2)

  loss, g = jax.value_and_grad(loss_fn)(state["params"])
  upd, opt = TX.update(g, state["opt"], state["params"])
  return ({"params": optax.apply_updates(state["params"], upd), "opt": opt,
           "step": state["step"] + 1}, {"loss": loss})


class _Data:
  """Deterministic stream: batch i is a pure function of i (like the real pipeline)."""

  def __init__(self, start, poison_at=None):
    self.i, self.poison_at = start, poison_at

  def __next__(self):
    rng = np.random.default_rng(self.i)
    x = rng.normal(size=(8, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.3).astype(np.float32)
    self.i += 1
    if self.poison_at is not None and self.i == self.poison_at:
      y[0] = np.nan
    return {"x": x, "y": y}


def _run(tmp, num_steps, save_every=2, poison_at=None):
  ck = checkpointing.Checkpointer(str(tmp), max_to_keep=2, save_every=save_every)
  state, metrics = train_loop.run(
      name="toy", state=_init(), step_fn=_step,
      make_iterator=lambda s: _Data(s, poison_at), checkpointer=ck, num_steps=num_steps,
      rng=jax.random.PRNGKey(0), log_every=1)
  ck.close()
  return state, metrics


def test_interrupted_run_resumes_exactly(tmp_path):
  straight, _ = _run(tmp_path / "a", 6)
  _run(tmp_path / "b", 3, save_every=3)        # "crash" after step 3
  resumed, _ = _run(tmp_path / "b", 6, save_every=3)
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert int(resumed["step"]) == 6
  # And training did something: loss fell.
  assert float(jnp.abs(straight["params"]["w"]).sum()) > 0.1


def test_keep_n_and_final_save(tmp_path):
  _run(tmp_path, 7, save_every=2)
  ck = checkpointing.Checkpointer(str(tmp_path), max_to_keep=2)
  assert ck.all_steps() == [6, 7]


def test_nan_guard_stops_with_step_and_metric_and_keeps_good_checkpoint(tmp_path):
  with pytest.raises(train_loop.NonFiniteError, match=r"step 5: .*loss"):
    _run(tmp_path, 8, save_every=2, poison_at=5)
  ck = checkpointing.Checkpointer(str(tmp_path))
  assert ck.latest_step() == 4
  state, meta = ck.restore(_init())
  assert meta["step"] == 4 and meta["data_step"] == 4
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state))


def test_ctrl_c_checkpoints_the_step_in_progress_and_resumes_exactly(tmp_path):
  """SIGINT during step 3 (save_every=10): the loop finishes step 3, checkpoints it, raises
  Interrupted(step=3); a rerun resumes from 3 and ends where an uninterrupted run ends."""
  import os
  import signal

  def step_with_sigint(state, batch, rng):
    out = _step(state, batch, rng)
    if int(out[0]["step"]) == 3:
      os.kill(os.getpid(), signal.SIGINT)
    return out

  d = tmp_path / "a"
  ck = checkpointing.Checkpointer(str(d), max_to_keep=2, save_every=10)
  with pytest.raises(train_loop.Interrupted) as e:
    train_loop.run(name="toy", state=_init(), step_fn=step_with_sigint,
                   make_iterator=lambda s: _Data(s), checkpointer=ck, num_steps=6,
                   rng=jax.random.PRNGKey(0), log_every=1)
  ck.close()
  assert (e.value.step, e.value.saved) == (3, 3)
  resumed, _ = _run(d, 6, save_every=10)
  straight, _ = _run(tmp_path / "b", 6, save_every=10)
  for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(straight)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
