"""osmnet_jax.aot: the tiny config compiled for real TPU and GPU targets without the hardware.

Needs the `aot` extra (libtpu, the CUDA plugin and ptxas); without it the module is skipped
with the install line as the reason. Each target program is compiled once per module
(fixtures): TPU/GPU compiles of the renderer take minutes on a 2-core CPU.
"""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")
pytest.importorskip("libtpu", reason='needs the aot extra: pip install -e ".[aot]"')
pytest.importorskip("jax_plugins.xla_cuda12", reason='needs the aot extra: pip install -e ".[aot]"')

import jax  # noqa: E402

from configs import tiny_test  # noqa: E402
from osmnet_jax.aot import __main__ as aot_main  # noqa: E402
from osmnet_jax.aot import compile as aot_compile  # noqa: E402
from osmnet_jax.aot import report, targets  # noqa: E402
from osmnet_jax.nn import conv as conv_lib  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "tiny_test.py")
BATCH = 2  # per chip


def _compile(topology: str, stage: str, mode: str, batch: int = BATCH):
  target = targets.parse(topology)
  prog = aot_compile.build(stage, tiny_test.get_config(), target.devices, batch, mode)
  _, compiled = aot_compile.lower_and_compile(prog, target.platform)
  return target, prog, compiled


def _cpu_cost(stage: str, platform: str, batch: int = BATCH) -> dict:
  """Cost analysis of the `platform` program lowered for one CPU device at the per-chip batch."""
  prog = aot_compile.build(stage, tiny_test.get_config(), jax.devices("cpu")[:1], batch, "dp")
  return report.cpu_cost(aot_compile.lower(prog, platform))


@pytest.fixture(scope="module")
def tpu_renderer():
  return _compile("tpu:v5e:2x2", "renderer", "dp")


@pytest.fixture(scope="module")
def gpu_renderer():
  return _compile("cuda:h100:1x1x2", "renderer", "dp")


def test_topology_names():
  t = targets.parse("tpu:v5e:2x2")
  assert t.num_devices == 4 and t.platform == "tpu" and t.chip.hbm_bytes == 16 * 2**30
  g = targets.parse("cuda:h200:1x2x4")
  assert g.num_devices == 8 and g.devices_per_host == 4
  assert "H200" in g.devices[0].device_kind
  # Same host: NVLink; across hosts: InfiniBand.
  ids = [d.id for d in g.devices]
  assert g.link_bytes_per_s(ids[:4]) == g.chip.fast_link_bytes_per_s
  assert g.link_bytes_per_s(ids) == g.chip.slow_link_bytes_per_s
  for bad in ("v5e-16", "tpu:v5e-16", "tpu:v9:2x2", "cuda:h100:8", "cuda:a100:1x1x8"):
    with pytest.raises(ValueError, match="topology"):
      targets.parse(bad)


def test_tiny_renderer_compiles_for_tpu(tpu_renderer):
  target, prog, compiled = tpu_renderer
  rec = report.analyse(target, prog, compiled, None)
  assert rec["fits"] and 0 < rec["bytes_per_device"] < target.chip.hbm_bytes
  assert rec["flops_source"].startswith("tpu compiled")
  cpu = _cpu_cost("renderer", "tpu")["flops"]
  # The two cost analyses count some ops differently (pooling among them), and pooling and
  # elementwise work are a large share of this tiny program: it sits ~20 % apart since the TPU
  # path pools with reduce-window (BENCHMARKS.md "The perceptual VGG in bf16, and TPU
  # pooling"). Bound 25 %: a wrong FLOP source is off by far more.
  assert abs(rec["flops_per_step"] / cpu - 1) < 0.25, (rec["flops_per_step"], cpu)
  assert 0 < rec["predicted_mfu"] <= 1 and rec["predicted_step_s"] > 0
  # The tiny renderer's narrow convs run width-packed on TPU (nn/conv.py): the compiled FLOPs
  # include the packed kernels' zeros; MFU counts the model's own, traced without packing.
  with conv_lib.no_packing():
    model = _cpu_cost("renderer", "tpu")["flops"]
  assert model < 0.95 * cpu, (model, cpu)
  rec_m = report.analyse(target, prog, compiled, None, model_flops=model)
  assert rec_m["model_flops_per_step"] == model
  assert rec_m["predicted_mfu"] == pytest.approx(rec["predicted_mfu"] * model / cpu, rel=0.2)
  # TPU: the step is the compiler's own cycle estimate (+ network), never below pure compute,
  # and most of it is in the generator / keypoint detector / VGG convolutions.
  assert rec["step_source"].startswith("tpu compiler")
  assert rec["predicted_step_s"] == rec["compiler_step_s"] + rec["comm_s"]
  assert rec["compiler_step_s"] >= rec["compute_s"] > 0
  assert 0 < rec["conv_share"] < 1 and rec["top_scopes"]
  assert any(m in t["scope"] for t in rec["top_scopes"]
             for m in ("OcclusionAwareGenerator", "KPDetector", "VGG"))
  # HBM bytes of the scheduled program, far below the cost analysis' on-chip-inclusive count.
  assert 0 < rec["hbm_bytes_accessed"] < rec["cost_analysis_bytes"]
  # DP: the gradients (and BatchNorm's batch statistics) are all-reduced over the 4 chips.
  assert rec["collectives"]["all-reduce"]["count"] >= 1
  assert rec["collectives"]["all-reduce"]["sent_bytes"] > 0


def test_tiny_renderer_compiles_for_gpu(gpu_renderer):
  target, prog, compiled = gpu_renderer
  assert "H100" in target.devices[0].device_kind
  cpu = _cpu_cost("renderer", "cuda")
  rec = report.analyse(target, prog, compiled, cpu)
  assert rec["fits"] and 0 < rec["bytes_per_device"] < target.chip.hbm_bytes
  assert "CPU" in rec["flops_source"] and rec["flops_per_step"] == cpu["flops"] > 0
  assert rec["compiler_step_s"] is None and rec["step_source"].startswith("roofline")
  # HBM bytes of the compiled GPU program (fusions, cuDNN calls), below the unfused CPU count.
  assert 0 < rec["hbm_bytes_accessed"] < rec["cost_analysis_bytes"] == cpu["bytes"]
  assert rec["collectives"]["all-reduce"]["count"] >= 1


def test_dp_all_reduces_fsdp_all_gathers(topology="tpu:v5e:2x2"):
  """Motion stage (small, quick to compile): DP replicates the state and all-reduces the
  gradients; FSDP gathers each split weight where it is used. TPU only: the layouts are the
  same jax programs on either target, and a GPU pair of compiles costs CI 2 more minutes."""
  target, prog, compiled = _compile(topology, "motion", "dp")
  dp = report.analyse(target, prog, compiled, None)["collectives"]
  target, prog, compiled = _compile(topology, "motion", "fsdp")
  fsdp = report.analyse(target, prog, compiled, None)["collectives"]
  assert dp.get("all-reduce", {}).get("count", 0) >= 1 and "all-gather" not in dp
  assert fsdp.get("all-gather", {}).get("count", 0) >= 1
  # FSDP params are split: the gathered weights are about the full (replicated) param bytes.
  assert fsdp["all-gather"]["result_bytes"] > dp["all-reduce"]["result_bytes"] / 4



def test_zero1_splits_the_optimizer_state(topology="tpu:v5e:2x2"):
  """ZeRO-1 (config.mesh.shard_optimizer; aot --modes zero1), motion stage: each chip holds a
  quarter of the Adam moments (less argument memory than DP), the gradient is reduce-scattered
  instead of all-reduced (runtime/zero1.py) and the new params come back whole through
  all-gathers of about the params' bytes."""
  target, prog, compiled = _compile(topology, "motion", "dp")
  dp = report.analyse(target, prog, compiled, None)
  target, prog, compiled = _compile(topology, "motion", "zero1")
  z1 = report.analyse(target, prog, compiled, None)
  grad_bytes = dp["collectives"]["all-reduce"]["result_bytes"]  # float32 gradient, whole
  gathered = z1["collectives"].get("all-gather", {}).get("result_bytes", 0)
  assert 0.75 * grad_bytes <= gathered <= 1.25 * grad_bytes, (z1["collectives"], grad_bytes)
  scattered = z1["collectives"].get("reduce-scatter", {}).get("count", 0)
  reduced = z1["collectives"].get("all-reduce", {}).get("result_bytes", 0)
  assert scattered >= 1 and reduced < 0.25 * grad_bytes, (z1["collectives"], grad_bytes)
  # Params + 2 moments replicated in DP; params + 2 quarter moments in ZeRO-1: at least 1/3 less.
  assert z1["memory"]["argument_bytes"] < 0.67 * dp["memory"]["argument_bytes"], (
      z1["memory"], dp["memory"])


@pytest.mark.parametrize("topology", ["tpu:v5e:2x2", "cuda:h100:1x1x2"])
def test_absurd_batch_does_not_fit(topology, tmp_path, capsys):
  rc = aot_main.main(["--config", TINY, "--topology", topology, "--stages", "motion",
                      "--modes", "dp", "--batch-per-chip", str(10**6), "--out", str(tmp_path)])
  assert rc == aot_main.EXIT_DOES_NOT_FIT
  assert "DOES NOT FIT: motion" in capsys.readouterr().err
  import json

  with open(tmp_path / "aot.json") as f:
    out = json.load(f)
  assert out["stages"]["motion"]["fits"] is False
  assert (tmp_path / "aot.md").exists()
