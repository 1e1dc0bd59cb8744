"""``init_jit``: ``jax.jit`` for one-off programs (parameter initialisation), compiled cheaply on
CPU.

Why: a Flax ``init`` under jit is a few hundred threefry random-bit generators (one per
parameter, different shapes) and nothing else (the forward's outputs are dead code). With jax's
default ``jax_threefry_partitionable=True``, XLA:CPU's full optimisation pipeline spends longer
compiling that program than the renderer's train step (BENCHMARKS.md), and the init runs once.
Compiled with ``xla_backend_optimization_level=0`` and without LLVM's expensive passes the same
program compiles several times faster and returns the same variables: the random bits are
integer threefry and identical; the float maps that turn them into parameters may round
differently without LLVM's optimisations (tests/test_init_jit.py allows 2 ulp). The random
streams do not change: same seed, same parameters as plain ``jax.jit`` up to rounding.

Only the CPU backend gets the cheap options; on GPU/TPU (or when the options are rejected) this
is plain ``jax.jit``. Tracer arguments (``jax.eval_shape`` of a function that initialises)
also take the plain path, where only shapes are computed.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax

# XLA DebugOptions fields (per-compile ``compiler_options``); both exist in jaxlib 0.10.
CHEAP_CPU_OPTIONS = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
}


def _aval_key(x: Any):
  return (tuple(x.shape), str(x.dtype)) if hasattr(x, "shape") else ("py", repr(x))


def init_jit(fn: Callable | None = None, *, static_argnums: Sequence[int] = ()) -> Callable:
  """Like ``jax.jit(fn, static_argnums=...)``; on CPU compiled with ``CHEAP_CPU_OPTIONS``.

  Usable as ``init_jit(fn)`` or as a decorator ``@init_jit(static_argnums=(1,))``. Compiled
  executables are cached per (static args, argument shapes/dtypes), like jit's own cache.
  """
  if fn is None:
    return functools.partial(init_jit, static_argnums=static_argnums)
  static = tuple(static_argnums)
  jitted = jax.jit(fn, static_argnums=static)
  compiled: dict = {}

  @functools.wraps(fn)
  def call(*args):
    dynamic = [a for i, a in enumerate(args) if i not in static]
    leaves = jax.tree.leaves(dynamic)
    if jax.default_backend() != "cpu" or any(isinstance(x, jax.core.Tracer) for x in leaves):
      return jitted(*args)
    key = (tuple(args[i] for i in static), jax.tree.structure(dynamic),
           tuple(_aval_key(x) for x in leaves))
    exe = compiled.get(key)
    if exe is None:
      lowered = jitted.lower(*args)
      try:
        exe = lowered.compile(compiler_options=CHEAP_CPU_OPTIONS)
      except Exception:  # pylint: disable=broad-except
        exe = lowered.compile()  # an XLA without these options: plain compile, same values
      compiled[key] = exe
    return exe(*dynamic)

  return call


class HashableConfig:
  """A ConfigDict as a static jit argument: hashed and compared by its JSON, so equal configs
  share one executable. Attribute access goes to the config."""

  def __init__(self, cfg):
    self.cfg = cfg
    self._key = cfg.to_json_best_effort(sort_keys=True)

  def __hash__(self):
    return hash(self._key)

  def __eq__(self, other):
    return isinstance(other, HashableConfig) and self._key == other._key

  def __getattr__(self, name):
    return getattr(self.cfg, name)


def config_jit(fn: Callable | None = None, *, static_argnums: Sequence[int] = (),
               cheap_compile: bool = False) -> Callable:
  """The one way to jit a function of a config: ``jax.jit`` (``init_jit`` with
  ``cheap_compile``) whose static arguments may be ConfigDicts (wrapped in ``HashableConfig``).

  Usable as ``config_jit(fn, static_argnums=(1,))`` or as a decorator."""
  if fn is None:
    return functools.partial(config_jit, static_argnums=static_argnums,
                             cheap_compile=cheap_compile)
  static = tuple(static_argnums)
  jitted = (init_jit if cheap_compile else jax.jit)(fn, static_argnums=static)

  @functools.wraps(fn)
  def call(*args):
    return jitted(*(HashableConfig(a) if i in static and hasattr(a, "to_json_best_effort")
                    else a for i, a in enumerate(args)))

  return call
