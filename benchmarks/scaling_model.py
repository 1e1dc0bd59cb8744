r"""Scaling model of the renderer train step: compiled cost + parsed collectives -> step time.

  python benchmarks/scaling_model.py                               # tiny@64 + vox256@256, 1-8 dev
  python benchmarks/scaling_model.py --models tiny64 --devices 1,2,4 --measure-devices 1,2,4
  python benchmarks/scaling_model.py --target cuda:h100 --target-devices 8,16,64 --models vox256

Two sources of programs, and the report says which table comes from which:

* ``--target cuda:h100 | cuda:h200 | tpu:v5e | ...`` (the accelerator predictions): for every N in
  --target-devices the step is compiled for a real N-chip topology of that target without the
  hardware (osmnet_jax.aot: one host of up to 8 GPUs, then hosts of 8; TPU grids of 4 and more
  chips) and priced by osmnet_jax.aot.report: the TPU compiler's own cycle estimates on TPU,
  the roofline with the compiled program's HBM bytes on GPU, collectives from the compiled
  HLO. Needs the `aot` extra. Weak-scaling efficiency = step(smallest N) / step(N).
* simulated CPU devices (below; always run): kept for what only the CPU can do, the measured
  multi-device check, and for a quick look without the `aot` extra. Its accelerator columns are
  XLA:CPU programs priced with spec-sheet numbers.

For every model (``tiny64``: renderer.tiny_config at 64 px; ``vox256`` / ``vox128``: FOMM's
vox-256 config at 256 / 128 px), every N in --devices simulated CPU devices and FSDP off
(mesh data=N) / on (mesh data=1 x fsdp=N, params + Adam moments split by sharding.fsdp_spec),
the jitted train step (RendererStage.make_jit_step, the one train.py runs) is lowered for a
per-device batch held fixed (weak scaling) and compiled for the simulated mesh. From the compiled
per-device program it reads

  * FLOPs and bytes accessed (``compiled.cost_analysis()``),
  * per-device state and temporary memory (``compiled.memory_analysis()``),
  * every collective in the HLO text (all-reduce / all-gather / reduce-scatter / all-to-all /
    collective-permute) with the size S of its full buffer and its group size n, turned into
    bytes each device sends with ring algorithms: all-reduce 2(n-1)/n * S, all-gather,
    reduce-scatter and all-to-all (n-1)/n * S, collective-permute S,

and predicts the accelerator step time  t = compute + exposed communication  with
compute = max(FLOPs / (peak * util), bytes / (HBM bandwidth * util)) and communication =
wire bytes / link bandwidth (NVLink within a node of --gpus-per-node, --inter-gbs per GPU
beyond), assumed not overlapped with compute (an upper bound; the overlapped lower bound
max(compute, comm) is printed too). Weak-scaling efficiency = t(1) / t(N). Larger N (--extrapolate)
reuse the collective sizes of the largest compiled N, growing linearly in N as fitted from the
two largest compiled N, with the inter-node bandwidth.

The check (--measure-devices, tiny64 only): the same compiled steps run on 1, 2, 4 simulated CPU
devices; the model is re-evaluated with CPU constants measured in this process (f32 matmul
FLOP/s, streaming bandwidth, collective bandwidth between simulated devices) and compared with
the measured step times. Writes a Markdown report (--out) with date, machine, command and every
assumption.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from osmnet_jax.aot import report as aot_report  # pylint: disable=g-import-not-at-top,wrong-import-position  # noqa: E402
from osmnet_jax.runtime.sharding import FSDP_MIN_SIZE  # pylint: disable=g-import-not-at-top,wrong-import-position  # noqa: E402

COLLECTIVES = aot_report.COLLECTIVES


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--models", default="tiny64,vox256", help="tiny64, vox128, vox256 (comma list)")
  p.add_argument("--devices", default="1,2,4,8", help="simulated device counts to compile for")
  p.add_argument("--per-device-batch", type=int, default=2)
  p.add_argument("--extrapolate", default="16,64", help="N beyond the compiled ones ('' = none)")
  p.add_argument("--measure-devices", default="1,2,4", help="CPU runs of tiny64 ('' = skip)")
  p.add_argument("--measure-steps", type=int, default=3)
  # Accelerator assumptions (H100 SXM, NVLink 4, one 400 Gb/s NIC per GPU).
  p.add_argument("--peak-bf16-tflops", type=float, default=989.0, help="dense bf16 tensor core")
  p.add_argument("--peak-fp32-tflops", type=float, default=67.0, help="fp32 without TF32")
  p.add_argument("--util", type=float, default=0.4, help="fraction of peak FLOP/s reached")
  p.add_argument("--hbm-gbs", type=float, default=3350.0)
  p.add_argument("--hbm-util", type=float, default=0.7)
  p.add_argument("--intra-gbs", type=float, default=450.0, help="NVLink per GPU per direction")
  p.add_argument("--inter-gbs", type=float, default=50.0, help="inter-node per GPU (400 Gb/s)")
  p.add_argument("--gpus-per-node", type=int, default=8)
  p.add_argument("--fast-compile", type=int, default=1,
                 help="1: cheap XLA:CPU codegen (HLO, costs and collectives are unchanged)")
  p.add_argument("--target", default="", help="compile for this accelerator, e.g. cuda:h100 or "
                 "tpu:v5e (needs the aot extra; '' = simulated CPU devices only)")
  p.add_argument("--target-devices", default="8,16,64", help="chip counts for --target")
  p.add_argument("--target-batch", type=int, default=8, help="examples per chip for --target")
  p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "scaling.md"))
  return p.parse_args(argv)


# ------------------------------------------------------------------------------------------------
def ring_factor(op: str, n: int) -> float:
  """Bytes one device sends per byte of the full buffer S with a ring over n participants:
  all-reduce 2(n-1)/n, all-gather / reduce-scatter / all-to-all (n-1)/n, permute 1."""
  if n <= 1:
    return 0.0
  return {"all-reduce": 2.0 * (n - 1) / n, "collective-permute": 1.0}.get(op, (n - 1) / n)


def parse_collectives(hlo: str, n_devices: int) -> list[dict]:
  """Every collective of a compiled (SPMD-partitioned, per-device) HLO module, parsed by
  `osmnet_jax.aot.report.collectives` (the one HLO collective parser), as {op, full (the full
  buffer S: a reduce-scatter returns 1/n of it), n, wire (bytes one device sends), big}."""
  out = []
  for c in aot_report.collectives(hlo, n_devices):
    op, n = c["op"], c["group_size"]
    full = c["result_bytes"] * (n if op == "reduce-scatter" else 1)
    # Buffers of >= FSDP_MIN_SIZE elements in an all-reduce: gradients of weights (BatchNorm
    # sums are vectors of <= 1024 channels). Under FSDP XLA:CPU all-reduces them and then slices
    # the local shard; XLA:GPU's reduce-scatter creator turns that pattern into a reduce-scatter.
    big = sum(b for b, numel in c["tensors"] if numel >= FSDP_MIN_SIZE) if op == "all-reduce" else 0
    out.append({"op": op, "full": full, "n": n, "wire": c["sent_bytes"], "big": big})
  return out


def summarize(colls: list[dict], as_reduce_scatter: bool = False) -> dict:
  """Count / full bytes / wire bytes per collective kind. ``as_reduce_scatter``: the weight-
  gradient part of all-reduces ('big') is booked as a reduce-scatter (the GPU form of FSDP)."""
  s = {op: {"count": 0, "full": 0, "wire": 0.0} for op in COLLECTIVES}
  for c in colls:
    s[c["op"]]["count"] += 1
    moved = c["big"] if as_reduce_scatter else 0
    s[c["op"]]["full"] += c["full"] - moved
    s[c["op"]]["wire"] += ring_factor(c["op"], c["n"]) * (c["full"] - moved)
    if moved:
      s["reduce-scatter"]["full"] += moved
      s["reduce-scatter"]["wire"] += ring_factor("reduce-scatter", c["n"]) * moved
  return s


# ------------------------------------------------------------------------------------------------
def model_config(name: str):
  from osmnet_jax import renderer

  if name == "tiny64":
    return renderer.tiny_config(), 64
  if name in ("vox256", "vox128"):
    # At 128 px the 1/8 pyramid level is 16 px: still enough for VGG's 4 poolings.
    return renderer.vox256_config(), int(name[3:])
  raise ValueError(f"unknown model {name!r}: use tiny64, vox128 or vox256")


def compile_step(stage, size: int, devices, data: int, fsdp: int, per_device_batch: int):
  """(compiled step, step fn, shardings) for mesh data x fsdp over ``devices``."""
  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  from osmnet_jax.runtime import sharding

  mesh = sharding.make_mesh(data, fsdp, devices=devices)
  abstract = jax.eval_shape(lambda: stage.init_state(jax.random.PRNGKey(0), size))
  state_sh = stage.state_shardings(mesh, abstract)
  state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                       abstract, state_sh)
  bsh = sharding.batch_sharding(mesh)
  img = jax.ShapeDtypeStruct((per_device_batch * len(devices), size, size, 3), jnp.uint8,
                             sharding=bsh)
  key = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=NamedSharding(mesh, P()))
  step = stage.make_jit_step(mesh, state_sh)
  t0 = time.perf_counter()
  compiled = step.lower(state, {"source": img, "driving": img}, key).compile()
  return compiled, time.perf_counter() - t0, (mesh, state_sh, bsh)


def analyse(compiled, n_devices: int, fsdp_on: bool) -> dict:
  """Per-device costs of a compiled step. 'colls' / 'wire': as XLA:CPU compiled it (used for
  the CPU check); 'colls_gpu' / 'wire_gpu': FSDP weight-gradient all-reduces booked as
  reduce-scatters (used for the accelerator prediction)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  mem = compiled.memory_analysis()
  colls = parse_collectives(compiled.as_text(), n_devices)
  cpu, gpu = summarize(colls), summarize(colls, as_reduce_scatter=fsdp_on)
  return {
      "flops": float(cost.get("flops", 0.0)),
      "bytes": float(cost.get("bytes accessed", 0.0)),
      "arg_bytes": int(getattr(mem, "argument_size_in_bytes", 0)),
      "temp_bytes": int(getattr(mem, "temp_size_in_bytes", 0)),
      "colls": cpu, "wire": sum(c["wire"] for c in cpu.values()),
      "colls_gpu": gpu, "wire_gpu": sum(c["wire"] for c in gpu.values()),
  }


def predict(a: dict, n: int, peak_tflops: float, util: float, hbm_gbs: float, hbm_util: float,
            link_gbs: float, byte_scale: float = 1.0, wire_key: str = "wire_gpu") -> dict:
  """Step time [ms] = compute (roofline) + communication (not overlapped)."""
  t_flops = a["flops"] / (peak_tflops * 1e12 * util)
  t_mem = a["bytes"] * byte_scale / (hbm_gbs * 1e9 * hbm_util)
  t_comp = max(t_flops, t_mem)
  t_comm = a[wire_key] / (link_gbs * 1e9) if n > 1 else 0.0
  return {"compute_ms": 1e3 * t_comp, "comm_ms": 1e3 * t_comm, "bound": "flop" if
          t_flops >= t_mem else "mem", "step_ms": 1e3 * (t_comp + t_comm),
          "overlap_ms": 1e3 * max(t_comp, t_comm)}


def extrapolate(by_n: dict, n_new: int) -> dict:
  """Analysis at n_new from the two largest compiled N: FLOPs / bytes per device constant (weak
  scaling); each collective kind's full buffer bytes linear in N (parameter-sized buffers stay,
  batch-sized ones grow); ring factors at n_new (every group spans the whole mesh axis)."""
  n1, n2 = sorted(by_n)[-2:]
  a1, a2 = by_n[n1], by_n[n2]
  out = dict(a2)
  for key in ("colls", "colls_gpu"):
    wire = 0.0
    for op in COLLECTIVES:
      f1, f2 = a1[key][op]["full"], a2[key][op]["full"]
      full = max(f2 + (f2 - f1) / (n2 - n1) * (n_new - n2), 0.0)
      wire += ring_factor(op, n_new) * full
    out[key.replace("colls", "wire")] = wire
  return out


# ------------------------------------------------------------------------------------------------
def measure_cpu_constants(devices) -> dict:
  """f32 matmul FLOP/s (1 device), streaming bytes/s, and simulated-device collective bytes/s."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  def best(fn, *args, reps=5):
    jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(reps):
      t = time.perf_counter()
      jax.block_until_ready(fn(*args))
      ts.append(time.perf_counter() - t)
    return min(ts)

  n = 1024
  a = jnp.asarray(np.random.RandomState(0).rand(n, n), jnp.float32)
  flops = 2 * n ** 3 / best(jax.jit(lambda x: x @ x), a)
  big = jnp.ones((16 * 2 ** 20,), jnp.float32)  # 64 MiB: read + write
  stream = 2 * big.nbytes / best(jax.jit(lambda x: x * 1.5 + 1.0), big)
  mesh = jax.make_mesh((len(devices),), ("x",), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))
  shard = jax.device_put(jnp.ones((len(devices) * 2 ** 20,), jnp.float32),
                         NamedSharding(mesh, P("x")))
  gather = jax.jit(lambda x: x * 2.0, out_shardings=NamedSharding(mesh, P()))
  t = best(gather, shard)
  coll = ring_factor("all-gather", len(devices)) * shard.nbytes / t
  return {"flops": flops, "stream": stream, "coll": coll, "coll_n": len(devices)}


def measure_steps(compiled, shardings, host_state, n, size, per_device_batch, steps) -> float:
  """Median seconds per step of ``compiled`` on real inputs (state fed back: donated).
  ``host_state``: a numpy copy (the step donates its input, and a RendererState's loss_params
  are the stage's own VGG arrays, so a device state cannot be reused across runs)."""
  import jax
  import numpy as np

  _, state_sh, bsh = shardings
  state = jax.device_put(host_state, state_sh)
  rng = np.random.RandomState(0)
  shape = (per_device_batch * n, size, size, 3)
  batch = {k: jax.device_put(rng.randint(0, 255, shape, np.uint8), bsh)
           for k in ("source", "driving")}
  key = jax.random.PRNGKey(1)
  state, m = compiled(state, batch, key)  # warm-up
  jax.block_until_ready(m)
  ts = []
  for _ in range(steps):
    t = time.perf_counter()
    state, m = compiled(state, batch, key)
    jax.block_until_ready(m)
    ts.append(time.perf_counter() - t)
  return statistics.median(ts)


# ------------------------------------------------------------------------------------------------
def _row(cells) -> str:
  return "| " + " | ".join(str(c) for c in cells) + " |"


def _ms(x: float) -> str:
  return f"{x:.3g}"


_TPU_GRIDS = {4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
_CONFIG_FILES = {"tiny64": "default.py", "vox256": "vox256.py", "vox128": "vox256.py"}


def topology(target: str, n: int) -> str:
  """'cuda:h100', 8 -> 'cuda:h100:1x1x8' (hosts of 8 GPUs); 'tpu:v5e', 16 -> 'tpu:v5e:4x4'."""
  if target.startswith("cuda:"):
    if n > 8 and n % 8:
      raise ValueError(f"--target-devices {n}: more than one host needs a multiple of 8 GPUs")
    return f"{target}:1x1x{n}" if n <= 8 else f"{target}:1x{n // 8}x8"
  if n not in _TPU_GRIDS:
    raise ValueError(f"--target-devices {n}: TPU topologies here are {sorted(_TPU_GRIDS)}")
  return f"{target}:{_TPU_GRIDS[n]}"


def target_results(args, models: list[str]) -> dict:
  """{model: [{'n', 'mode', **report.analyse record}]} compiled for the target's topologies."""
  import jax

  from osmnet_jax.aot import __main__ as aot_main
  from osmnet_jax.aot import compile as aot_compile
  from osmnet_jax.aot import targets

  out = {}
  for model in models:
    cfg = aot_main.load_config(os.path.join(ROOT, "configs", _CONFIG_FILES[model]))
    cfg.data.builder_config = f"{model_config(model)[1]}px"
    rows = out[model] = []
    cpu = None
    if args.target.startswith("cuda:"):
      # The CUDA AOT path has no cost analysis: FLOPs of the same per-chip program lowered for
      # one CPU device, the same for every N and layout (weak scaling).
      cprog = aot_compile.build("renderer", cfg, jax.devices("cpu")[:1], args.target_batch)
      cpu = aot_report.cpu_cost(aot_compile.lower(cprog, "cuda"))
    for n in sorted({int(x) for x in args.target_devices.split(",") if x}):
      t = targets.parse(topology(args.target, n))
      for mode in ("dp", "fsdp"):
        t0 = time.perf_counter()
        prog = aot_compile.build("renderer", cfg, t.devices, args.target_batch, mode)
        _, compiled = aot_compile.lower_and_compile(prog, t.platform)
        rec = aot_report.analyse(t, prog, compiled, cpu)
        rows.append({"n": n, "topology": t.name, "compile_s": time.perf_counter() - t0, **rec})
        print(f"{model} {t.name} {mode}: step {rec['predicted_step_s'] * 1e3:.1f} ms "
              f"({rec['step_source']}), MFU {rec['predicted_mfu'] or 0:.0%}", flush=True)
  return out


def target_report(args, res: dict) -> list[str]:
  lines = [f"## Compiled for {args.target} (`--target`): the accelerator prediction", "",
           f"Each row is the renderer train step compiled for that topology of {args.target} "
           f"without the hardware, {args.target_batch} examples per chip, priced by "
           "osmnet_jax.aot.report (column 'predicted from'). Efficiency = predicted step at the "
           "smallest N / step at N, per layout (weak scaling).", ""]
  for model, rows in res.items():
    lines += [f"### {model} (configs/{_CONFIG_FILES[model]} at {model_config(model)[1]} px)", "",
              _row(["N", "topology", "layout", "fits (memory/chip)", "compute ms", "HBM ms",
                    "network ms", "predicted step ms", "predicted from", "MFU", "efficiency",
                    "compile s"]),
              _row(["---"] * 12)]
    base = {}
    for r in rows:
      base.setdefault(r["mode"], r["predicted_step_s"])
      lines.append(_row([
          r["n"], r["topology"], r["mode"],
          f"{'yes' if r['fits'] else 'NO'} ({r['bytes_per_device'] / 2 ** 30:.2f} GiB)",
          _ms(1e3 * r["compute_s"]), _ms(1e3 * r["memory_s"]), _ms(1e3 * r["comm_s"]),
          _ms(1e3 * r["predicted_step_s"]), r["step_source"],
          f"{100 * (r['predicted_mfu'] or 0):.0f} %",
          f"{base[r['mode']] / r['predicted_step_s']:.2f}", f"{r['compile_s']:.0f}"]))
    lines.append("")
  return lines


def report(args, results, extra, meas, consts, compile_info, wall_s, tres=None) -> str:
  import jax

  now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  lines = [
      "# Renderer train step: scaling model (FSDP off / on)", "",
      f"- date: {now}; wall time of this run: {wall_s / 60:.1f} min",
      f"- machine: {platform.platform()}, {os.cpu_count()} CPU cores (shared with other jobs), "
      f"jax {jax.__version__}, simulated CPU devices (`jax_num_cpu_devices`)",
      "- command: `python benchmarks/scaling_model.py " + " ".join(sys.argv[1:]) + "`",
      f"- per-device batch {args.per_device_batch} (weak scaling: global batch = N x that); "
      "FSDP off = mesh data=N, on = mesh data=1 x fsdp=N (params + Adam moments split, "
      "`sharding.fsdp_spec`); the step is `RendererStage.make_jit_step` (train.py's), float32",
      "", "## Assumptions", "",
      f"- compute = max(FLOPs / ({args.util:g} x peak), HBM bytes / ({args.hbm_util:g} x "
      f"{args.hbm_gbs:g} GB/s)); FLOPs and bytes accessed per device from XLA:CPU's "
      "`cost_analysis()` of the partitioned program (the GPU compiler fuses differently: bytes "
      "are indicative)",
      f"- fp32 column: peak {args.peak_fp32_tflops:g} TFLOP/s (H100 SXM fp32, no TF32); bf16 "
      f"column: peak {args.peak_bf16_tflops:g} TFLOP/s (dense bf16), same FLOPs, half the HBM "
      "bytes (bf16 activations), communication unchanged (float32 params and gradients)",
      f"- communication: bytes each device sends with ring algorithms (all-reduce 2(n-1)/n S, "
      f"all-gather / reduce-scatter (n-1)/n S of the full buffer S), over NVLink "
      f"{args.intra_gbs:g} GB/s per GPU per direction for N <= {args.gpus_per_node} (one node) "
      f"and {args.inter_gbs:g} GB/s per GPU (400 Gb/s NIC) beyond; not overlapped with "
      "compute (step = compute + comm, an upper bound; 'overlap' = max(compute, comm) is the "
      "lower bound)",
      "- XLA:CPU all-reduces the full gradient of an FSDP-sharded weight and then slices the "
      "local shard; XLA:GPU turns that into a reduce-scatter, so for FSDP the all-reduced "
      f"buffers of >= {FSDP_MIN_SIZE} elements (weight gradients) are booked as reduce-scatters "
      "((n-1)/n S instead of 2(n-1)/n S). Counts (AR / AG / other = all-to-all + "
      "collective-permute) are XLA:CPU's",
      "- efficiency = predicted step(N=1) / step(N) (weak scaling: 1.0 is perfect)",
      "- rows marked ~ are extrapolated from the two largest compiled N (collective buffer "
      "sizes linear in N, ring factors at the new N); they were not compiled",
      "- collectives come from the compiled HLO of XLA:CPU; the GPU compiler may combine or "
      "schedule them differently (counts then differ, bytes should not)", "",
  ]
  if tres:
    lines += target_report(args, tres)
    lines += ["## Simulated CPU devices (XLA:CPU programs priced with spec-sheet numbers)", ""]
  for model, by in results.items():
    size = by["size"]
    lines += [f"## {model} ({size} px), per-device batch {args.per_device_batch}", "",
              _row(["N", "FSDP", "GFLOP/dev", "GB accessed/dev", "state MiB/dev",
                    "temp MiB/dev", "AR / AG / other count", "comm MB/dev", "fp32 compute ms",
                    "comm ms", "fp32 step ms (overlap)", "fp32 eff", "bf16 step ms (overlap)",
                    "bf16 eff", "compile s"]),
              _row(["---"] * 15)]
    for fsdp_on in (False, True):
      base = {}
      rows = [(n, a, False) for n, a in sorted(by[fsdp_on].items())]
      rows += [(n, a, True) for n, a in sorted(extra.get((model, fsdp_on), {}).items())]
      for n, a, ex in rows:
        link = args.intra_gbs if n <= args.gpus_per_node else args.inter_gbs
        p32 = predict(a, n, args.peak_fp32_tflops, args.util, args.hbm_gbs, args.hbm_util, link)
        p16 = predict(a, n, args.peak_bf16_tflops, args.util, args.hbm_gbs, args.hbm_util, link,
                      byte_scale=0.5)
        base.setdefault("32", p32["step_ms"])
        base.setdefault("16", p16["step_ms"])
        c = a["colls"]
        lines.append(_row([
            ("~" if ex else "") + str(n), "on" if fsdp_on else "off", f"{a['flops'] / 1e9:.1f}",
            f"{a['bytes'] / 1e9:.2f}", f"{a['arg_bytes'] / 2 ** 20:.1f}",
            f"{a['temp_bytes'] / 2 ** 20:.0f}",
            f"{c['all-reduce']['count']} / {c['all-gather']['count']} / "
            f"{c['all-to-all']['count'] + c['collective-permute']['count']}",
            f"{a['wire_gpu'] / 1e6:.1f}",
            f"{_ms(p32['compute_ms'])} ({p32['bound']})", _ms(p32["comm_ms"]),
            f"{_ms(p32['step_ms'])} ({_ms(p32['overlap_ms'])})",
            f"{base['32'] / p32['step_ms']:.2f}",
            f"{_ms(p16['step_ms'])} ({_ms(p16['overlap_ms'])})",
            f"{base['16'] / p16['step_ms']:.2f}",
            "" if ex else f"{compile_info[(model, fsdp_on, n)]:.0f}"]))
    lines.append("")
  if meas:
    lines += [
        "## Check against measured multi-device runs (tiny64 on simulated CPU devices)", "",
        f"CPU constants measured in this process: f32 1024^2 matmul "
        f"{consts['flops'] / 1e9:.1f} GFLOP/s (one device), streaming (x*1.5+1 on 64 MiB) "
        f"{consts['stream'] / 1e9:.1f} GB/s, all-gather between {consts['coll_n']} simulated "
        f"devices {consts['coll'] / 1e9:.2f} GB/s of wire bytes. 'independent' treats each "
        "simulated device as its own processor with these constants (what the accelerator model "
        "assumes); 'shared' charges the compute of all N devices to the same cores (N x compute "
        "+ comm), which is what N simulated devices in one process on "
        f"{os.cpu_count()} cores actually get.", "",
        _row(["N", "FSDP", "measured s/step", "independent s", "shared s",
              "measured / independent", "measured / shared", "measured scaling T(N)/T(1)",
              "shared-model T(N)/T(1)"]),
        _row(["---"] * 9)]
    t1 = min(meas.items())[1]  # N=1 (FSDP on at N=1 is the same program)
    for (fsdp_on, n), (t, pi, ps) in sorted(meas.items()):
      lines.append(_row([n, "on" if fsdp_on else "off", f"{t:.3f}", f"{pi:.3f}", f"{ps:.3f}",
                         f"{t / pi:.2f}", f"{t / ps:.2f}", f"{t / t1[0]:.2f}",
                         f"{ps / t1[2]:.2f}"]))
    lines.append("")
  return "\n".join(lines) + "\n"


def main(argv=None):
  args = parse_args(argv)
  t_start = time.time()
  devs = sorted({int(x) for x in args.devices.split(",") if x})
  meas_n = sorted({int(x) for x in args.measure_devices.split(",") if x})
  models = [m for m in args.models.split(",") if m]
  if args.fast_compile:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_backend_optimization_level=0"
                               " --xla_llvm_disable_expensive_passes=true")
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")  # --target cuda: no driver here
  import jax
  import numpy as np

  jax.config.update("jax_num_cpu_devices", max(devs + meas_n))
  from osmnet_jax.stages import renderer_step as renderer_stage

  results, compile_info, keep, stages = {}, {}, {}, {}
  for model in models:
    cfg, size = model_config(model)
    stage = stages[model] = renderer_stage.RendererStage(cfg)
    results[model] = {"size": size, False: {}, True: {}}
    want = sorted(set(devs) | (set(meas_n) if model == "tiny64" else set()))
    for fsdp_on in (False, True):
      for n in want:
        if fsdp_on and n == 1:  # mesh 1 x 1 either way: the same program
          results[model][True][1] = results[model][False].get(1)
          compile_info[(model, True, 1)] = compile_info[(model, False, 1)]
          if results[model][True][1] is None:
            del results[model][True][1]
          continue
        compiled, secs, sh = compile_step(stage, size, jax.devices()[:n], 1 if fsdp_on else n,
                                          n if fsdp_on else 1, args.per_device_batch)
        a = analyse(compiled, n, fsdp_on and n > 1)
        compile_info[(model, fsdp_on, n)] = secs
        if n in devs:
          results[model][fsdp_on][n] = a
        if model == "tiny64" and n in meas_n:
          keep[(fsdp_on, n)] = (compiled, sh, a)
        print(f"{model} N={n} fsdp={'on' if fsdp_on else 'off'}: compile {secs:.0f} s, "
              f"{a['flops'] / 1e9:.1f} GFLOP/dev, comm {a['wire'] / 1e6:.1f} MB/dev, "
              f"state {a['arg_bytes'] / 2 ** 20:.1f} MiB/dev", flush=True)
  extra = {}
  ext = [int(x) for x in args.extrapolate.split(",") if x]
  for model in models:
    for fsdp_on in (False, True):
      by = results[model][fsdp_on]
      if len(by) >= 2 and ext:
        extra[(model, fsdp_on)] = {n: extrapolate(by, n) for n in ext if n > max(by)}

  meas, consts = {}, {}
  if meas_n and "tiny64" in models:
    consts = measure_cpu_constants(jax.devices()[:max(meas_n)])
    size = results["tiny64"]["size"]
    host_state = jax.tree.map(np.array, stages["tiny64"].init_state(jax.random.PRNGKey(0), size))
    for (fsdp_on, n), (compiled, sh, a) in sorted(keep.items()):
      t = measure_steps(compiled, sh, host_state, n, size, args.per_device_batch,
                        args.measure_steps)
      p = predict(a, n, consts["flops"] / 1e12, 1.0, consts["stream"] / 1e9, 1.0,
                  consts["coll"] / 1e9, wire_key="wire")
      indep = p["step_ms"] / 1e3
      shared = (n * p["compute_ms"] + p["comm_ms"]) / 1e3
      meas[(fsdp_on, n)] = (t, indep, shared)
      print(f"measured tiny64 N={n} fsdp={'on' if fsdp_on else 'off'}: {t:.3f} s/step "
            f"(independent {indep:.3f}, shared {shared:.3f})", flush=True)
  tres = target_results(args, models) if args.target else None
  text = report(args, results, extra, meas, consts, compile_info, time.time() - t_start, tres)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  main()
