"""Compute-dtype names of the configs -> the ``dtype`` attribute of the Flax modules.

Every trained model (renderer, motion, expression) reads ``cfg.compute_dtype``: "float32" (the
default; modules follow their float32 params) or "bfloat16" (matmuls, convolutions and
activations in bf16; params, optimizer state, normalisation statistics and losses stay float32).
"""
from __future__ import annotations

import jax.numpy as jnp

COMPUTE_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


def compute_dtype(cfg):
  """cfg.compute_dtype -> the modules' `dtype`: None (float32, follows the params) or bfloat16.

  float16 is not offered: its 5-bit exponent would need loss scaling; bf16 has float32's
  exponent range, so the float32 loss and gradients need none.
  """
  name = cfg.get("compute_dtype", "float32")  # a config without the field: float32
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"compute_dtype={name!r}: use one of {sorted(COMPUTE_DTYPES)}")
  return COMPUTE_DTYPES[name]
