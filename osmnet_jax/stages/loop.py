"""The loop every training stage shares: resume, step, log, guard, checkpoint.

A stage hands over a compiled ``step_fn(state, batch, rng) -> (state, metrics)`` (jit over the
mesh or pmap), its initial state, a ``DeviceIterator`` factory and a ``Checkpointer``. The loop

  * resumes from the latest checkpoint (state incl. optimizer and RNG, plus the data position,
    so the run continues exactly as if it had never stopped);
  * derives the per-step RNG as ``fold_in(base_rng, step)`` — a pure function of the step;
  * fetches metrics only every ``log_every`` steps (no host sync on the others);
  * stops with the step and the offending metric when a metric is NaN/inf (NaN guard) and
    never checkpoints a non-finite state;
  * shows a progress bar with steps/s and ETA and writes TensorBoard scalars;
  * checkpoints every ``save_every`` steps and at the end (async; waited for before return);
  * on Ctrl-C checkpoints the step in progress once it finishes and raises ``Interrupted``
    after the saves are written (a second Ctrl-C stops at once).
"""
from __future__ import annotations

import math
import signal
import threading
import time
from typing import Any, Callable

import jax
import numpy as np
from absl import logging


class NonFiniteError(FloatingPointError):
  pass


class Interrupted(Exception):
  """Ctrl-C during ``run``: ``step`` finished steps, ``saved`` the latest complete checkpoint."""

  def __init__(self, name: str, step: int, saved: int | None):
    super().__init__(f"{name}: interrupted at step {step} (last checkpoint: step {saved})")
    self.name, self.step, self.saved = name, step, saved


def _mean_metrics(metrics: dict) -> dict[str, float]:
  # pmap metrics carry a leading device axis; jit metrics are scalars.
  return {k: float(np.mean(np.asarray(v))) for k, v in jax.device_get(metrics).items()}


def _finite_metrics(name: str, step: int, metrics: dict, checkpointer) -> dict[str, float]:
  """Host metrics of ``step``; NonFiniteError (NaN guard) when one is NaN/inf."""
  current = _mean_metrics(metrics)
  bad = {k: v for k, v in current.items() if not math.isfinite(v)}
  if bad:
    raise NonFiniteError(
        f"{name}: step {step}: non-finite metric(s) {bad}; the last good checkpoint is "
        f"step {checkpointer.latest_step()} in {checkpointer.directory}. Lower the learning "
        f"rate or check the data.")
  return current


class _StopOnSigint:
  """While active (main thread only): the first SIGINT asks the loop to stop after the current
  step, so no library call is cut off mid-way; a second SIGINT raises KeyboardInterrupt."""

  def __enter__(self):
    self.requested = False
    self._previous = None
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGINT, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    if self.requested:
      raise KeyboardInterrupt
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGINT, self._previous)


def run(
    *,
    name: str,
    state: Any,
    step_fn: Callable,
    make_iterator: Callable[[int], Any],
    checkpointer,
    num_steps: int,
    rng: jax.Array,
    log_every: int = 10,
    writer=None,
    on_log: Callable[[int, Any, dict], None] | None = None,
    rng_for_step: Callable[[jax.Array, int], Any] | None = None,
    meta: dict | None = None,
    export_state: Callable[[Any], Any] = lambda s: s,
    import_state: Callable[[Any], Any] = lambda s: s,
) -> tuple[Any, dict]:
  """Train ``name`` until ``num_steps``; returns (state, last logged metrics).

  ``export_state`` / ``import_state`` map the training state to / from the saved form (pmap
  passes unreplicate / replicate, so checkpoints are the same whichever way a run trained).
  """
  from tqdm.auto import tqdm

  start = 0
  if checkpointer.latest_step() is not None:
    saved_state, saved = checkpointer.restore(export_state(state))
    state = import_state(saved_state)
    start = int(saved["step"])
    logging.info("%s: resumed from step %d (%s)", name, start, checkpointer.directory)
  if start >= num_steps:
    logging.info("%s: already trained to step %d >= %d", name, start, num_steps)
    return state, {}
  it = make_iterator(start)
  rng_for_step = rng_for_step or (lambda r, s: jax.random.fold_in(r, s))
  last: dict = {}
  bar = tqdm(total=num_steps, initial=start, desc=name, unit="step",
             disable=jax.process_index() != 0, dynamic_ncols=True)
  t0, s0 = time.perf_counter(), start
  done = start  # last finished step
  interrupted = False
  try:
    with _StopOnSigint() as stop:
      for step in range(start + 1, num_steps + 1):
        batch = next(it)
        state, metrics = step_fn(state, batch, rng_for_step(rng, step))
        done = step
        bar.update(1)
        interrupted = stop.requested  # Ctrl-C: checkpoint this step, then stop
        is_log = step % log_every == 0 or step == num_steps
        is_save = interrupted or step == num_steps or (
            checkpointer.save_every > 0 and step % checkpointer.save_every == 0)
        if is_log or is_save:  # the guard runs before every save: no NaN state is checkpointed
          current = _finite_metrics(name, step, metrics, checkpointer)
        if is_log:
          rate = (step - s0) / max(time.perf_counter() - t0, 1e-9)
          t0, s0 = time.perf_counter(), step
          last = {**current, "steps_per_s": rate}
          bar.set_postfix({k: f"{v:.4g}" for k, v in list(last.items())[:4]})
          if writer is not None:
            for k, v in last.items():
              writer.add_scalar(f"{name}/{k}", v, step)
          if on_log is not None:
            on_log(step, state, batch)
        if is_save:
          checkpointer.save(step, export_state(state),
                            {"step": step, "data_step": step, "stage": name, **(meta or {})},
                            force=True)
        if interrupted:
          break
  except KeyboardInterrupt:  # a second Ctrl-C: stop at once (the last checkpoint stays)
    interrupted = True
  finally:
    bar.close()
    checkpointer.wait()
    if hasattr(it, "close"):
      it.close()
  if interrupted:
    raise Interrupted(name, done, checkpointer.latest_step())
  return state, last
