"""Orbax checkpoints that resume exactly: state pytree (params, batch_stats, optimizer, step, RNG)
plus JSON metadata (data position, stage, config digest).

One format: the state is saved unreplicated (a pmap run unreplicates before saving, see
``stages/loop.run``'s ``export_state``), so every run loads the same way whatever the device
count. Saves are asynchronous (training continues while the arrays are written) and atomic (a step
folder only counts once orbax has committed it, so a crash mid-save leaves the previous
checkpoint as the latest). Restores take an abstract target tree of ``jax.ShapeDtypeStruct``
carrying each leaf's sharding, so state comes back directly onto the mesh.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStruct tree with the shardings of ``tree`` (a restore target)."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)


class Checkpointer:
  """Keep-N async checkpoint manager for one training stage."""

  def __init__(self, directory: str, max_to_keep: int = 3, save_every: int = 1000,
               async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self.save_every = save_every
    self._mngr = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save),
        item_names=("state", "meta"),
    )

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._mngr.all_steps())

  def save(self, step: int, state: Any, meta: dict, force: bool = False) -> bool:
    """Save when ``step`` is a multiple of ``save_every`` (or ``force``); returns True if saved."""
    if not force and (self.save_every <= 0 or step % self.save_every):
      return False
    if step in self._mngr.all_steps():
      return False
    return self._mngr.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
        force=True,
    )

  def restore(self, target: Any = None, step: int | None = None) -> tuple[Any, dict]:
    """Restore ``step`` (default: latest) into the structure/shardings of ``target``; without a
    target the state comes back as the saved tree of nested dicts (what inference loaders read:
    they keep only the parts they need and check them against the model)."""
    step = self._mngr.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    state_args = (ocp.args.StandardRestore() if target is None else
                  ocp.args.StandardRestore(abstract_like(target)))
    out = self._mngr.restore(
        step, args=ocp.args.Composite(state=state_args, meta=ocp.args.JsonRestore()))
    return out["state"], dict(out["meta"])

  def wait(self):
    self._mngr.wait_until_finished()

  def close(self):
    self._mngr.wait_until_finished()
    self._mngr.close()
