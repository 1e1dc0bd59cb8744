"""Accelerator targets for ahead-of-time compilation: topology names -> compile-only devices.

    target = targets.parse("tpu:v5e:4x4")       # or "tpu:v5e:16x16:2" (2 slices), "cuda:h100:1x4x8"
    target.devices                              # compile-only jax devices (no hardware needed)
    target.chip.peak_flops("bfloat16"), target.chip.hbm_bytes, target.link_bytes_per_s(group)

TPU names are `tpu:<generation>:<chip grid>[:<slices>]` with the grid as libtpu spells it
("v5e:4x4", "v5:2x2x1", "v4:2x2x1", "v6e:16x16"). NVIDIA names are
`cuda:<gpu>:<slices>x<hosts per slice>x<gpus per host>`; the device facts come from the
GpuTargetConfigProto text files shipped in gpu_targets/ (written from public spec sheets).

The per-chip numbers below (peak matmul FLOP/s, HBM bandwidth, interconnect bandwidth) are the
vendors' public spec-sheet figures; they price the compiled programs in report.py. They are
peaks: a roofline built on them is an upper bound on speed.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

GPU_TARGETS_DIR = os.path.join(os.path.dirname(__file__), "gpu_targets")


@dataclasses.dataclass(frozen=True)
class Chip:
  """Public per-chip facts. FLOP/s are dense (no sparsity); bytes/s one direction."""

  name: str
  bf16_flops: float          # peak dense bf16 matmul FLOP/s
  f32_flops: float           # peak for float32 programs as XLA runs them by default (TPU: bf16
  #                            passes at default precision; GPU: TF32 tensor cores)
  hbm_bytes: int
  hbm_bytes_per_s: float
  fast_link_bytes_per_s: float   # per chip: TPU ICI (all links) / GPU NVLink
  slow_link_bytes_per_s: float   # per chip: TPU DCN between slices / GPU InfiniBand between hosts
  # TensorCore clock: converts the TPU compiler's per-instruction cycle estimates into seconds
  # (aot/breakdown.py). Derived, not published: peak bf16 FLOP/s / (TensorCores x 4 MXUs x
  # 128 x 128 x 2); None where the MXU count is not public (v6e) or the chip is a GPU.
  clock_hz: float | None = None

  def peak_flops(self, compute_dtype: str) -> float:
    return self.bf16_flops if compute_dtype == "bfloat16" else self.f32_flops


# TPU: cloud.google.com/tpu/docs/{v4,v5e,v5p,v6e} system-architecture tables. DCN per chip is
# [ours]: a host's 100-200 Gb/s NIC shared by its 4 chips.
# NVIDIA: H100 SXM / H200 SXM datasheets (NVLink 4: 900 GB/s bidirectional = 450 GB/s per
# direction; one 400 Gb/s InfiniBand NDR port per GPU = 50 GB/s).
CHIPS = {
    "v4": Chip("TPU v4", 275e12, 275e12, 32 * 2**30, 1228e9, 300e9, 6.25e9, 275e12 / 2**18),
    "v5e": Chip("TPU v5e", 197e12, 197e12, 16 * 2**30, 819e9, 200e9, 6.25e9, 197e12 / 2**17),
    "v5": Chip("TPU v5p", 459e12, 459e12, 95 * 2**30, 2765e9, 600e9, 6.25e9, 459e12 / 2**18),
    "v6e": Chip("TPU v6e", 918e12, 918e12, 32 * 2**30, 1640e9, 448e9, 12.5e9),
    "h100": Chip("NVIDIA H100 SXM 80GB", 989e12, 494e12, 80 * 2**30, 3.35e12, 450e9, 50e9),
    "h200": Chip("NVIDIA H200 SXM 141GB", 989e12, 494e12, 141 * 10**9, 4.8e12, 450e9, 50e9),
}
TPU_GENERATIONS = ("v4", "v5e", "v5", "v6e")
_KIND_TO_CHIP = (("h200", "h200"), ("h100", "h100"), ("v6", "v6e"), ("v5 lite", "v5e"),
                 ("v5e", "v5e"), ("v5", "v5"), ("v4", "v4"))
GPUS = ("h100", "h200")


@dataclasses.dataclass
class Target:
  name: str                  # as given, e.g. "tpu:v5e:4x4"
  platform: str              # "tpu" | "cuda"
  chip: Chip
  devices: list
  devices_per_host: int
  devices_per_slice: int

  @property
  def num_devices(self) -> int:
    return len(self.devices)

  def link_bytes_per_s(self, group: list[int]) -> float:
    """Per-chip bandwidth a collective over device ids `group` runs at: the fast link (ICI /
    NVLink) when the group stays inside one slice (TPU) or one host (GPU), else the slow one."""
    span = self.devices_per_slice if self.platform == "tpu" else self.devices_per_host
    pos = {d.id: i for i, d in enumerate(self.devices)}
    islands = {pos.get(g, g) // span for g in group}
    return self.chip.fast_link_bytes_per_s if len(islands) <= 1 else self.chip.slow_link_bytes_per_s


def _grid(text: str, what: str) -> tuple[int, ...]:
  try:
    dims = tuple(int(x) for x in text.split("x"))
  except ValueError:
    dims = ()
  if not dims or min(dims) < 1:
    raise ValueError(f"topology {what}: {text!r} is not a grid like 4x4 or 1x4x8")
  return dims


def gpu_target_config(gpu: str) -> str:
  """The shipped GpuTargetConfigProto text for `gpu` ('h100' | 'h200')."""
  path = os.path.join(GPU_TARGETS_DIR, f"{gpu}.txtpb")
  if not os.path.exists(path):
    raise ValueError(f"no GPU target config for {gpu!r} ({path}); shipped: {GPUS}")
  with open(path) as f:
    return f.read()


def parse(name: str) -> Target:
  """'tpu:v5e:4x4[:slices]' | 'cuda:h100:1x4x8' -> Target with compile-only devices."""
  from jax.experimental import topologies

  parts = name.split(":")
  if len(parts) < 3 or parts[0] not in ("tpu", "cuda"):
    raise ValueError(f"--topology {name!r}: use tpu:<gen>:<grid>[:<slices>] (e.g. tpu:v5e:4x4, "
                     f"gens {TPU_GENERATIONS}) or cuda:<gpu>:<slices>x<hosts>x<gpus> (e.g. "
                     f"cuda:h100:1x4x8, gpus {GPUS})")
  platform, kind, grid = parts[0], parts[1].lower(), parts[2]
  if platform == "tpu":
    # libtpu takes /tmp/libtpu_lockfile for the whole process by default; compiling only, two
    # processes (a test run next to a report) may share the machine.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    if kind not in TPU_GENERATIONS or len(parts) > 4:
      raise ValueError(f"--topology {name!r}: TPU generation must be one of {TPU_GENERATIONS} "
                       "(libtpu's names: v5e, v5 for v5p, v4, v6e)")
    dims = _grid(grid, name)
    slices = int(parts[3]) if len(parts) == 4 else 1
    # Hosts hold 2x2 chips (v5e/v6e: 2x2x1; v4/v5p: 2x2x1 of a 3D grid).
    bounds = (2, 2, 1)
    if any(d % b for d, b in zip(dims, bounds)) and int(np.prod(dims)) > 1:
      bounds = tuple(min(d, b) for d, b in zip(dims + (1,) * (3 - len(dims)), bounds))
    kwargs = {"num_slices": slices} if slices > 1 else {}
    desc = topologies.get_topology_desc(
        topology_name=f"{kind}:{grid}", platform="tpu", chip_config_name="default",
        chips_per_host_bounds=bounds, **kwargs)
    devs = list(desc.devices)
    return Target(name, "tpu", CHIPS[kind], devs, int(np.prod(bounds)), len(devs) // slices)
  if kind not in GPUS or len(parts) != 3:
    raise ValueError(f"--topology {name!r}: GPU must be one of {GPUS} with a "
                     "<slices>x<hosts>x<gpus per host> grid, e.g. cuda:h100:1x1x8")
  dims = _grid(grid, name)
  if len(dims) != 3:
    raise ValueError(f"--topology {name!r}: the GPU grid is <slices>x<hosts>x<gpus per host>")
  os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")
  desc = topologies.get_topology_desc(platform="cuda", target_config=gpu_target_config(kind),
                                      topology=grid)
  devs = list(desc.devices)
  return Target(name, "cuda", CHIPS[kind], devs, dims[2], dims[1] * dims[2])


def local(chip: str | None = None) -> Target:
  """The devices this process runs on as a Target (benchmarks/on_gpu.sh compares the compiled
  program's prediction with a measurement). `chip`: a CHIPS key; default from the device kind."""
  import jax

  devs = jax.devices()
  kind = devs[0].device_kind.lower()
  if chip is None:  # device_kind: "NVIDIA H100 80GB HBM3", "TPU v5 lite", "TPU v5", ...
    chip = next((c for sub, c in _KIND_TO_CHIP if sub in kind), None)
  if chip not in CHIPS:
    raise ValueError(f"device kind {devs[0].device_kind!r}: no spec in targets.CHIPS; pass one "
                     f"of {sorted(CHIPS)}")
  platform = "cuda" if devs[0].platform == "gpu" else devs[0].platform
  return Target(f"local:{chip}", platform, CHIPS[chip], devs, jax.local_device_count(),
                len(devs))
