"""The aot report's readers of optimized HLO text: collectives (report.py) and the TPU
compiler's per-instruction cycle estimates and HBM bytes (breakdown.py). Pure text parsing: no
aot extra needed; tests/test_aot.py checks them on real compiled programs."""
from __future__ import annotations

import pytest

from osmnet_jax.aot import breakdown, report

_HLO = """HloModule jit_train_step, is_scheduled=true

%fused_computation.1 (param_0: f32[8,256,256,3], param_1: bf16[3,3,3,64]) -> bf16[8,256,256,64] {
  %param_0 = f32[8,256,256,3]{3,0,2,1:T(8,128)} parameter(0)
  %param_1 = bf16[3,3,3,64]{3,2,1,0:T(8,128)(2,1)S(1)} parameter(1)
  ROOT %convolution.3 = bf16[8,256,256,64]{3,0,2,1:T(8,128)(2,1)} convolution(%param_0, %param_1), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f
}

%fused_computation.2 (param_0.1: bf16[8,256,256,64]) -> bf16[8,256,256,64] {
  %param_0.1 = bf16[8,256,256,64]{3,0,2,1:T(8,128)(2,1)} parameter(0)
  ROOT %maximum.1 = bf16[8,256,256,64]{3,0,2,1:T(8,128)(2,1)} maximum(%param_0.1, %param_0.1)
}

ENTRY %main.9_spmd (param.1: f32[8,256,256,3], param.2: bf16[3,3,3,64]) -> bf16[8,256,256,64] {
  %param.1 = f32[8,256,256,3]{3,0,2,1:T(8,128)} parameter(0), metadata={op_name="x"}
  %param.2 = bf16[3,3,3,64]{3,2,1,0:T(8,128)(2,1)S(1)} parameter(1)
  %copy-start.1 = (bf16[3,3,3,64]{3,2,1,0:T(8,128)(2,1)S(1)}, u32[]{:S(2)}) copy-start(%param.2)
  %fusion.1 = bf16[8,256,256,64]{3,0,2,1:T(8,128)(2,1)} fusion(%param.1, %param.2), kind=kOutput, calls=%fused_computation.1, metadata={op_name="jit(train_step)/transpose(jvp(VGG))/conv1/conv_general_dilated" stack_frame_id=1}, backend_config={"window_config":{"estimated_cycles":"3000"}}
  ROOT %fusion.2 = bf16[8,256,256,64]{3,0,2,1:T(8,128)(2,1)} fusion(%fusion.1), kind=kLoop, calls=%fused_computation.2, metadata={op_name="jit(train_step)/jvp(OcclusionAwareGenerator)/first/relu"}, backend_config={"window_config":{"estimated_cycles":"1000"}}
}
"""


def test_tiled_bytes_pad_the_minor_dims_to_the_tile():
  # minor_to_major {3,0,2,1}: physical [H, W, B, C] = [256, 256, 8, 3]; tile (8, 128) pads
  # C 3 -> 128 lanes: 128/3 of the logical bytes.
  lo, tiled = breakdown.tensor_bytes("f32", "8,256,256,3", "3,0,2,1:T(8,128)")
  assert lo == 8 * 256 * 256 * 3 * 4 and tiled == 8 * 256 * 256 * 128 * 4
  # The same tensor with W minor ({2,1,3,0}: physical [B, C, H, W]) tiles H x W: no padding.
  lo, tiled = breakdown.tensor_bytes("f32", "8,256,256,3", "2,1,3,0:T(8,128)")
  assert tiled == lo
  # 64 channels in the lanes: half of each 128-lane row is padding.
  lo, tiled = breakdown.tensor_bytes("bf16", "8,256,256,64", "3,0,2,1:T(8,128)(2,1)")
  assert tiled == 2 * lo
  assert breakdown.tensor_bytes("bf16", "4,5", None) == (40, 40)


def test_entry_instructions_cycles_scopes_and_hbm_bytes():
  rows = breakdown.instructions(_HLO)
  assert [r["name"] for r in rows] == ["copy-start.1", "fusion.1", "fusion.2"]
  copy, conv, relu = rows
  # An async copy moves its destination's bytes once (the weights: 3x3x3x64 bf16; tiled, the
  # minor dims 3 x 64 round up to 8 x 128) and carries no estimate.
  assert copy["cycles"] == 0 and copy["logical_bytes"] == 3 * 3 * 3 * 64 * 2
  assert copy["tiled_bytes"] == 3 * 3 * 8 * 128 * 2
  assert conv["cycles"] == 3000 and conv["is_conv"] and not relu["is_conv"]
  assert conv["scope"] == "bwd VGG/conv1/conv_general_dilated"
  assert relu["scope"] == "fwd OcclusionAwareGenerator/first/relu"
  image_tiled = 8 * 256 * 256 * 128 * 4
  feat = 8 * 256 * 256 * 64 * 2      # logical; tiled it is 2x (64 of 128 lanes)
  # The conv reads the image and writes features; the VMEM (S(1)) weights are no HBM traffic.
  assert conv["tiled_bytes"] == image_tiled + 2 * feat
  assert conv["logical_bytes"] == 8 * 256 * 256 * 3 * 4 + feat
  assert relu["tiled_bytes"] == 4 * feat and relu["logical_bytes"] == 2 * feat
  s = breakdown.summary(rows, clock_hz=1e9)
  assert s["cycles"] == 4000 and s["step_s"] == pytest.approx(4e-6)
  assert s["conv_share"] == pytest.approx(0.75)
  assert [t["scope"] for t in s["top_scopes"]] == [conv["scope"], relu["scope"]]
  assert breakdown.summary(rows, None)["step_s"] is None   # no clock (GPU, v6e): no estimate
  with pytest.raises(ValueError, match="ENTRY"):
    breakdown.instructions("HloModule m\n")


def test_collective_parser():
  hlo = "\n".join([
      "  %all-reduce.1 = f32[1024,256]{1,0} all-reduce(f32[1024,256]{1,0} %p), "
      "replica_groups={{0,1,2,3}}, to_apply=%add",
      "  %ag = (bf16[8,128]{1,0}, bf16[32,128]{1,0}) all-gather-start(bf16[8,128]{1,0} %x), "
      "replica_groups=[1,4]<=[4], dimensions={0}",
      "  %agd = bf16[32,128]{1,0} all-gather-done(%ag)",
      "  ROOT %rs = f32[256]{0} reduce-scatter(f32[1024]{0} %g), replica_groups=[2,2]<=[2,2]T(1,0)",
  ])
  cs = report.collectives(hlo, 4)
  assert [c["op"] for c in cs] == ["all-reduce", "all-gather", "reduce-scatter"]
  ar, ag, rs = cs
  assert ar["result_bytes"] == 1024 * 256 * 4 and ar["sent_bytes"] == 2 * 3 / 4 * 1024 * 256 * 4
  assert ag["result_bytes"] == 32 * 128 * 2 and ag["group_size"] == 4
  assert rs["group_size"] == 2 and rs["group"] == [0, 2] and rs["sent_bytes"] == 256 * 4


def test_async_reduce_scatter_and_mesh_replica_groups():
  """XLA:GPU's combined async reduce-scatter is typed ((operands), (results)): only the 1/n
  results are the per-device result; counting the operands too inflated FSDP's reduce-scatter
  traffic by n + 1 (the 'FSDP collapses at 64 GPUs' of the first scaling_h100 table)."""
  rs_hlo = "\n".join([
      "  %rs = ((f32[1024]{0}, f32[2048]{0}), (f32[64]{0}, f32[128]{0})) reduce-scatter-start("
      "%a, %b), channel_id=6, replica_groups=mesh['axis_0'=16,'axis_1'=1] {'axis_0'}, "
      "dimensions={0}, to_apply=%add",
      "  %rsd = (f32[64]{0}, f32[128]{0}) reduce-scatter-done(%rs)",
  ])
  mesh_hlo = "\n".join([
      "  %ar = f32[8]{0} all-reduce(%c), replica_groups=mesh['axis_0'=2,'axis_1'=4] {'axis_0'}, "
      "to_apply=%add",
      "  %ag = (f32[2]{0}, f32[8]{0}) all-gather-start(%d), "
      "replica_groups=mesh['axis_0'=2,'axis_1'=4] {'axis_1'}, dimensions={0}",
  ])
  (rs,) = report.collectives(rs_hlo, 16)
  ar, ag = report.collectives(mesh_hlo, 8)
  assert rs["group_size"] == 16 and rs["result_bytes"] == (64 + 128) * 4
  assert rs["sent_bytes"] == 15 * (64 + 128) * 4
  assert rs["tensors"] == [(256, 64), (512, 128)]
  # mesh (2, 4): axis_0 groups are columns, axis_1 groups are rows.
  assert ar["group_size"] == 2 and ar["group"] == [0, 4]
  assert ag["group_size"] == 4 and ag["group"] == [0, 1, 2, 3] and ag["result_bytes"] == 32
  assert ag["tensors"] == [(32, 8)]


def test_async_collective_fusion_counts_once():
  """The TPU compiler splits a collective into an async-collective-start fusion, continuation
  fusions (async_collective_fusion.*) and an async-collective-done fusion, each holding the same
  all-gather: counting all three tripled ZeRO-1's param all-gather (439 MiB against the params'
  171 MiB on the vox256 step)."""
  gather = ("  %ag{i} = f32[3,3,256,256]{{3,2,1,0}} all-gather(%p{i}), replica_groups={{{{0,1,2,3}}}}, "
            "dimensions={{3}}")
  hlo = "\n".join([
      "%fused_computation.1 (p0: f32[3,3,256,64]) -> (f32[3,3,256,64], f32[3,3,256,256]) {",
      gather.format(i=0), "}",
      "%async_collective_fusion.2 (p1: f32[3,3,256,64]) -> f32[3,3,256,256] {",
      gather.format(i=1), "}",
      "%fused_computation.3 (p2: f32[3,3,256,64]) -> f32[3,3,256,256] {",
      gather.format(i=2), "}",
      "ENTRY %main (x: f32[3,3,256,64]) -> f32[3,3,256,256] {",
      "  %async-collective-start.1 = (f32[3,3,256,64]) fusion(%x), calls=%fused_computation.1",
      "  %fusion.2 = f32[3,3,256,256] fusion(%async-collective-start.1), "
      "calls=%async_collective_fusion.2",
      "  %async-collective-done.1 = f32[3,3,256,256] fusion(%fusion.2), "
      "calls=%fused_computation.3",
      "  ROOT %ar = f32[16]{0} all-reduce(%y), replica_groups={{0,1,2,3}}, to_apply=%add",
      "}",
  ])
  cs = report.collectives(hlo, 4)
  assert [c["op"] for c in cs] == ["all-gather", "all-reduce"], cs
  assert cs[0]["result_bytes"] == 3 * 3 * 256 * 256 * 4
