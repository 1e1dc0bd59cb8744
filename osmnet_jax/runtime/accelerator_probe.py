"""Run on the CPU, quietly, where JAX's accelerator plugins are installed but no accelerator is.

With the `aot` extra (libtpu and the CUDA plugin, for compiling to TPU and GPU targets) installed
on a CPU-only machine, JAX initialises each plugin at start-up and prints a long traceback for
each ("Unable to load CUDA. Is it installed?", "could not determine TPU accelerator type")
before it falls back to the CPU. A new user reads that as a failure. The entry points (train.py,
eval.py, generate, scaling) call ``apply()`` before JAX starts. It sets ``JAX_PLATFORMS=cpu``
and says so in one line only when all of these hold:

- the user has not set ``JAX_PLATFORMS`` (theirs always wins);
- ``OSMNET_ACCELERATOR_PROBE`` is not ``0`` (the opt-out);
- an accelerator plugin is installed (``PLUGINS``);
- no accelerator device node exists (``DEVICE_GLOBS`` under /dev: NVIDIA GPUs, TPU VMs' accel
  and vfio nodes, AMD's kfd). A container that is given a GPU or TPU sees these nodes.

Imports nothing heavy; like ``xla_cpu_tuning`` it must run before JAX reads its configuration.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import sys
from typing import Callable, MutableMapping

OPT_OUT_ENV = "OSMNET_ACCELERATOR_PROBE"
# Modules whose presence means JAX will try a non-CPU backend at start-up.
PLUGINS = ("jax_plugins.xla_cuda12", "jax_cuda12_plugin", "jax_plugins.xla_cuda13",
           "jax_cuda13_plugin", "libtpu", "jax_plugins.xla_rocm", "jax_rocm_plugin")
# Device nodes of the accelerators those plugins drive.
DEVICE_GLOBS = ("nvidia[0-9]*", "nvidiactl", "accel[0-9]*", "vfio/[0-9]*", "kfd")


def installed_plugins(find_spec: Callable = importlib.util.find_spec) -> list[str]:
  """The PLUGINS that are importable here (without importing them)."""
  found = []
  for name in PLUGINS:
    try:
      if find_spec(name) is not None:
        found.append(name)
    except (ImportError, ValueError):  # a parent package missing or broken
      pass
  return found


def device_nodes(dev_root: str = "/dev") -> list[str]:
  """Accelerator device nodes under ``dev_root``."""
  return sorted(p for g in DEVICE_GLOBS for p in glob.glob(os.path.join(dev_root, g)))


def apply(environ: MutableMapping[str, str] | None = None, dev_root: str = "/dev",
          plugins: list[str] | None = None, quiet: bool = False) -> str | None:
  """Sets environ['JAX_PLATFORMS'] = 'cpu' under the conditions of the module docstring and
  returns the one-line note it printed (None where it changed nothing)."""
  environ = os.environ if environ is None else environ
  if environ.get("JAX_PLATFORMS") or environ.get(OPT_OUT_ENV, "1").strip() == "0":
    return None
  plugins = installed_plugins() if plugins is None else plugins
  if not plugins or device_nodes(dev_root):
    return None
  environ["JAX_PLATFORMS"] = "cpu"
  if environ is os.environ and "jax" in sys.modules:
    # jax read JAX_PLATFORMS when it was imported; its backends start at the first use, so the
    # config still takes the choice here.
    sys.modules["jax"].config.update("jax_platforms", "cpu")
  note = (f"osmnet_jax: no GPU/TPU device under {dev_root} though JAX accelerator plugins are "
          f"installed ({', '.join(plugins)}): running on the CPU (JAX_PLATFORMS=cpu). Set "
          f"JAX_PLATFORMS to choose, or {OPT_OUT_ENV}=0 to let JAX probe.")
  if not quiet:
    print(note, file=sys.stderr)
  return note
