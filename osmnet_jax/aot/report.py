"""Price a compiled-for-target program: memory, FLOPs, collectives, roofline, MFU, max batch.

    res = report.analyse(target, prog, lowered, compiled, cpu_flops)   # one (stage, mode, batch)
    report.write(out_dir, summary)                                     # aot.md + aot.json

Where the numbers come from:
  memory      compiled.memory_analysis() of the target program (per device): arguments + outputs
              - aliased (donated) + temporaries + generated code, against the chip's HBM.
  FLOPs       TPU: compiled.cost_analysis() of the target program (per device). GPU (the CUDA
              AOT path returns no cost analysis): XLA's HLO cost analysis of the same program
              lowered for one CPU device at the per-chip batch (`cpu_cost`), i.e. the same math
              without the collectives. `flops_source` in the result names which.
  HBM bytes   operands + results of every instruction of the compiled target program (its
              fusions, convolutions and copies; aot/breakdown.py): on TPU in the tiled layouts
              the compiler chose, tensors it placed in VMEM excluded. The TPU cost analysis'
              "bytes accessed" (kept as cost_analysis_bytes) counts on-chip re-reads as well
              and is many times larger; the CPU-lowered program's bytes (GPU) are unfused.
  collectives parsed from compiled.as_text(): each all-reduce / all-gather / reduce-scatter /
              all-to-all / collective-permute with its result bytes, replica-group size and the
              bytes one device sends (ring algorithms: all-reduce 2(n-1)/n S, all-gather and
              reduce-scatter (n-1)/n S_full, permute S). Collectives inside loops count once.
  roofline    compute = FLOPs / peak, memory = bytes / HBM bandwidth, network = sent bytes /
              link bandwidth (targets.Target.link_bytes_per_s); roofline step =
              max(compute, memory) + network (communication assumed not overlapped).
  compiler    TPU only: the TPU compiler's own cycle estimate of every instruction it
              scheduled, summed over the chip's clock (aot/breakdown.py), + network. Unlike
              the roofline it knows how well each convolution fills the MXU and what each
              small op costs, so for TPU it is the predicted step.
  predicted   compiler estimate where there is one, else the roofline (`step_source` says
              which); MFU = compute time / predicted step (spec-sheet peaks).
"""
from __future__ import annotations

import json
import math
import os
import re

import numpy as np

from osmnet_jax.aot import breakdown

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_COMP_HEAD = re.compile(r"^(?:ENTRY\s+)?%([\w.\-]+)\s")  # a computation's first line
_CALLS = re.compile(r"calls=%([\w.\-]+)")
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(?P<type>.*?)\s*(?P<op>"
                    + "|".join(COLLECTIVES) + r")(?P<start>-start)?\(")
_GROUPS_LIST = re.compile(r"replica_groups=\{(\{[\d,]*\}(?:,\{[\d,]*\})*)\}")
_GROUPS_IOTA = re.compile(r"replica_groups=\[(\d+),(\d+)\]<=\[([\d,]+)\](T\(([\d,]+)\))?")
_PAIRS = re.compile(r"source_target_pairs=\{([\d,{}]*)\}")
# Newer XLA prints groups over the mesh: replica_groups=mesh['axis_0'=2,'axis_1'=4] {'axis_1'}
_GROUPS_MESH = re.compile(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}")


def _tensors(type_text: str, skip_scalars: bool = False) -> list[tuple[int, int]]:
  """(logical bytes, elements) of each tensor of a known element type in an HLO type text."""
  out = []
  for t in breakdown.TENSOR.finditer(type_text):
    if t["dtype"] in breakdown.DTYPE_BYTES and not (skip_scalars and not t["dims"]):
      size = breakdown.tensor_bytes(t["dtype"], t["dims"], None)[0]
      out.append((size, size // breakdown.DTYPE_BYTES[t["dtype"]]))
  return out


def _groups(line: str, num_devices: int) -> list[list[int]]:
  m = _GROUPS_MESH.search(line)
  if m:  # device ids are the mesh positions in order; a group varies the listed axes
    names = re.findall(r"'([^']+)'=", m.group(1))
    ids = np.arange(num_devices).reshape([int(v) for v in re.findall(r"=(\d+)", m.group(1))])
    listed = [names.index(a) for a in re.findall(r"'([^']+)'", m.group(2))]
    rest = [i for i in range(ids.ndim) if i not in listed]
    size = math.prod(ids.shape[i] for i in listed)
    return ids.transpose(rest + listed).reshape(-1, size).tolist()
  m = _GROUPS_LIST.search(line)
  if m:
    return [[int(x) for x in g.split(",") if x] for g in re.findall(r"\{([\d,]*)\}", m.group(1))]
  m = _GROUPS_IOTA.search(line)
  if m:
    n_groups, size = int(m.group(1)), int(m.group(2))
    dims = [int(x) for x in m.group(3).split(",")]
    ids = np.arange(math.prod(dims)).reshape(dims)
    if m.group(5):
      ids = ids.transpose([int(x) for x in m.group(5).split(",")])
    return ids.reshape(n_groups, size).tolist()
  m = _PAIRS.search(line)
  if m:
    pairs = re.findall(r"\{(\d+),(\d+)\}", m.group(1))
    return [[int(a), int(b)] for a, b in pairs]
  return [list(range(num_devices))]  # replica_groups={} : all devices


def collectives(hlo_text: str, num_devices: int) -> list[dict]:
  """Every collective instruction of an optimized HLO module (async pairs counted once).

  Async '-start' ops are typed (operands, results); XLA combines several buffers into one
  collective, so each side is a tuple. The result side is what the sizes below count: an
  all-gather's operands are 1/n of its results, a reduce-scatter's are n times its results.
  Record: op, result_bytes (per device), group_size, sent_bytes (ring algorithms), group (the
  first replica group), tensors ([(bytes, elements)] of the result buffers).

  The TPU compiler splits some collectives into an async-collective-start fusion, continuation
  fusions (`async_collective_fusion.*`) and an async-collective-done fusion, each holding the
  same collective instruction: it is counted once, in the start's computation."""
  lines = hlo_text.splitlines()
  later = {m.group(1) for line in lines if "async-collective-done" in line
           for m in [_CALLS.search(line)] if m}
  out, comp = [], ""
  for line in lines:
    head = _COMP_HEAD.match(line)
    if head:
      comp = head.group(1)
      continue
    m = _INSTR.match(line)
    if not m or comp in later or comp.startswith("async_collective_fusion"):
      continue
    op, start = m.group("op"), bool(m.group("start"))
    groups = _groups(line, num_devices)
    n = max(len(g) for g in groups) if groups else num_devices
    if op == "collective-permute":
      n = 2
    # -start tuples carry u32[] sync scalars; a collective of scalars only keeps them.
    big = _tensors(m.group("type"), skip_scalars=True) or _tensors(m.group("type"))
    if start and op in ("all-gather", "reduce-scatter", "collective-permute"):
      big = big[len(big) // 2:]  # typed ((operands), (results)): keep the result half
    result = sum(b for b, _ in big)
    if n <= 1:
      sent = 0.0
    elif op == "all-reduce":
      sent = 2 * (n - 1) / n * result
    elif op == "all-gather":
      sent = (n - 1) / n * result
    elif op == "reduce-scatter":
      sent = (n - 1) * result          # result is the 1/n shard
    elif op == "all-to-all":
      sent = (n - 1) / n * result
    else:
      sent = result
    out.append({"op": op, "result_bytes": int(result), "group_size": int(n),
                "sent_bytes": float(sent), "group": groups[0] if groups else [],
                "tensors": big})
  return out


def collective_summary(colls: list[dict]) -> dict:
  """{op: {'count', 'result_bytes', 'sent_bytes'}} for the json."""
  out = {}
  for c in colls:
    s = out.setdefault(c["op"], {"count": 0, "result_bytes": 0, "sent_bytes": 0.0})
    s["count"] += 1
    s["result_bytes"] += c["result_bytes"]
    s["sent_bytes"] += c["sent_bytes"]
  return out


def _cost(analysis) -> dict:
  """cost_analysis() returns a dict (jax >= 0.4.30) or a one-element list of dicts; or None."""
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  return dict(analysis) if analysis else {}


def memory(compiled) -> dict:
  m = compiled.memory_analysis()
  args, outs = int(m.argument_size_in_bytes), int(m.output_size_in_bytes)
  alias, temp = int(m.alias_size_in_bytes), int(m.temp_size_in_bytes)
  code = int(getattr(m, "generated_code_size_in_bytes", 0))
  return {"argument_bytes": args, "output_bytes": outs, "alias_bytes": alias,
          "temp_bytes": temp, "code_bytes": code,
          "bytes_per_device": args + outs - alias + temp + code}


def cpu_cost(cpu_lowered) -> dict:
  """XLA's HLO cost analysis of a program lowered (not compiled: seconds instead of minutes) for
  one CPU device: {'flops', 'bytes'}. The FLOPs match the compiled programs' to a few percent
  (tests/test_aot.py checks 20 %); the bytes count every unfused op's operands and results,
  an upper bound on HBM traffic."""
  c = _cost(cpu_lowered.cost_analysis())
  return {"flops": float(c.get("flops", 0.0)), "bytes": float(c.get("bytes accessed", 0.0))}


def analyse(target, prog, compiled, cpu: dict | None, model_flops: float | None = None) -> dict:
  """One compiled program -> the per-stage json record (see module docstring).

  `model_flops`: the model's own FLOPs when the compiled program does extra MXU work (TPU
  width-packed convs); MFU uses them. Default: the program's FLOPs."""
  mem = memory(compiled)
  hbm = int(target.chip.hbm_bytes)
  cost = _cost(compiled.cost_analysis())
  if cost.get("flops"):
    flops, hbm_bytes = float(cost["flops"]), float(cost.get("bytes accessed", 0.0))
    source = f"{target.platform} compiled cost_analysis (per device)"
  elif cpu:
    flops, hbm_bytes = cpu["flops"], cpu["bytes"]
    source = ("XLA HLO cost analysis of the same program lowered for 1 CPU device at the "
              "per-chip batch (the CUDA AOT path has none)")
  else:
    flops, hbm_bytes, source = None, None, "none"
  text = compiled.as_text()
  colls = collectives(text, target.num_devices)
  comm_s = sum(c["sent_bytes"] / target.link_bytes_per_s(c["group"]) for c in colls)
  peak = target.chip.peak_flops(prog.compute_dtype)
  compute_s = flops / peak if flops else 0.0
  rows = breakdown.instructions(text)
  where = breakdown.summary(rows, target.chip.clock_hz)
  cost_bytes = hbm_bytes
  if rows:  # HBM traffic of the compiled target program (see the module docstring)
    hbm_bytes = float(sum(r["tiled_bytes"] for r in rows))
  memory_s = hbm_bytes / target.chip.hbm_bytes_per_s if hbm_bytes else 0.0
  roofline_s = max(compute_s, memory_s) + comm_s
  if where["step_s"]:
    step_s, step_source = where["step_s"] + comm_s, "tpu compiler cycle estimates + network"
  else:
    step_s, step_source = roofline_s, "roofline max(compute, memory) + network"
  return {
      "stage": prog.stage, "mode": prog.mode, "batch_per_chip": prog.examples_per_chip,
      "fits": mem["bytes_per_device"] <= hbm, "bytes_per_device": mem["bytes_per_device"],
      "hbm_bytes": hbm, "memory": mem,
      "flops_per_step": flops, "flops_source": source, "hbm_bytes_accessed": hbm_bytes,
      "cost_analysis_bytes": cost_bytes,
      "compute_dtype": prog.compute_dtype, "peak_flops": peak,
      "compute_s": compute_s, "memory_s": memory_s, "comm_s": comm_s,
      "roofline_step_s": roofline_s, "compiler_step_s": where["step_s"],
      "compiler_cycles": where["cycles"], "conv_share": where["conv_share"],
      "top_scopes": where["top_scopes"],
      "predicted_step_s": step_s, "step_source": step_source,
      "model_flops_per_step": model_flops or flops,
      "predicted_mfu": ((model_flops or flops) / peak / step_s) if flops and step_s else None,
      "comm_share": comm_s / step_s if step_s else 0.0,
      "collectives": collective_summary(colls),
  }


# ------------------------------------------------------------------------------------------------
def _gb(x) -> str:
  return f"{x / 2**30:.2f} GiB"


def _ms(x) -> str:
  return f"{x * 1e3:.2f} ms"


def markdown(summary: dict) -> str:
  """aot.md: one table per stage (DP and FSDP rows) + where every number comes from."""
  lines = [f"# AOT report: {summary['config']} on {summary['topology']}", "",
           f"{summary['num_devices']} x {summary['chip']} (HBM {_gb(summary['hbm_bytes'])}), "
           f"jax {summary['jax_version']}. Command: `{summary['command']}`", ""]
  for name, st in summary["stages"].items():
    lines += [f"## {name}", "",
              f"best: **{st.get('mode', '-')}**, fits: {st['fits']}, max batch/chip: "
              f"{st['max_batch_per_chip']}", "",
              "| mode | batch/chip | fits | memory/device (args+out-alias+temp) "
              "| GFLOP/step/chip | compute | HBM | network | roofline step | compiler est. "
              "| predicted step | MFU | comm share | collectives (count, MiB sent) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for mode, r in st["modes"].items():
      if "error" in r:
        lines.append(f"| {mode} | {r.get('batch_per_chip', '-')} | False | {r['error'][:120]} "
                     "| | | | | | | | | | |")
        continue
      colls = ", ".join(f"{k} {v['count']}x {v['sent_bytes'] / 2**20:.1f}"
                        for k, v in r["collectives"].items()) or "none"
      fl = f"{r['flops_per_step'] / 1e9:.1f}" if r["flops_per_step"] else "n/a"
      model = r.get("model_flops_per_step")
      if model and r["flops_per_step"] and abs(model / r["flops_per_step"] - 1) > 1e-3:
        fl += f" ({model / 1e9:.1f} model)"
      mfu = f"{100 * r['predicted_mfu']:.0f} %" if r["predicted_mfu"] is not None else "n/a"
      est = _ms(r["compiler_step_s"]) if r.get("compiler_step_s") else "n/a"
      lines.append(
          f"| {mode} | {r['batch_per_chip']} | {r['fits']} | {_gb(r['bytes_per_device'])} "
          f"| {fl} | {_ms(r['compute_s'])} | {_ms(r['memory_s'])} | {_ms(r['comm_s'])} "
          f"| {_ms(r['roofline_step_s'])} | {est} | {_ms(r['predicted_step_s'])} | {mfu} "
          f"| {100 * r['comm_share']:.0f} % | {colls} |")
    ok = [r for r in st["modes"].values() if "flops_source" in r]
    lines += ["", f"FLOPs: {ok[0]['flops_source'] if ok else ''}.",
              f"Predicted step: {ok[0]['step_source'] if ok else ''}.", ""]
    if ok and ok[0].get("top_scopes"):
      r = ok[0]
      lines += [f"Where the {r['mode']} step's time goes (compiler estimates; convolution "
                f"fusions {100 * r['conv_share']:.0f} % of it):", ""]
      lines += [f"- {100 * t['share']:.1f} % {t['scope']} ({t['count']} instructions)"
                for t in r["top_scopes"]]
      lines.append("")
  lines += ["Roofline: step = max(FLOPs/peak, bytes/HBM bandwidth) + bytes sent/link bandwidth "
            "(no compute/communication overlap assumed). Compiler estimate (TPU): the sum of "
            "the TPU compiler's per-instruction cycle estimates over the clock. Predicted step "
            "= compiler estimate + network where there is one, else the roofline; MFU = model "
            "FLOPs / spec-sheet peak / predicted step. On TPU the compiled FLOPs include the "
            "zeros of width-packed conv kernels (nn/conv.py); the model FLOPs, shown in "
            "brackets where they differ, come from the same program traced without packing "
            "(osmnet_jax/aot/report.py, breakdown.py, targets.py).", ""]
  return "\n".join(lines)


def write(out_dir: str, summary: dict) -> tuple[str, str]:
  os.makedirs(out_dir, exist_ok=True)
  md, js = os.path.join(out_dir, "aot.md"), os.path.join(out_dir, "aot.json")
  with open(md, "w") as f:
    f.write(markdown(summary))
  with open(js, "w") as f:
    json.dump(summary, f, indent=2, default=float)
  return md, js
