"""W/renderer_health.json: the renderer stage's attempts and which one is kept (stages/renderer.py).

In "restart" mode a failed attempt's checkpoint folder is set aside as
W/checkpoints/renderer_attempt<i> before the next attempt trains in W/checkpoints/renderer, the
folder every later stage and eval.py read.
Folder moves are journaled: the record lists them under "pending" and is written (atomically)
before they run, and ``finish_moves`` completes them on the next start, so a crash between two
moves never leaves a checkpoint in the wrong place or an attempt counted twice.

Record: {"steps", "bounds", "seed", "retry", "attempts": [{"attempt", "seed", "steps",
"passed", "shortfall", "failed", "scores", "checkpoint"}], "kept": index or absent,
"pending": [[src, dst], ...]} (folders relative to W). In "extend" mode nothing moves: each
attempt continues the last one's checkpoint.
"""
from __future__ import annotations

import json
import os

import jax
from absl import logging

FILE = "renderer_health.json"
CURRENT = os.path.join("checkpoints", "renderer")


def aside(attempt: int) -> str:
  return os.path.join("checkpoints", f"renderer_attempt{attempt}")


SETTINGS = ("steps", "bounds", "seed", "retry")


def load(workdir: str, steps: int, bounds: dict, seed: int, retry: str) -> dict:
  """The record for this run's steps, bounds, seed and retry mode; a fresh one where there is
  none or it was written for other settings (then the checkpoint in W/checkpoints/renderer is
  resumed as attempt 0: e.g. more steps continue it)."""
  fresh = {"steps": steps, "bounds": {k: list(v) for k, v in bounds.items()}, "seed": seed,
           "retry": retry, "attempts": [], "pending": []}
  path = os.path.join(workdir, FILE)
  if not os.path.exists(path):
    return fresh
  with open(path) as f:
    old = json.load(f)
  if all(old.get(k) == fresh[k] for k in SETTINGS):
    return old
  logging.info("renderer: %s was written for other settings (steps, bounds, seed or retry); "
               "starting a new health record", path)
  finish_moves(old, workdir)
  return fresh


def save(record: dict, workdir: str) -> None:
  """Atomic write (process 0)."""
  if jax.process_index() != 0:
    return
  path = os.path.join(workdir, FILE)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(record, f, indent=2)
  os.replace(tmp, path)


def finish_moves(record: dict, workdir: str) -> None:
  """Run the journaled folder moves that have not run yet (each: src exists, dst does not)."""
  if jax.process_index() == 0:
    for src, dst in record.get("pending", []):
      s, d = os.path.join(workdir, src), os.path.join(workdir, dst)
      if os.path.exists(s) and not os.path.exists(d):
        os.replace(s, d)
  record["pending"] = []
  _sync("renderer_health_moves")


def _journal(record: dict, workdir: str, moves: list[tuple[str, str]]) -> None:
  for src, dst in moves:
    if dst != CURRENT and os.path.exists(os.path.join(workdir, dst)):
      raise FileExistsError(
          f"renderer health check: {os.path.join(workdir, dst)} already exists (left by an "
          f"earlier run with other settings); move or delete it, then rerun")
  record["pending"] = [list(m) for m in moves]
  save(record, workdir)
  finish_moves(record, workdir)
  save(record, workdir)


def set_aside(record: dict, workdir: str, attempt: int) -> None:
  """Move the failed ``attempt``'s checkpoint out of W/checkpoints/renderer."""
  record["attempts"][attempt]["checkpoint"] = aside(attempt)
  _journal(record, workdir, [(CURRENT, aside(attempt))])


def swap_in(record: dict, workdir: str, kept: int) -> None:
  """Put attempt ``kept`` (set aside earlier) back in W/checkpoints/renderer and set the last
  attempt aside."""
  last = len(record["attempts"]) - 1
  record["attempts"][last]["checkpoint"] = aside(last)
  record["attempts"][kept]["checkpoint"] = CURRENT
  _journal(record, workdir, [(CURRENT, aside(last)), (aside(kept), CURRENT)])


def continue_in_place(record: dict, workdir: str, attempt: int) -> None:
  """Extend mode: the next attempt trains on from ``attempt``'s checkpoint, in place."""
  record["attempts"][attempt]["checkpoint"] = "continued by the next attempt"
  save(record, workdir)


def reopen(record: dict, workdir: str, move: bool) -> None:
  """Undo a decision in which every attempt failed (more retries were allowed since) so the next
  attempt can train: ``move`` (restart mode) sets the kept attempt's checkpoint aside like the
  others; else (extend mode) the next attempt continues it in place."""
  kept = record.pop("kept")
  if not move:
    continue_in_place(record, workdir, kept)
    return
  record["attempts"][kept]["checkpoint"] = aside(kept)
  _journal(record, workdir, [(CURRENT, aside(kept))])


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)
