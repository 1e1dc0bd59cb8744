"""benchmarks/scaling_model.py: collective parsing, ring byte counts and the step-time model.

Synthetic HLO lines in the three replica-group notations XLA prints, and a real compiled
all-gather / all-reduce on 4 simulated CPU devices (subprocess) whose sizes are known.
"""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import scaling_model as sm  # pylint: disable=g-import-not-at-top,wrong-import-position  # noqa: E402

HLO = """
  %all-reduce.6 = f32[16]{0} all-reduce(%f.33), channel_id=7, replica_groups=mesh['axis_0'=4,'axis_1'=1] {'axis_0'}, to_apply=%r
  %all-reduce.9 = (f32[32]{0}, f32[3,3,32,32]{3,2,1,0}) all-reduce(%a, %b), channel_id=8, replica_groups={{0,1,2,3}}, to_apply=%r
  %all-gather = f32[7,7,3,8]{2,1,0,3} all-gather(%w), channel_id=1, replica_groups=mesh['axis_0'=2,'axis_1'=2] {'axis_1'}, dimensions={3}
  %reduce-scatter.1 = bf16[1024]{0} reduce-scatter(%g), channel_id=2, replica_groups=[1,4]<=[4], dimensions={0}, to_apply=%r
  %collective-permute.2 = f32[2,10]{1,0} collective-permute(%p), channel_id=3, source_target_pairs={{0,1},{1,0}}
  %all-gather-done = f32[64]{0} all-gather-done(%ags)
  %fusion.3 = f32[16]{0} fusion(%all-reduce.6), kind=kLoop, calls=%fused
"""  # noqa: E501


def test_parse_collectives_bytes_groups_and_ring_factors():
  colls = sm.parse_collectives(HLO, 4)
  assert [c["op"] for c in colls] == ["all-reduce", "all-reduce", "all-gather", "reduce-scatter",
                                      "collective-permute"]
  ar1, ar2, ag, rs, cp = colls
  assert (ar1["full"], ar1["n"], ar1["wire"]) == (64, 4, pytest.approx(2 * 3 / 4 * 64))
  # Tuple all-reduce: both buffers; the 9216-element kernel gradient is the "big" part.
  assert ar2["full"] == 4 * (32 + 9216) and ar2["big"] == 4 * 9216 and ar2["n"] == 4
  assert (ag["full"], ag["n"], ag["wire"]) == (4 * 7 * 7 * 3 * 8, 2, pytest.approx(4704 / 2))
  # Reduce-scatter returns 1/n of the buffer: full = 4 * 1024 bf16 elements.
  assert (rs["full"], rs["n"], rs["wire"]) == (4 * 1024 * 2, 4, pytest.approx(3 / 4 * 8192))
  assert (cp["full"], cp["wire"]) == (80, 80)
  # As the GPU form of FSDP: the kernel gradient moves from the all-reduce to a reduce-scatter.
  cpu, gpu = sm.summarize(colls), sm.summarize(colls, as_reduce_scatter=True)
  assert gpu["all-reduce"]["full"] == cpu["all-reduce"]["full"] - 4 * 9216
  assert gpu["reduce-scatter"]["wire"] == pytest.approx(cpu["reduce-scatter"]["wire"]
                                                        + 3 / 4 * 4 * 9216)


def test_predict_roofline_and_exposed_comm():
  a = {"flops": 4e12, "bytes": 1e9, "wire_gpu": 9e9}
  p = sm.predict(a, 8, peak_tflops=100.0, util=0.5, hbm_gbs=1000.0, hbm_util=1.0, link_gbs=450.0)
  assert p["bound"] == "flop" and p["compute_ms"] == pytest.approx(80.0)
  assert p["comm_ms"] == pytest.approx(20.0)
  assert p["step_ms"] == pytest.approx(100.0) and p["overlap_ms"] == pytest.approx(80.0)
  assert sm.predict(a, 1, 100.0, 0.5, 1000.0, 1.0, 450.0)["comm_ms"] == 0.0  # one device
  p = sm.predict(a, 8, 100.0, 0.5, hbm_gbs=10.0, hbm_util=1.0, link_gbs=450.0)
  assert p["bound"] == "mem" and p["compute_ms"] == pytest.approx(100.0)


_WORKER = """
import json, sys
import jax
jax.config.update("jax_num_cpu_devices", 4)
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
sys.path.insert(0, sys.argv[1])
import scaling_model as sm
mesh = jax.make_mesh((4,), ("fsdp",), axis_types=(jax.sharding.AxisType.Auto,))
w = jax.ShapeDtypeStruct((256, 128), jnp.float32, sharding=NamedSharding(mesh, P(None, "fsdp")))
x = jax.ShapeDtypeStruct((8, 256), jnp.float32, sharding=NamedSharding(mesh, P("fsdp")))
# The weight is gathered (128 KiB in full); the loss is summed over the batch shards.
f = jax.jit(lambda w, x: jnp.sum(x @ jax.lax.with_sharding_constraint(w, NamedSharding(mesh, P()))),
            out_shardings=NamedSharding(mesh, P()))
colls = sm.parse_collectives(f.lower(w, x).compile().as_text(), 4)
print(json.dumps(colls))
"""


def test_compiled_all_gather_of_a_sharded_weight():
  env = dict(os.environ, PYTHONPATH=ROOT)
  proc = subprocess.run([sys.executable, "-c", _WORKER, os.path.join(ROOT, "benchmarks")],
                        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  colls = json.loads(proc.stdout.strip().splitlines()[-1])
  gathers = [c for c in colls if c["op"] == "all-gather"]
  assert sum(c["full"] for c in gathers) == 256 * 128 * 4, colls
  assert all(c["n"] == 4 for c in colls), colls
  assert sum(c["wire"] for c in gathers) == pytest.approx(3 / 4 * 256 * 128 * 4)
  assert any(c["op"] == "all-reduce" for c in colls), colls  # the batch-sharded sum


def test_target_topologies_for_chip_counts():
  """--target: N chips -> a topology name osmnet_jax.aot compiles (hosts of 8 GPUs; TPU grids)."""
  assert sm.topology("cuda:h100", 1) == "cuda:h100:1x1x1"
  assert sm.topology("cuda:h100", 8) == "cuda:h100:1x1x8"
  assert sm.topology("cuda:h200", 64) == "cuda:h200:1x8x8"
  assert sm.topology("tpu:v5e", 256) == "tpu:v5e:16x16"
  with pytest.raises(ValueError, match="TPU topologies"):
    sm.topology("tpu:v5e", 2)
  with pytest.raises(ValueError, match="multiple of 8"):
    sm.topology("cuda:h100", 12)
