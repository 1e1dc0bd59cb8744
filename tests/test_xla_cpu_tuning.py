"""xla_cpu_tuning: adds its XLA:CPU flags once, never over the user's, and only where tested."""
import os
import subprocess
import sys

import pytest

from osmnet_jax.runtime import xla_cpu_tuning as t

FLAG = t.CPU_FLAGS[0]


def test_adds_missing_flags_once_and_keeps_the_users():
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  assert t.apply(env, "0.10") == [FLAG]
  assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=4 {FLAG}"
  assert t.apply(env, "0.10") == []  # idempotent
  assert env["XLA_FLAGS"].count("ynn_fusion_type") == 1
  mine = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=+individual_convolution"}
  assert t.apply(mine, "0.10") == [] and "+individual" in mine["XLA_FLAGS"]


def test_opt_out_and_untested_jaxlib():
  env = {t.OPT_OUT_ENV: "0"}
  assert t.apply(env, "0.10") == [] and "XLA_FLAGS" not in env
  env = {}
  assert t.apply(env, "9.99") == [] and "XLA_FLAGS" not in env  # unknown flags abort XLA


def test_installed_jax_accepts_the_flags():
  """The flags are real for this jaxlib: a fresh process with them runs a computation."""
  env = {}
  if not t.apply(env):
    pytest.skip("jaxlib outside TESTED_JAXLIB: the module adds no flags there")
  code = "import jax.numpy as jnp; print(float(jnp.ones((2, 2)).sum()))"
  out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env},
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip().endswith("4.0")
