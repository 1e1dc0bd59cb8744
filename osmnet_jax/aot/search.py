"""Per-stage driver: compile at one batch or search the largest per-chip batch that fits.

"Fits" means the target compiler accepted the program (TPU refuses one over HBM with
RESOURCE_EXHAUSTED) and its per-device bytes (report.memory) are within the chip's HBM (the CUDA
AOT path compiles anything; only the memory analysis tells). The search doubles, then bisects,
and guesses from the linear growth of bytes with batch; it stops within 1/16 of the answer.
"""
from __future__ import annotations

import math
from typing import Callable

import jax

from osmnet_jax.aot import compile as aot_compile
from osmnet_jax.aot import report
from osmnet_jax.nn import conv as conv_lib

_OOM_MARKERS = ("RESOURCE_EXHAUSTED", "exceeds available HBM", "Out of memory",
                "out of memory")
MAX_PROBES = 8


def _is_oom(err: Exception) -> bool:
  return any(m in str(err) for m in _OOM_MARKERS)


class Prober:
  """Compiles (stage, mode) at a batch per chip, memoised; keeps the last fitting executable."""

  def __init__(self, target, cfg, stage: str, mode: str, log: Callable[[str], None]):
    self.target, self.cfg, self.stage, self.mode, self.log = target, cfg, stage, mode, log
    self.results: dict[int, dict] = {}
    self.compiled: dict[int, tuple] = {}

  def __call__(self, b: int) -> dict:
    if b in self.results:
      return self.results[b]
    prog = aot_compile.build(self.stage, self.cfg, self.target.devices, b, self.mode)
    try:
      _, compiled = aot_compile.lower_and_compile(prog, self.target.platform)
    except Exception as err:  # pylint: disable=broad-except
      if not _is_oom(err):
        raise
      msg = str(err).strip().splitlines()[0]
      rec = {"stage": self.stage, "mode": self.mode, "batch_per_chip": b, "fits": False,
             "error": msg}
      self.log(f"{self.mode} batch {b}/chip: does not fit ({msg[:160]})")
    else:
      rec = report.analyse(self.target, prog, compiled, None)
      self.compiled[b] = (prog, compiled)
      self.log(f"{self.mode} batch {b}/chip: {rec['bytes_per_device'] / 2**30:.2f} GiB/device, "
               f"fits={rec['fits']}")
    self.results[b] = rec
    return rec

  def fits(self, b: int) -> bool:
    return bool(self(b)["fits"])

  def guess(self, hbm: int) -> int | None:
    """Largest batch that the line through the smallest and largest fitting probes keeps
    within HBM. The widest span, not the last two: near the limit the TPU compiler squeezes
    (vox256 renderer, v5e: 14.81 GiB at 44 per chip, 14.91 at 48), and a line through two
    squeezed probes guesses far too high (91, refused at 23 GiB)."""
    pts = sorted((b, r["bytes_per_device"]) for b, r in self.results.items() if r["fits"])
    if len(pts) < 2:
      return None
    (b1, m1), (b2, m2) = pts[0], pts[-1]
    slope = (m2 - m1) / (b2 - b1)
    if slope <= 0:
      return None
    return int(math.floor(b2 + (hbm - m2) / slope))


def next_probe(lo: int, hi: int, limit: int, guess: int | None) -> int:
  """The next batch to compile, strictly between lo (largest fitting so far, 0 = none) and hi
  (smallest refused, limit + 1 = none yet).

  The memory guess goes first: a guess above lo is probed as it is; a guess at or below lo
  says lo is (nearly) the answer, so the smallest step that would settle it (lo + lo/16) is
  probed. Without a usable guess: double until something is refused, then bisect."""
  step = max(1, lo // 16)
  if guess is not None and lo > 0:
    nb = guess if guess > lo else lo + step
    if lo < nb < hi:
      return nb
  if hi > limit:
    return max(lo + 1, min(limit, 2 * lo))
  return max(lo + 1, (lo + hi) // 2)


def max_batch(probe: Prober, hbm: int, limit: int, start: int = 1) -> int:
  """Largest b in [1, limit] with probe.fits(b) (within 1/16), or 0 if batch 1 does not fit.

  ``start`` is the first batch compiled: one known to fit (or near the answer) saves the small
  probes, each a full compile (minutes for a paper-size program)."""
  lo, hi = 0, limit + 1
  b = max(1, min(start, limit))
  for _ in range(MAX_PROBES):
    if probe.fits(b):
      lo = max(lo, b)
    else:
      hi = min(hi, b)
    if hi - lo <= max(1, lo // 16) or lo >= limit:
      break
    b = next_probe(lo, hi, limit, probe.guess(hbm))
  return lo


def _with_cpu_flops(target, probe: Prober, b: int, rec: dict) -> dict:
  """Re-analyse the fitting program with FLOPs counted on the host: one CPU device, the
  per-chip batch, traced as for the target (same math, no collectives).

  GPU: the target's cost analysis is empty, so these are its FLOPs. TPU: the compiled count
  includes the zeros of width-packed conv kernels (nn/conv.py), MXU work but not the model's;
  the model FLOPs (for MFU) come from the same program traced without packing."""
  if target.platform not in ("cuda", "tpu") or not rec.get("fits") or b not in probe.compiled:
    return rec
  cpu_dev = jax.devices("cpu")[:1]
  cprog = aot_compile.build(probe.stage, probe.cfg, cpu_dev, b, "dp")
  prog, compiled = probe.compiled[b]
  if target.platform == "cuda":
    cpu = report.cpu_cost(aot_compile.lower(cprog, target.platform))
    return report.analyse(target, prog, compiled, cpu)
  with conv_lib.no_packing():
    model = report.cpu_cost(aot_compile.lower(cprog, target.platform))["flops"]
  return report.analyse(target, prog, compiled, None, model_flops=model or None)


def _throughput(rec: dict) -> float:
  if not rec.get("fits") or not rec.get("predicted_step_s"):
    return 0.0
  return rec["batch_per_chip"] / rec["predicted_step_s"]


def stage_report(target, cfg, stage: str, modes: list[str], batch_per_chip: int,
                 limit: int, log: Callable[[str], None] = print, search_from: int = 1) -> dict:
  """{'fits', 'bytes_per_device', ..., 'max_batch_per_chip', 'mode' (best), 'modes': {...}}."""
  hbm = int(target.chip.hbm_bytes)
  per_mode = {}
  for mode in modes:
    probe = Prober(target, cfg, stage, mode, log)
    if batch_per_chip:
      b, max_b = batch_per_chip, None
      rec = probe(b)
    else:
      max_b = max_batch(probe, hbm, limit, search_from)
      b = max(max_b, 1)
      rec = probe(b)
    rec = dict(_with_cpu_flops(target, probe, b, rec))
    rec["max_batch_per_chip"] = max_b
    per_mode[mode] = rec
  best_mode = max(per_mode, key=lambda m: (_throughput(per_mode[m]), m == "dp"))
  best = per_mode[best_mode]
  keys = ("fits", "bytes_per_device", "hbm_bytes", "flops_per_step", "model_flops_per_step",
          "flops_source",
          "predicted_step_s", "predicted_mfu", "comm_share", "batch_per_chip", "collectives")
  out = {k: best.get(k) for k in keys}
  out["hbm_bytes"] = hbm
  out["fits"] = bool(best.get("fits"))
  out["bytes_per_device"] = best.get("bytes_per_device")
  out["max_batch_per_chip"] = best.get("max_batch_per_chip")
  out["collectives"] = best.get("collectives", {})
  out["mode"] = best_mode
  out["modes"] = per_mode
  return out
