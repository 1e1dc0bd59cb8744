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


def from_config(ecfg) -> KeypointPredictor:
  """cfg.expression -> KeypointPredictor (see stages/expression.expression_config)."""
  return KeypointPredictor(hidden=ecfg.kp_hidden, temporal_layers=ecfg.kp_temporal_layers,
                           temporal_kernel=ecfg.temporal_kernel, head_depth=ecfg.kp_head_depth,
                           jacobian=ecfg.kp_jacobian, dtype=precision.compute_dtype(ecfg))
