"""ZeRO-1 as an explicit ``shard_map`` step: reduce-scatter the gradient, update 1/n, gather.

    step = zero1.make_step(stage.train_step, mesh, state_sharding)  # config.mesh.shard_optimizer

Params stay replicated; every Adam moment of >= ``sharding.FSDP_MIN_SIZE`` elements is split over
all n devices of the mesh (``sharding.optimizer_shardings``: the largest dimension divisible by
n). Each device then, per parameter of that size:

1. ``lax.psum_scatter``s its local gradient to the 1/n slice it owns (a reduce-scatter: half of
   an all-reduce's traffic), divided by n (the mean over the global batch, as ``pmean``);
2. runs the optimizer on that slice of the params and moments (1/n of the update's reads and
   writes: Adam's update of 60 M replicated params is ~4 % of the vox256 renderer step);
3. ``lax.all_gather``s the new slices into the whole param (the other half of the all-reduce).

Small parameters (biases, norms) are ``pmean``ed and updated whole on every device.

Why a shard_map rather than jit with the moments' shardings: given only the layouts, XLA
all-reduces the whole gradient and slices it afterwards, and adds the params' all-gather on top
(BENCHMARKS.md "ZeRO-1"), so the network carried DP's traffic plus a gather. Written out, the
collectives are those of DP's all-reduce split in its two halves.

The step runs the stage's pure ``train_step(state, batch, rng, axis_name, zero1=True)`` per
device (the pmap convention: the gradient is the local batch's, BatchNorm statistics and losses
are ``pmean``ed over ``axis_name``), so its result equals the DP and pmap steps' to rounding
(tests/test_renderer_train.py, test_motion_stage.py, test_expression_parallel.py). The
optimizer must be elementwise (Adam, SGD, decoupled weight decay) after an optional global-norm
clip, which ``update`` applies itself on the whole gradient (``clip_norm``): a transform that
reads the whole gradient would otherwise see one slice.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from osmnet_jax.runtime import sharding


def split_dim(shape: tuple[int, ...], n: int, min_size: int = sharding.FSDP_MIN_SIZE) -> int | None:
  """The dimension ``sharding.optimizer_shardings`` splits an array of ``shape`` on over n
  devices (None: kept whole), so the update slices gradients and params as the moments are."""
  spec = sharding.fsdp_spec(tuple(shape), n, min_size)
  return next((i for i, a in enumerate(spec) if a is not None), None)


def update(tx: optax.GradientTransformation, params: Any, opt_state: Any, grads: Any,
           axis_name: Any, clip_norm: float | None = None,
           min_size: int = sharding.FSDP_MIN_SIZE) -> tuple[Any, Any, jax.Array]:
  """Inside ``shard_map`` over ``axis_name`` (all the mesh's axes): local ``grads`` and
  replicated ``params`` -> (new replicated params, this device's slice of the new optimizer
  state, squared global norm of the mean gradient, before clipping). ``opt_state`` is this
  device's slice.

  ``clip_norm``: the ``optax.clip_by_global_norm`` value that ``tx`` starts with, applied here
  to the whole mean gradient (optax's rule: scaled by clip_norm / norm when the norm is not
  below clip_norm). ``tx``'s own clip then sees slices whose norm is at most clip_norm, and
  leaves them as they are."""
  n = jax.lax.axis_size(axis_name)
  me = jax.lax.axis_index(axis_name)
  leaves, treedef = jax.tree.flatten(params)
  dims = [split_dim(p.shape, n, min_size) for p in leaves]  # None: kept whole

  def reduce(g, d):  # the global mean gradient, this device's slice of it where split
    if d is None:
      return jax.lax.pmean(g, axis_name)
    return jax.lax.psum_scatter(g, axis_name, scatter_dimension=d, tiled=True) / n

  def mine(p, d):  # this device's slice of a replicated param
    if d is None:
      return p
    size = p.shape[d] // n
    return jax.lax.dynamic_slice_in_dim(p, me * size, size, d)

  g = [reduce(x, d) for x, d in zip(treedef.flatten_up_to(grads), dims)]
  # ||mean gradient||^2: the split slices summed over the devices, the whole ones counted once.
  split_sq = sum((jnp.sum(jnp.square(x)) for x, d in zip(g, dims) if d is not None), jnp.zeros(()))
  whole_sq = sum((jnp.sum(jnp.square(x)) for x, d in zip(g, dims) if d is None), jnp.zeros(()))
  sq = jax.lax.psum(split_sq, axis_name) + whole_sq
  if clip_norm is not None:
    norm = jnp.sqrt(sq)
    g = [jnp.where(norm < clip_norm, x, (x / norm) * clip_norm) for x in g]
  local = treedef.unflatten([mine(p, d) for p, d in zip(leaves, dims)])
  updates, opt_state = tx.update(treedef.unflatten(g), opt_state, local)
  new = jax.tree.leaves(optax.apply_updates(local, updates))
  new = [x if d is None else jax.lax.all_gather(x, axis_name, axis=d, tiled=True)
         for x, d in zip(new, dims)]
  return treedef.unflatten(new), opt_state, sq


def check_layout(state_sharding: Any) -> None:
  """Params replicated, as this step assumes (FSDP splits them: use its jit step instead)."""
  split = [s for s in jax.tree.leaves(state_sharding.params) if not s.is_fully_replicated]
  if split:
    raise ValueError(f"ZeRO-1 step: {len(split)} params are split ({split[0].spec}); it keeps the "
                     "params replicated: set config.mesh.fsdp=1 with config.mesh.shard_optimizer")


def make_step(train_step: Callable, mesh: Mesh, state_sharding: Any) -> Callable:
  """jit(shard_map(train_step(..., axis_name=<all mesh axes>, zero1=True))): state laid out by
  ``state_sharding`` (``CompiledSteps.state_shardings(mesh, state, shard_optimizer=True)``) and
  donated, the batch split over the whole mesh, the rng replicated; outputs keep the layouts."""
  check_layout(state_sharding)
  axes = tuple(mesh.axis_names)
  specs = jax.tree.map(lambda s: s.spec, state_sharding)
  # check_vma=False: the step follows the pmap convention (its gradients are the local batch's
  # and it reduces them itself); with the check on, the replicated params' cotangents would be
  # summed implicitly before the reduce-scatter could take them.
  body = jax.shard_map(functools.partial(train_step, axis_name=axes, zero1=True), mesh=mesh,
                       in_specs=(specs, P(axes), P()), out_specs=(specs, P()), check_vma=False)
  repl = NamedSharding(mesh, P())
  return jax.jit(body, in_shardings=(state_sharding, sharding.batch_sharding(mesh), repl),
                 out_shardings=(state_sharding, repl), donate_argnums=(0,))
