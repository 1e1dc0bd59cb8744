"""Device mesh and the shardings the training code uses (DESIGN.md §4).

The mesh has two axes: ``data`` (pure data parallelism) and ``fsdp`` (data parallelism whose
parameters may also be sharded). The batch is sharded over both; parameters are replicated
unless a stage asks for FSDP (``fsdp_shardings``: each large parameter and its optimizer moments
split over ``fsdp``; XLA then all-gathers the weights where they are used and reduce-scatters
their gradients). ``optimizer_shardings`` splits only the optimizer state, over every device
(ZeRO stage 1): each device holds and updates 1/n of the Adam moments and computes 1/n of the new
params, which are then all-gathered. The step for that layout is ``runtime/zero1.make_step``,
which reduce-scatters the gradient explicitly (jit with these shardings alone all-reduces the
whole gradient and slices it: BENCHMARKS.md "ZeRO-1").
Axis types are ``Auto`` so plain ``jax.jit`` with NamedShardings propagates shardings
(jax.make_mesh defaults to Explicit since 0.7).
"""
from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

BATCH_AXES = ("data", "fsdp")
PMAP_AXIS = "batch"
FSDP_AXIS = "fsdp"
# Parameters with fewer elements stay replicated under FSDP: biases, norms and 1x1 heads of a few
# KiB cost more in collective latency than they save in memory.
FSDP_MIN_SIZE = 2 ** 10


def make_mesh(data: int = -1, fsdp: int = 1, devices=None) -> Mesh:
  """A ('data', 'fsdp') mesh over ``devices`` (default: all); ``data=-1`` takes what is left."""
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if fsdp < 1 or n % fsdp:
    raise ValueError(f"mesh fsdp={fsdp} must divide the {n} devices")
  if data == -1:
    data = n // fsdp
  if data * fsdp != n:
    raise ValueError(f"mesh data={data} x fsdp={fsdp} != {n} devices; use data=-1 to fill")
  return jax.make_mesh(
      (data, fsdp), BATCH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 2, devices=devices
  )


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the mesh's batch axes ('data' and/or 'fsdp'; every
  axis of a mesh that has neither); the rest replicated."""
  axes = tuple(a for a in mesh.axis_names if a in BATCH_AXES) or tuple(mesh.axis_names)
  return NamedSharding(mesh, P(axes if len(axes) > 1 else axes[0]))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def fsdp_spec(shape: tuple[int, ...], n: int, min_size: int = FSDP_MIN_SIZE,
              axis: str | tuple[str, ...] = FSDP_AXIS) -> P:
  """The FSDP layout of one array of ``shape`` over mesh ``axis`` (a name, or a tuple of names
  read as one axis) of size ``n``.

  Its largest dimension divisible by ``n`` is split over ``axis`` (ties: the last such
  dimension, i.e. a conv kernel [kh, kw, c_in, c_out] splits c_out when c_in == c_out);
  replicated (``P()``) when ``n == 1``, the array has fewer than ``min_size`` elements, or no
  dimension divides.
  """
  if n <= 1 or math.prod(shape) < min_size:
    return P()
  best = None
  for i, d in enumerate(shape):
    if d % n == 0 and (best is None or d >= shape[best]):
      best = i
  return P() if best is None else P(*([None] * best), axis)


def fsdp_shardings(tree, mesh: Mesh, min_size: int = FSDP_MIN_SIZE,
                   axes: tuple[str, ...] = (FSDP_AXIS,)):
  """NamedShardings for every leaf of ``tree`` (arrays or ShapeDtypeStructs) by ``fsdp_spec``
  over the mesh's ``axes`` taken together (default 'fsdp'; all replicated when the mesh has none
  of them or they have size 1). Applied to params and to an optax state alike: Adam's mu/nu
  have the params' shapes and get the same layout, its scalar counts stay replicated."""
  present = tuple(a for a in axes if a in mesh.axis_names)
  n = math.prod(dict(mesh.shape)[a] for a in present)
  axis = present[0] if len(present) == 1 else present
  return jax.tree.map(lambda x: NamedSharding(
      mesh, fsdp_spec(tuple(getattr(x, "shape", ())), n, min_size, axis)), tree)


def optimizer_shardings(tree, mesh: Mesh, min_size: int = FSDP_MIN_SIZE):
  """ZeRO-1 layout of an optimizer state ``tree``: each moment split over every device of the
  mesh ('data' and 'fsdp' together) by ``fsdp_spec``; step counts and small leaves replicated."""
  return fsdp_shardings(tree, mesh, min_size, axes=BATCH_AXES)


def sharded_fraction(tree) -> float:
  """Fraction of the elements of placed array ``tree`` that are split across devices (bytes a
  device holds shrink by the shard count on these)."""
  leaves = jax.tree.leaves(tree)
  total = sum(x.size for x in leaves)
  split = sum(x.size for x in leaves if not x.sharding.is_fully_replicated)
  return split / max(total, 1)


def pmap_sharding(devices=None) -> NamedSharding:
  """Layout of a pmap input [num_local_devices, per_device_batch, ...]: row i on device i."""
  devices = np.asarray(jax.local_devices() if devices is None else devices)
  return NamedSharding(Mesh(devices, (PMAP_AXIS,)), P(PMAP_AXIS))


def _broadcast_replicas(tree, n: int):
  """Read-only views of ``tree`` with a leading axis of ``n`` (no host copy)."""
  return jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n,) + np.shape(x)), tree)


def stack_replicas(tree, n: int):
  """Host copy of ``tree`` with a leading axis of ``n`` replicas: the layout a pmap run over n
  devices checkpoints (restore targets; ``n`` need not be this host's device count)."""
  return jax.tree.map(np.copy, _broadcast_replicas(tree, n))


def replicate(tree, devices=None):
  """``tree`` on every local device (or ``devices``) with a leading device axis, laid out as
  pmap returns its outputs, so the second step reuses the first step's executable."""
  sh = pmap_sharding(devices)
  return jax.device_put(_broadcast_replicas(tree, sh.mesh.size), sh)


def unreplicate(tree):
  """Replica 0 of a pmap pytree [n_dev, ...] -> [...]."""
  return jax.tree.map(lambda x: x[0], tree)


def shard_batch(batch, devices=None):
  """A host batch [B, ...] -> [n_dev, B / n_dev, ...] with row i on local device i (pmap)."""
  sh = pmap_sharding(devices)
  n = sh.mesh.size
  return jax.device_put(jax.tree.map(lambda x: x.reshape((n, -1) + x.shape[1:]), batch), sh)


def check_batch_size(global_batch: int, mesh: Mesh | None = None) -> int:
  """Per-process batch size; raises a clear error when the batch does not split evenly."""
  n_dev = mesh.size if mesh is not None else jax.device_count()
  n_proc = jax.process_count()
  if global_batch % n_dev:
    raise ValueError(
        f"batch_size={global_batch} is not divisible by the {n_dev} devices of the mesh; "
        f"set --config.batch_size to a multiple of {n_dev}"
    )
  return global_batch // n_proc


def maybe_initialize_distributed(coordinator: str = "", num_processes: int = 0,
                                 process_id: int = -1) -> bool:
  """Start multi-host JAX when asked (flags) or when the cluster environment says so.

  Explicit arguments win; otherwise ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` /
  ``JAX_PROCESS_ID`` are read; otherwise, on a managed cluster (SLURM, TPU pods, ...),
  ``jax.distributed.initialize()`` auto-detects. Returns True when it initialised.
  """
  import os

  coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
  num_processes = num_processes or int(os.environ.get("JAX_NUM_PROCESSES", "0"))
  if process_id < 0:
    process_id = int(os.environ.get("JAX_PROCESS_ID", "-1"))
  if coordinator:
    if num_processes < 1 or process_id < 0:
      raise ValueError("multi-host: a coordinator address needs num_processes and process_id "
                       "(flags or JAX_NUM_PROCESSES / JAX_PROCESS_ID)")
    jax.distributed.initialize(coordinator, num_processes, process_id)
    return True
  if os.environ.get("SLURM_NTASKS", "1") != "1" or os.environ.get("TPU_WORKER_HOSTNAMES"):
    jax.distributed.initialize()
    return True
  return False
