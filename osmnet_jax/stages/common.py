"""What every training stage shares: the compiled step (jit or pmap), data iterators, the
checkpointed loop.

Each stage has a pure ``train_step(state, batch, rng, axis_name=None) -> (state, metrics)``;
``axis_name`` is set only under pmap, where the step ``lax.pmean``s its gradients and metrics.

    step = make_jit_step(stage.train_step, mesh, state_sharding)   # or make_pmap_step(...)
    state, metrics = step(state, batch, rng)
    state, metrics = fit(name=..., train_step=stage.train_step, state=state, ...)  # a stage run

Checkpoints hold one format whichever way a run trained: the host state without a device axis
(a pmap run unreplicates before saving and replicates after restoring).
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from osmnet_jax import checkpointing
from osmnet_jax.runtime import sharding
from osmnet_jax.runtime import zero1 as zero1_lib
from osmnet_jax.stages import loop as train_loop


def make_jit_step(train_step: Callable, mesh: Mesh, state_sharding: Any = None) -> Callable:
  """jit over ``mesh``: state donated and laid out by ``state_sharding`` (default replicated;
  a pytree of shardings for FSDP: XLA then all-gathers each weight where it is used and
  reduce-scatters its gradient), batch split over the mesh's batch axes, rng replicated. The
  output state has the input's layout, so step n+1 reuses step n's executable."""
  repl = NamedSharding(mesh, P())
  state_sh = repl if state_sharding is None else state_sharding
  return jax.jit(train_step, in_shardings=(state_sh, sharding.batch_sharding(mesh), repl),
                 out_shardings=(state_sh, repl), donate_argnums=(0,))


def fsdp_state_shardings(mesh: Mesh, state: Any, split: tuple[str, ...] = ("params", "opt_state"),
                         min_size: int = sharding.FSDP_MIN_SIZE,
                         shard_optimizer: bool = False) -> Any:
  """FSDP layout of a stage's state dataclass (arrays or ShapeDtypeStructs): the ``split``
  fields (params and their Adam moments) by ``sharding.fsdp_shardings`` over the mesh's 'fsdp'
  axis (leaves under ``min_size`` elements replicated), every other field (step, BatchNorm
  statistics, a frozen renderer or perceptual backbone) replicated. All replicated when the
  mesh has no 'fsdp' axis or it is 1. ``shard_optimizer`` (ZeRO-1) instead splits the optimizer
  state over every device of the mesh (``sharding.optimizer_shardings``), whatever 'fsdp' is."""
  repl = NamedSharding(mesh, P())

  def layout(k, v):
    if k == "opt_state" and shard_optimizer:
      return sharding.optimizer_shardings(v, mesh, min_size)
    if k in split:
      return sharding.fsdp_shardings(v, mesh, min_size)
    return jax.tree.map(lambda _: repl, v)

  fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
  return type(state)(**{k: layout(k, v) for k, v in fields.items()})


class CompiledSteps:
  """The compiled forms of a stage's pure ``self.train_step`` (renderer, motion, expression)."""

  def state_shardings(self, mesh: Mesh, state: Any, min_size: int = sharding.FSDP_MIN_SIZE,
                      shard_optimizer: bool = False) -> Any:
    """FSDP layout of ``state`` on ``mesh`` (``fsdp_state_shardings``: params and Adam moments
    split over 'fsdp', the rest replicated; all replicated when fsdp is 1). With
    ``shard_optimizer`` the Adam moments are split over every device instead (ZeRO-1)."""
    return fsdp_state_shardings(mesh, state, min_size=min_size, shard_optimizer=shard_optimizer)

  def make_jit_step(self, mesh: Mesh, state_sharding: Any = None) -> Callable:
    """``make_jit_step`` of this step: state replicated, or laid out by ``state_sharding``
    (``state_shardings(mesh, state)`` for FSDP)."""
    return make_jit_step(self.train_step, mesh, state_sharding)

  def make_zero1_step(self, mesh: Mesh, state_sharding: Any) -> Callable:
    """The ZeRO-1 step (``runtime/zero1.make_step``) on ``state_shardings(mesh, state,
    shard_optimizer=True)``: the gradient reduce-scattered, 1/n of the update per device."""
    return zero1_lib.make_step(self.train_step, mesh, state_sharding)

  def make_pmap_step(self) -> Callable:
    """``make_pmap_step`` of this step (state from ``sharding.replicate``)."""
    return make_pmap_step(self.train_step)


def state_layout(stage: CompiledSteps, cfg, mesh: Mesh, state: Any) -> Any:
  """The jit step's state layout that train.py's ``cfg`` asks for (None under pmap):
  config.mesh.fsdp > 1 splits params and Adam moments over 'fsdp' (replicated at 1);
  config.mesh.shard_optimizer splits the Adam moments over every device (ZeRO-1). Checkpoints
  restore straight into it (the restore target carries its shardings)."""
  if cfg.parallel != "jit":
    return None
  return stage.state_shardings(mesh, state, shard_optimizer=uses_zero1(cfg))


def uses_zero1(cfg) -> bool:
  """config.mesh.shard_optimizer (configs without a mesh: off): train with the ZeRO-1 step."""
  return bool((cfg.get("mesh") or {}).get("shard_optimizer", False))


def make_pmap_step(train_step: Callable) -> Callable:
  """pmap over the local devices (axis 'batch'): state with a leading device axis
  (``sharding.replicate``), batch [n_dev, B/n_dev, ...], one rng shared by all devices."""
  return jax.pmap(functools.partial(train_step, axis_name=sharding.PMAP_AXIS),
                  axis_name=sharding.PMAP_AXIS, in_axes=(0, 0, None), donate_argnums=(0,))


def apply_gradients(tx: optax.GradientTransformation, params: Any, opt_state: Any, grads: Any,
                    metrics: dict, axis_name: Any = None, zero1: bool = False,
                    grad_clip: float | None = None) -> tuple[Any, Any, dict]:
  """The tail every stage-B step shares: under pmap/shard_map average gradients and metrics
  over ``axis_name``; log the gradient norm; one optimizer update -> (params, opt_state,
  metrics). ``zero1``: the ZeRO-1 step's sharded update (runtime/zero1.py), which applies the
  ``optax.clip_by_global_norm(grad_clip)`` that ``tx`` starts with on the whole gradient."""
  if axis_name is not None:
    metrics = jax.lax.pmean(metrics, axis_name)
  if zero1:
    params, opt_state, sq = zero1_lib.update(tx, params, opt_state, grads, axis_name, grad_clip)
    return params, opt_state, {**metrics, "grad_norm": jnp.sqrt(sq)}
  if axis_name is not None:
    grads = jax.lax.pmean(grads, axis_name)
  metrics = {**metrics, "grad_norm": optax.tree.norm(grads)}
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, metrics


def place(train_step: Callable, state: Any, mesh: Mesh, parallel: str,
          state_sharding: Any = None,
          zero1: bool = False) -> tuple[Any, Callable, Callable, Callable]:
  """(state on the devices, compiled step, to_host, to_devices) for ``parallel`` jit | pmap.

  ``to_host`` maps the device state to the saved form (no device axis); ``to_devices`` is its
  inverse (a restored checkpoint lands straight in the training layout)."""
  if parallel == "pmap":
    return (sharding.replicate(state), make_pmap_step(train_step), sharding.unreplicate,
            sharding.replicate)
  if parallel != "jit":
    raise ValueError(f"config.parallel={parallel!r}: use 'jit' or 'pmap'")
  sh = sharding.replicated(mesh) if state_sharding is None else state_sharding

  def put(s):
    return jax.device_put(s, sh)

  step = zero1_lib.make_step(train_step, mesh, sh) if zero1 else make_jit_step(train_step, mesh, sh)
  return put(state), step, lambda s: s, put


def make_iterator_factory(cfg, builder, mesh, split: str, batch_size: int, num_frames: int,
                          keys: tuple[str, ...] | None = None, augment: bool = True,
                          transform: Callable | None = None) -> Callable[[int], Any]:
  """``start_step -> DeviceIterator`` over ``split`` windows of ``num_frames`` frames.

  ``keys``: the batch entries the step reads (others never reach the devices); ``transform``:
  a tf.data map applied last. Data options come from ``cfg.data``; ``cfg.parallel`` picks the
  device layout."""
  from osmnet_jax.input import pipeline as input_pipeline

  per_process = sharding.check_batch_size(batch_size, mesh)
  data = cfg.data

  def make(start_step: int):
    ds = input_pipeline.make_dataset(
        builder, split, per_process, num_frames, seed=cfg.seed, start_step=start_step,
        shuffle_buffer=data.shuffle_buffer, augment=tuple(data.augment) if augment else ())
    if keys is not None:
      ds = ds.map(lambda b: {k: b[k] for k in keys})
    if transform is not None:
      ds = ds.map(transform)
    return input_pipeline.DeviceIterator(ds, mesh, layout=cfg.parallel, prefetch=data.prefetch,
                                         start_step=start_step)

  return make


def fit(*, name: str, train_step: Callable, state: Any, mesh: Mesh, parallel: str,
        make_iterator: Callable[[int], Any], ckdir: str, num_steps: int, save_every: int,
        rng: jax.Array, log_every: int, writer=None, keep: int = 3, meta: dict | None = None,
        state_sharding: Any = None, zero1: bool = False, to_saved: Callable = lambda s: s,
        from_saved: Callable = lambda s: s,
        on_log: Callable[[int, Any, dict], None] | None = None) -> tuple[Any, dict]:
  """Compile ``train_step``, resume from ``ckdir`` and train to ``num_steps`` (stages/loop.py).

  ``to_saved`` / ``from_saved`` drop / re-attach what the checkpoint need not hold (host form).
  ``on_log(step, host_state, batch)`` runs at every log step. Returns (host state, last
  logged metrics)."""
  state, step_fn, to_host, to_devices = place(train_step, state, mesh, parallel, state_sharding,
                                              zero1)

  def export_state(s):
    return to_saved(to_host(s))

  def hook(step, s, batch):
    on_log(step, to_host(s), batch)

  ck = checkpointing.Checkpointer(ckdir, max_to_keep=keep, save_every=save_every)
  try:
    state, metrics = train_loop.run(
        name=name, state=state, step_fn=step_fn, make_iterator=make_iterator, checkpointer=ck,
        num_steps=num_steps, rng=rng, log_every=log_every, writer=writer,
        on_log=hook if on_log else None, meta=meta, export_state=export_state,
        import_state=lambda s: to_devices(from_saved(s)))
  finally:
    ck.close()
  return to_host(state), metrics


def write_json_once(path: str, obj: dict) -> None:
  """Process 0 writes ``obj`` to ``path`` (creating its folder)."""
  import json

  if jax.process_index() != 0:
    return
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(obj, f, indent=2, default=list)
