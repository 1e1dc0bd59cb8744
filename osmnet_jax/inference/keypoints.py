"""Driving keypoints of a trained expression model: (source, audio, poses) -> renderer keypoints.

  fn = keypoints.make_keypoints_fn(expr.cfg, expr.renderer_cfg)   # pure, jit-able
  kp_src, kp = fn(expr.params, expr.renderer_variables, batch)
  # batch: source uint8 [B,H,W,3], source_landmarks [B,68,2] px, mel [B,T,20,80],
  #        pose [B,T,6] normalised
  # kp_src {'value' [B,K,2], 'jacobian' [B,K,2,2]}: the frozen renderer's KPDetector(source)
  # kp     {'value' [B,T,K,2], 'jacobian' [B,T,K,2,2]}: KeypointPredictor(kp_src, expression, pose)
  #        (models/keypoint_predictor.predict: with the in-plane pose moved geometrically when
  #        cfg.inplane_pose='geometric')
  # With a renderer whose flow reads landmarks (renderer.uses_landmarks) both dicts also carry
  # 'landmarks': the source's [B,68,2] and the expression model's predicted [B,T,68,2].

The ExpressionEncoder and the KeypointPredictor are per-frame layers plus SAME-padded temporal
convs with no positional input, so one pass over a whole sequence equals the training-time
windows away from the ends.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from osmnet_jax import renderer
from osmnet_jax.face import geometry as fg
from osmnet_jax.models import expression as expression_lib
from osmnet_jax.models import keypoint_predictor as kp_lib


def make_keypoints_fn(expression_cfg, renderer_cfg):
  """-> pure ``fn(params, renderer_variables, batch) -> (kp_src, kp)`` (see the module doc)."""
  encoder = expression_lib.from_config(expression_cfg)
  predictor = kp_lib.from_config(expression_cfg)
  detector = renderer.make_kp_detector(renderer_cfg)  # inference mode

  def fn(params, renderer_variables, batch):
    source = batch["source"].astype(jnp.float32) / 255.0  # [B,H,W,3]
    src_lm = expression_lib.normalise_landmarks(
        batch["source_landmarks"].astype(jnp.float32), source.shape[1])
    pose = batch["pose"].astype(jnp.float32)
    out = encoder.apply({"params": params["expression"]}, batch["mel"].astype(jnp.float32),
                        source, src_lm, pose, train=False)
    kp_src = detector.apply(renderer_variables["kp_detector"], source)
    kp = kp_lib.predict(predictor, params["keypoints"], kp_src, out["expression"], pose,
                        expression_cfg)
    return with_predicted_landmarks(renderer_cfg, kp_src, kp, batch["source_landmarks"],
                                    out["landmarks"], source.shape[1])

  return fn


def with_predicted_landmarks(renderer_cfg, kp_src: dict, kp: dict, source_landmarks,
                             predicted, size: int) -> tuple[dict, dict]:
  """(kp_src, kp) plus 'landmarks' when the renderer's flow reads them (the landmark motion
  [ours], renderer.uses_landmarks): the source's pixel landmarks [B,68,2] and the expression
  model's predicted ones [B,T,68,2] in its [-1, 1] crop coordinates; else unchanged."""
  if not renderer.uses_landmarks(renderer_cfg):
    return kp_src, kp
  return (renderer.with_landmarks(kp_src, source_landmarks, size),
          renderer.with_landmarks(kp, expression_lib.denormalise_landmarks(predicted, size), size))


def check(expr) -> None:
  """Traces ``make_keypoints_fn`` on ``expr`` (workdir.Expression) without computing it:
  raises (flax) when its params do not fit the models its config builds."""
  t, s = int(expr.cfg.num_frames), int(expr.image_size)
  batch = {"source": jax.ShapeDtypeStruct((1, s, s, 3), jnp.uint8),
           "source_landmarks": jax.ShapeDtypeStruct((1, fg.NUM_LANDMARKS, 2), jnp.float32),
           "mel": jax.ShapeDtypeStruct((1, t, 20, 80), jnp.float32),
           "pose": jax.ShapeDtypeStruct((1, t, 6), jnp.float32)}
  fn = make_keypoints_fn(expr.cfg, expr.renderer_cfg)
  jax.eval_shape(fn, expr.params, expr.renderer_variables, batch)
