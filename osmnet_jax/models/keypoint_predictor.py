"""KeypointPredictor: (source keypoints, expression window, pose sequence) -> driving keypoints.

OSM-Net stage B [paper: the keypoint predictor drives the stage-A renderer from the expression
feature and the sampled head motion; layout ours]:

    kp = KeypointPredictor(...).apply({'params': p}, kp_src, expression, pose)
    # kp_src {'value': [B,K,2], 'jacobian': [B,K,2,2]}   the frozen renderer's KPDetector(source)
    # expression [B,T,E]                                 ExpressionEncoder output
    # pose [B,T,6]                                       normalised head pose per frame
    kp['value'] [B,T,K,2], kp['jacobian'] [B,T,K,2,2]
    # rendered by inference/render.render_clip(renderer_variables, renderer_cfg, source, ...)

Layout [ours]: the source keypoints are embedded once per clip; every frame adds its own
(expression_t, pose_t) embedding; ``temporal_layers`` residual 1-D convs over T smooth the motion
across the window; an MLP head outputs *residuals* on the source keypoints and Jacobians. The last
layer is zero-initialised, so at initialisation kp_drv == kp_src exactly (the renderer then
reproduces the source: a sane starting point, and a testable identity). All frames are computed
at once (Dense/Conv over the [B,T,...] array): no Python loop over frames.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from osmnet_jax.models.expression import TemporalConvBlock
from osmnet_jax.nn import precision
from osmnet_jax.nn.grid_sample import grid_sample, pixel_centre_grid


class KeypointPredictor(nn.Module):
  """Attributes ([ours]): hidden width, temporal_layers/temporal_kernel (residual 1-D convs over
  T), head_depth (MLP layers before the zero-initialised output), jacobian (predict Jacobian
  residuals; False keeps the source Jacobians), dtype (compute dtype of the embeddings, the
  temporal convs and the head's hidden layers; the zero-initialised output layer and the
  keypoints are float32)."""

  hidden: int = 128
  temporal_layers: int = 1
  temporal_kernel: int = 3
  head_depth: int = 2
  jacobian: bool = True
  dtype: Any = None

  @nn.compact
  def __call__(self, kp_src: dict, expression: jax.Array, pose: jax.Array) -> dict:
    value, jac = kp_src["value"], kp_src["jacobian"]  # [B,K,2], [B,K,2,2]
    b, k, _ = value.shape
    t = expression.shape[1]
    src = jnp.concatenate([value.reshape(b, -1), jac.reshape(b, -1)], -1)  # [B,6K]
    dt = self.dtype
    src_emb = nn.Dense(self.hidden, dtype=dt, name="src")(src)  # [B,H]: where the source sits
    frame = jnp.concatenate([expression, pose.astype(expression.dtype)], -1)  # [B,T,E+6]
    h = nn.Dense(self.hidden, dtype=dt, name="frame")(frame) + src_emb[:, None]  # [B,T,H]
    for i in range(self.temporal_layers):
      h = TemporalConvBlock(self.temporal_kernel, dtype=dt, name=f"temporal_{i}")(h)
    h = nn.LayerNorm(dtype=dt, name="norm")(h)
    for i in range(self.head_depth):
      h = nn.gelu(nn.Dense(self.hidden, dtype=dt, name=f"head_{i}")(h))
    n_out = 6 * k if self.jacobian else 2 * k
    # Zero init: kp_drv == kp_src at initialisation (see the module docstring).
    delta = nn.Dense(n_out, kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros,
                     name="out")(h)  # [B,T,6K]
    out_value = value[:, None] + delta[..., :2 * k].reshape(b, t, k, 2)
    out_jac = jnp.broadcast_to(jac[:, None], (b, t, k, 2, 2))
    if self.jacobian:
      out_jac = out_jac + delta[..., 2 * k:].reshape(b, t, k, 2, 2)
    return {"value": out_value, "jacobian": out_jac}


# ----------------------------------------------------------------------------------------------
# In-plane head pose applied geometrically [ours] (cfg.expression.inplane_pose = "geometric").
#
# The renderer shows the full roll when its keypoints turn exactly with the head: source
# keypoints moved by each frame's image-plane similarity read r 0.95 at 1.11-1.16x on the
# pixels, where the detector's own keypoints (the predictor's distillation targets) read r
# 0.83-0.88 at 0.80-0.87x (BENCHMARKS.md "The renderer can show the whole roll"). So in this
# mode the predictor sees the pose with roll, tx, ty and scale at the dataset mean (normalised
# 0) and learns only expression, yaw and pitch; the frame's roll, position and scale move its
# keypoints and Jacobians by the similarity below.

INPLANE_MODES = ("learned", "geometric")
KP_TARGETS = ("frame", "canonical")  # cfg.expression.kp_target: see canonical_frames
INPLANE = slice(2, 6)  # roll, tx, ty, scale of face/geometry.POSE_NAMES


def inplane_similarity(pose: jax.Array, mean, std) -> tuple[jax.Array, jax.Array]:
  """Normalised poses [..., 6] -> (A [..., 2, 2], b [..., 2]): n -> A n + b takes a face at the
  dataset's mean roll, position and scale to the pose's, in [-1, 1] crop coordinates.

  face/geometry.py projects n = t + s F Rz(roll) P(Ry Rx X) with F = diag(1, -1), so for the
  same yaw and pitch n_t = t_t + (s_t / s_m) Rz(-(roll_t - roll_m)) (n_m - t_m): exact for
  in-plane motion; yaw and pitch are the predictor's to learn."""
  mean = jnp.asarray(mean, pose.dtype)
  std = jnp.asarray(std, pose.dtype)
  raw = pose * std + mean
  theta = -(raw[..., 2] - mean[2])
  s = raw[..., 5] / mean[5]
  c, sn = jnp.cos(theta), jnp.sin(theta)
  a = s[..., None, None] * jnp.stack([jnp.stack([c, -sn], -1), jnp.stack([sn, c], -1)], -2)
  b = raw[..., 3:5] - jnp.einsum("...ij,j->...i", a, mean[3:5])
  return a, b


def without_inplane(pose: jax.Array) -> jax.Array:
  """Normalised poses [..., 6] with roll, tx, ty, scale at the dataset mean (0)."""
  return jnp.asarray(pose).at[..., INPLANE].set(0.0)


def move_keypoints(kp: dict, a: jax.Array, b: jax.Array) -> dict:
  """kp {'value' [B,T,K,2], 'jacobian' [B,T,K,2,2]}, a [B,T,2,2], b [B,T,2] -> the keypoints
  moved by n -> a n + b (a Jacobian is a local linear map: a J)."""
  hi = jax.lax.Precision.HIGHEST
  value = jnp.einsum("btij,btkj->btki", a, kp["value"], precision=hi) + b[:, :, None]
  jac = jnp.einsum("btij,btkjl->btkil", a, kp["jacobian"], precision=hi)
  return {"value": value, "jacobian": jac}


def canonical_frames(frames: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
  """frames [B,T,H,W,C], similarity (a [B,T,2,2], b [B,T,2]) -> each frame moved to the dataset's
  mean roll, position and scale: C(n) = F(a n + b), bilinear, border-padded.

  The detector of these frames gives the predictor's distillation targets under
  ``kp_target="canonical"``: the frame it reads has no in-plane motion left, so its keypoints
  need not turn (the detector under-turns: BENCHMARKS.md "The renderer can show the whole roll"),
  and the similarity put back on them turns exactly. n is in the landmarks' [-1, 1] convention
  (pixel centres at (2 i + 1) / W - 1), which grid_sample reads."""
  bsz, t, h, w, c = frames.shape
  grid = pixel_centre_grid(h, w)  # [H,W,2] (x, y)
  hi = jax.lax.Precision.HIGHEST
  g = jnp.einsum("btij,hwj->bthwi", a.astype(jnp.float32), grid, precision=hi)
  g = g + b.astype(jnp.float32)[:, :, None, None]  # [B,T,H,W,2]
  out = grid_sample(frames.reshape(bsz * t, h, w, c), g.reshape(bsz * t, h, w, 2), "border")
  return out.reshape(frames.shape).astype(frames.dtype)


def pose_stats_of(ecfg) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """(mean [6], std [6]) that ``inplane_pose="geometric"`` reads from cfg.expression; the
  expression stage copies them from the dataset (stages/expression.with_pose_stats)."""
  mean, std = tuple(ecfg.get("pose_mean", ())), tuple(ecfg.get("pose_std", ()))
  if len(mean) != 6 or len(std) != 6 or not mean[5] > 0:
    raise ValueError("expression.inplane_pose='geometric' needs the dataset's pose statistics "
                     f"in expression.pose_mean / pose_std (6 numbers each, mean scale > 0), got "
                     f"{mean!r} / {std!r}; the expression stage fills them from the dataset")
  return mean, std


def predict(predictor: KeypointPredictor, params, kp_src: dict, expression: jax.Array,
            pose: jax.Array, ecfg) -> dict:
  """Driving keypoints as the stages and generation compute them, per ``ecfg.inplane_pose``:
  'learned' (the predictor sees the whole pose) or 'geometric' (see above)."""
  mode = ecfg.get("inplane_pose", "learned")
  if mode == "learned":
    return predictor.apply({"params": params}, kp_src, expression, pose)
  if mode != "geometric":
    raise ValueError(f"expression.inplane_pose={mode!r}: one of {INPLANE_MODES}")
  mean, std = pose_stats_of(ecfg)
  kp = predictor.apply({"params": params}, kp_src, expression, without_inplane(pose))
  a, b = inplane_similarity(jnp.asarray(pose, jnp.float32), mean, std)
  return move_keypoints(kp, a, b)


def from_config(ecfg) -> KeypointPredictor:
  """cfg.expression -> KeypointPredictor (see stages/expression.expression_config)."""
  return KeypointPredictor(hidden=ecfg.kp_hidden, temporal_layers=ecfg.kp_temporal_layers,
                           temporal_kernel=ecfg.temporal_kernel, head_depth=ecfg.kp_head_depth,
                           jacobian=ecfg.kp_jacobian, dtype=precision.compute_dtype(ecfg))
