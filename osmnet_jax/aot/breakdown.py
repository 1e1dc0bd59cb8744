"""Where a compiled TPU program's time goes, read off its optimized HLO text.

    rows = breakdown.instructions(compiled.as_text())   # the entry computation's instructions
    breakdown.summary(rows, clock_hz)                   # total, by class, by model scope

The TPU compiler annotates every instruction it schedules with its own cost model's estimate,
`"estimated_cycles"` in the instruction's backend_config (the model it uses to choose tilings
and fusions; it knows how well a convolution fills the 128x128 MXU, which a FLOP count does
not). The entry computation runs its instructions in order, so their sum over the clock is the
compiler's estimate of the step's device time; asynchronous copies (HBM<->VMEM prefetches)
carry no estimate and are assumed overlapped. Collectives are priced separately by
report.collectives. The GPU AOT path writes no such estimates.

Each row also carries the instruction's HBM traffic as written in the HLO (operands + result,
logical bytes and bytes in the chip's tiled layout: a minor dim of 3 stored in 128 lanes costs
43x) and its scope: the Flax module path from the `op_name` metadata, with "bwd" for the
transposed (gradient) program.
"""
from __future__ import annotations

import collections
import math
import re

# Bytes per element of the HLO element types (sub-byte types rounded up to a byte).
DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
               "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16,
               "f8e4m3fn": 1, "f8e5m2": 1, "s4": 1, "u4": 1}
_HEAD = re.compile(r"^\s*(?:ROOT\s+)?%(?P<name>[\w.\-]+)\s*=\s*")
TENSOR = re.compile(r"\b(?P<dtype>[a-z]+\d*(?:e\d+m\d+(?:fn)?)?)\[(?P<dims>[\d,]*)\]"
                     r"(?:\{(?P<layout>[^}]*)\})?")
_TILE = re.compile(r"T\(([\d,]+)\)")
_CYCLES = re.compile(r'"estimated_cycles":"(\d+)"')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_CALLS = re.compile(r"calls=%([\w.\-]+)")
_COMP_HEAD = re.compile(r"^%(?P<name>[\w.\-]+)\s")
_MODULE = re.compile(r"\b([A-Z]\w*)\b")
# Views, tuples, control and the halves of asynchronous pairs: no HBM traffic of their own (an
# async op's traffic is counted once, at its -start).
_NO_TRAFFIC = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all",
               "partition-id", "replica-id", "opt-barrier", "add-dependency", "copy-done",
               "slice-done", "all-reduce-done", "all-gather-done", "collective-permute-done",
               "async-done", "send-done", "recv-done"}


def tensor_bytes(dtype: str, dims: str, layout: str | None) -> tuple[int, int]:
  """(logical, tiled) bytes of one HLO tensor `dtype[dims]{minor_to_major:T(tile)...}`."""
  size = DTYPE_BYTES.get(dtype)
  if size is None:
    return 0, 0
  shape = [int(d) for d in dims.split(",") if d]
  logical = math.prod(shape) * size
  parts = (layout or "").split(":")
  minor_to_major = [int(x) for x in parts[0].split(",") if x.strip().isdigit()]
  tiles = _TILE.findall(parts[1]) if len(parts) > 1 else []
  if not shape or len(minor_to_major) != len(shape) or not tiles:
    return logical, logical
  physical = [shape[d] for d in reversed(minor_to_major)]  # major -> minor
  for i, t in enumerate(reversed([int(t) for t in tiles[0].split(",")])):
    if i < len(physical):                                  # round the minor dims up to the tile
      physical[-1 - i] = -(-physical[-1 - i] // t) * t
  return logical, math.prod(physical) * size


def _bytes(text: str) -> tuple[int, int]:
  """HBM bytes of the tensors in `text`; a layout's S(n), n > 0, places the tensor in on-chip
  memory (VMEM), which is not HBM traffic."""
  lo = tiled = 0
  for t in TENSOR.finditer(text):
    if re.search(r"S\([1-9]\d*\)", t.group("layout") or ""):
      continue
    a, b = tensor_bytes(t.group("dtype"), t.group("dims"), t.group("layout"))
    lo, tiled = lo + a, tiled + b
  return lo, tiled


def scope(op_name: str, depth: int = 3) -> str:
  """'jit(train_step)/transpose(jvp(VGG))/conv1/conv_general_dilated' -> 'bwd VGG/conv1/conv_..'
  (depth 3): Flax module names kept, transformation wrappers dropped."""
  parts = op_name.split("/")[1:]
  bwd = any(p.startswith("transpose(") for p in parts)
  out = []
  for p in parts:
    if "(" in p:
      m = _MODULE.search(p)   # jvp(VGG) -> VGG; jvp() / jit(f) carry no module
      if m:
        out.append(m.group(1))
    elif p:
      out.append(p)
  return ("bwd " if bwd else "fwd ") + ("/".join(out[:depth]) or "(unnamed)")


def _conv_computations(lines: list[str]) -> set[str]:
  """Names of the computations (fusion bodies) that contain a convolution."""
  out, comp = set(), None
  for line in lines:
    head = _COMP_HEAD.match(line)
    if head and line.rstrip().endswith("{"):
      comp = head.group("name")
    elif comp and " convolution(" in line:
      out.add(comp)
  return out


def _call(body: str) -> tuple[str, str]:
  """'<result type> op(<operands>), attrs' -> (result type, operand list); the type never
  holds ' name(' (layout tiles are 'T(' after ':'), so the first call is the op."""
  m = re.search(r"\s[a-z][\w\-]*\(", body)
  if not m:
    return body, ""
  depth, i = 1, m.end()
  while i < len(body) and depth:
    depth += {"(": 1, ")": -1}.get(body[i], 0)
    i += 1
  return body[:m.start()], body[m.end():i - 1]


def instructions(hlo_text: str) -> list[dict]:
  """The entry computation's instructions that touch memory:
  [{'name', 'op', 'cycles', 'is_conv', 'logical_bytes', 'tiled_bytes', 'scope', 'op_name'}];
  bytes = result + operands (operands printed by name are looked up where defined); cycles 0
  where the compiler wrote no estimate (GPU programs; TPU async copies and collectives)."""
  lines = hlo_text.splitlines()
  start = next((i for i, line in enumerate(lines) if line.startswith("ENTRY")), None)
  if start is None:
    raise ValueError("no ENTRY computation in the HLO text")
  conv_comps = _conv_computations(lines[:start])
  sizes, rows = {}, []
  for line in lines[start + 1:]:
    head = _HEAD.match(line)
    if not head:
      continue
    body = line[head.end():]
    out_type, operands = _call(body)
    out = sizes[head.group("name")] = _bytes(out_type)
    op = body[len(out_type):].split("(", 1)[0].strip()
    if op in _NO_TRAFFIC:
      continue
    cyc = _CYCLES.search(line)
    if op in ("copy-start", "slice-start"):
      # Asynchronous HBM <-> VMEM move: the result tuple holds the source, the destination and
      # a sync scalar; the bytes moved are the destination's, the smaller tensor (a slice).
      moved = [tensor_bytes(t.group("dtype"), t.group("dims"), t.group("layout"))
               for t in TENSOR.finditer(out_type) if t.group("dims")]
      lo, tiled = min(moved) if moved else (0, 0)
    else:
      lo, tiled = out
      for ref in re.findall(r"%([\w.\-]+)", operands):
        a, b = sizes.get(ref, (0, 0))
        lo, tiled = lo + a, tiled + b
    calls = _CALLS.search(line)
    name = _OP_NAME.search(line)
    op_name = name.group(1) if name else ""
    rows.append({"name": head.group("name"), "op": op, "cycles": int(cyc.group(1)) if cyc else 0,
                 "is_conv": " convolution(" in body or bool(calls and calls.group(1) in conv_comps),
                 "logical_bytes": lo, "tiled_bytes": tiled, "op_name": op_name,
                 "scope": scope(op_name)})
  return rows


def summary(rows: list[dict], clock_hz: float | None, top: int = 12) -> dict:
  """{'cycles', 'step_s', 'conv_share', 'top_scopes': [{'scope', 'cycles', 'share', 'count'}]}."""
  total = sum(r["cycles"] for r in rows)
  conv = sum(r["cycles"] for r in rows if r["is_conv"])
  acc = collections.defaultdict(lambda: [0, 0])
  for r in rows:
    if not r["cycles"]:
      continue
    acc[r["scope"]][0] += r["cycles"]
    acc[r["scope"]][1] += 1
  scopes = sorted(acc.items(), key=lambda kv: -kv[1][0])[:top]
  return {"cycles": total, "step_s": total / clock_hz if clock_hz and total else None,
          "conv_share": conv / total if total else 0.0,
          "top_scopes": [{"scope": k, "cycles": c, "share": c / total, "count": n}
                         for k, (c, n) in scopes]}
