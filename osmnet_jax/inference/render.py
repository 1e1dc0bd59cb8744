"""Render frames of one source image from per-frame driving keypoints with the FOMM generator.

Two forms, one generator call each:
  * ``render_clip``: a whole [B, T] clip folded into the batch, pure and differentiable (the
    expression stage's reconstruction loss renders through it inside its jitted step);
  * ``render_sequence``: T frames (any T) in fixed chunks of ``chunk`` frames through one
    jitted call per chunk, the last chunk padded so only one shape compiles (generation,
    evaluation, reconstruction videos; memory bounded whatever T is).
"""
from __future__ import annotations

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np

from osmnet_jax import renderer
from osmnet_jax.nn import conv as conv_lib


def fold_time(tree):
  """[B,T,...] leaves -> [B*T,...]."""
  return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), tree)


def render_clip(renderer_variables: dict, renderer_cfg, source: jax.Array, kp_src: dict,
                kp_drv_seq: dict, frames_per_call: int | None = None) -> jax.Array:
  """Renders a whole clip with the generator: T is folded into the batch.

  Args:
    renderer_variables: renderer variables (only 'generator' is used).
    renderer_cfg: the renderer's ConfigDict.
    source: [B,H,W,3] float in [0,1] (uint8 is converted).
    kp_src: {'value': [B,K,2], 'jacobian': [B,K,2,2]}.
    kp_drv_seq: {'value': [B,T,K,2], 'jacobian': [B,T,K,2,2]}.
    frames_per_call: None renders all B*T frames in one generator call; an int renders them in
      chunks of that many with ``lax.map`` (bounded memory inside a jitted step).

  Returns frames [B,T,H,W,3] in [0,1]. The generator runs in inference mode (BatchNorm running
  statistics). Call it inside ``jax.jit`` (eager calls run op by op).
  """
  if source.dtype == jnp.uint8:
    source = source.astype(jnp.float32) / 255.0
  b, t = kp_drv_seq["value"].shape[:2]
  # Repeat the source and its keypoints per frame: [B,...] -> [B,T,...] -> [B*T,...].
  rep = lambda x: jnp.broadcast_to(x[:, None], (b, t) + x.shape[1:])
  flat = fold_time({"source": rep(source), "kp_src": jax.tree.map(rep, kp_src),
                    "kp_drv": kp_drv_seq})
  gen = renderer.make_generator(renderer_cfg)
  gen_vars = renderer_variables["generator"]

  def one(x):
    return gen.apply(gen_vars, x["source"], x["kp_drv"], x["kp_src"])["prediction"]

  if frames_per_call is None:
    frames = one(flat)
  else:
    # lax.map maps single frames; with batch_size it vmaps them in chunks of that many.
    single = lambda x: one(jax.tree.map(lambda a: a[None], x))[0]
    frames = jax.lax.map(single, flat, batch_size=int(frames_per_call))
  return frames.reshape((b, t) + frames.shape[1:])


def render_frames(variables: dict, source: jax.Array, kp_src: dict, kp_drv: dict, *,
                  renderer_cfg, uint8: bool = True) -> jax.Array:
  """One chunk, pure: source [1,H,W,3] float in [0,1], kp_src {'value' [1,K,2], 'jacobian'
  [1,K,2,2]}, kp_drv {'value' [B,K,2], 'jacobian' [B,K,2,2]} -> frames [B,H,W,3], uint8
  (rounded) or float in [0, 1]. The call generation jits (``SequenceRenderer``) and
  ``osmnet_jax.aot`` compiles for accelerators."""
  # Forward only: on TPU a single width-packed conv (nn/conv.py) pays off through its gradients;
  # here its relayouts cost more than it saves, while the generator's packed full-resolution
  # chains have none and win (vox256 generator on v5e, 32 frames: 50.97 ms plain, 46.38 ms
  # chains; single convs packed as well, before the chains: 66.5 vs 50.9 ms; BENCHMARKS.md).
  with conv_lib.chains_only():
    frames = render_clip(variables, renderer_cfg, source, kp_src,
                         jax.tree.map(lambda x: x[None], kp_drv))[0]
  if uint8:
    return jnp.round(jnp.clip(frames, 0.0, 1.0) * 255.0).astype(jnp.uint8)
  return frames


class SequenceRenderer:
  """Jitted chunk renderer of one renderer config: ``__call__`` renders T frames of one source.

  ``uint8``: frames come back as uint8 (rounded on device) instead of float32 in [0, 1]."""

  def __init__(self, renderer_cfg, uint8: bool = True):
    self.cfg = renderer_cfg
    self.uint8 = uint8
    self._chunk = jax.jit(functools.partial(render_frames, renderer_cfg=renderer_cfg,
                                            uint8=uint8))

  def __call__(self, variables: dict, source, kp_src: dict, kp_drv: dict, chunk: int = 16,
               progress: bool = False) -> np.ndarray:
    """source [H,W,3] (uint8 or float in [0,1]), kp_src {'value' [1,K,2], 'jacobian' [1,K,2,2]},
    kp_drv {'value' [T,K,2], 'jacobian' [T,K,2,2]} -> frames [T,H,W,3] (uint8 or float32)."""
    from tqdm import tqdm

    src = jnp.asarray(source)
    src = (src.astype(jnp.float32) / 255.0 if src.dtype == jnp.uint8 else
           src.astype(jnp.float32))
    src = src.reshape((1,) + src.shape[-3:])
    total, b = int(kp_drv["value"].shape[0]), max(1, int(chunk))
    chunks = -(-total // b)
    pad = chunks * b - total
    if pad:  # the last chunk repeats its final frame so every call has the same shape (one jit)
      kp_drv = jax.tree.map(lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], pad, 0)]), kp_drv)
    out = np.empty((chunks * b,) + src.shape[1:], np.uint8 if self.uint8 else np.float32)
    for i in tqdm(range(chunks), desc="render", unit="chunk", disable=not progress,
                  file=sys.stderr):
      part = jax.tree.map(lambda x: x[i * b:(i + 1) * b], kp_drv)
      out[i * b:(i + 1) * b] = np.asarray(self._chunk(variables, src, kp_src, part))
    return out[:total]


_RENDERERS: dict = {}  # (renderer config as JSON, uint8) -> SequenceRenderer


def sequence_renderer(renderer_cfg, uint8: bool = True) -> SequenceRenderer:
  """The SequenceRenderer of ``renderer_cfg``, made once per config (its jit compiles once)."""
  key = (renderer_cfg.to_json(sort_keys=True), uint8)
  if key not in _RENDERERS:
    _RENDERERS[key] = SequenceRenderer(renderer_cfg, uint8)
  return _RENDERERS[key]


def detect_sequence(variables: dict, renderer_cfg, frames: np.ndarray, chunk: int = 16) -> dict:
  """The renderer's keypoints of frames uint8 [T,H,W,3], ``chunk`` frames per call
  -> {'value' [T,K,2], 'jacobian' [T,K,2,2]}."""
  x = np.asarray(frames, np.float32) / 255.0
  t = len(x)
  pad = (-t) % chunk
  if pad:  # the last chunk repeats its final frame: one shape, one compilation
    x = np.concatenate([x, np.repeat(x[-1:], pad, 0)])
  parts = [renderer.detect_keypoints(variables, renderer_cfg, x[i:i + chunk])
           for i in range(0, len(x), chunk)]
  return jax.tree.map(lambda *p: jnp.concatenate(p)[:t], *parts)
