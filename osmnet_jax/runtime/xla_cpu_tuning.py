"""XLA:CPU options that the entry points (train.py, eval.py, generate, benchmarks) set before JAX
starts. Imports nothing heavy: it must run before the first JAX computation reads XLA_FLAGS.

Why: on the renderer train step XLA:CPU's default of handing every convolution to YNNPACK
(`individual_convolution` in `xla_cpu_experimental_ynn_fusion_type`) is slower than its Eigen
convolutions in an A/B of the same step (BENCHMARKS.md). Only the CPU backend reads these
options; GPU/TPU runs are unaffected.

Rules: a flag the user already put in XLA_FLAGS wins (never overridden or duplicated);
`OSMNET_XLA_CPU_TUNING=0` turns this off; the flags are only added for the jaxlib minor versions
they were measured on (`TESTED_JAXLIB`), because XLA aborts on flags it does not know and these
are experimental.
"""
from __future__ import annotations

import importlib.metadata
import os
from typing import MutableMapping

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)
TESTED_JAXLIB = ("0.10",)
OPT_OUT_ENV = "OSMNET_XLA_CPU_TUNING"


def _jaxlib_minor() -> str:
  try:
    return ".".join(importlib.metadata.version("jaxlib").split(".")[:2])
  except importlib.metadata.PackageNotFoundError:
    return ""


def apply(environ: MutableMapping[str, str] | None = None, jaxlib_minor: str | None = None
          ) -> list[str]:
  """Appends the missing CPU_FLAGS to environ['XLA_FLAGS']; returns the flags it added."""
  environ = os.environ if environ is None else environ
  if environ.get(OPT_OUT_ENV, "1").strip() == "0":
    return []
  if (jaxlib_minor if jaxlib_minor is not None else _jaxlib_minor()) not in TESTED_JAXLIB:
    return []
  current = environ.get("XLA_FLAGS", "")
  added = [f for f in CPU_FLAGS if f.split("=", 1)[0] not in current]
  if added:
    environ["XLA_FLAGS"] = " ".join([current.strip(), *added]).strip()
  return added
