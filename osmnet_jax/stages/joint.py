"""Stage "joint" (optional, DESIGN.md §3): the expression encoder and keypoint predictor of the
expression stage fine-tuned with the pixel loss through the frozen renderer.

The expression stage learns driving keypoints by distillation (the frozen KPDetector on the true
frames) and landmarks; nothing there asks the rendered frame to look right. Here the same
``ExpressionStage`` objective gets two pixel terms [ours] on the frames it renders from the
predicted keypoints ([B*T] frames through the generator per step):

  + w_rec       * |G(source, kp_src, kp_pred) - frames|_1            whole frame
  + w_rec_mouth * same, inside each true frame's mouth box           losses/landmark_anchors.py

Starts from the expression stage's final params (W/checkpoints/expression), trains
``cfg.joint.num_steps`` and writes W/checkpoints/joint in the expression format, with its own
held-out eval.json. ``workdir.load_expression(W)`` (generation, eval.py) prefers a trained joint
stage; ``stage="expression"`` loads the one before. Results with and without it:
BENCHMARKS.md "Joint stage".
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from osmnet_jax import workdir as workdir_lib
from osmnet_jax.stages import common
from osmnet_jax.stages import expression as expression_stage

# cfg.joint fields that replace cfg.expression's for this stage.
OVERRIDES = ("num_steps", "lr", "warmup_steps", "save_every", "w_rec", "w_rec_mouth",
             "render_frames_per_call", "batch_size")


def joint_expression_config(cfg):
  """cfg.expression with the fields of cfg.joint that this stage changes."""
  ecfg = cfg.expression.copy_and_resolve_references()
  for k in OVERRIDES:
    ecfg[k] = cfg.joint[k]
  if not (ecfg.w_rec or ecfg.w_rec_mouth):
    raise ValueError("config.joint: w_rec and w_rec_mouth are both 0, so the joint stage would "
                     "only repeat the expression stage; set one > 0 (e.g. "
                     "--config.joint.w_rec_mouth=10)")
  return ecfg


def run_joint(cfg, builder, mesh, workdir: str, writer) -> dict:
  """Fine-tune W/checkpoints/expression with the pixel terms -> W/checkpoints/joint."""
  base = workdir_lib.load_expression(workdir, stage="expression")
  size = int(builder.info.features["frames"].shape[1])
  if size != base.image_size:
    raise ValueError(f"joint: the dataset's frames are {size} px but {base.checkpoint_dir} was "
                     f"trained at {base.image_size} px")
  ecfg = joint_expression_config(cfg)
  mode, trained = ecfg.get("inplane_pose", "learned"), base.cfg.get("inplane_pose", "learned")
  if trained != mode:
    raise ValueError(f"joint: config.expression.inplane_pose={mode!r} but "
                     f"{base.checkpoint_dir} was trained with {trained!r}; the joint stage "
                     "fine-tunes those params, so use the same value (or retrain the expression "
                     "stage)")
  ecfg = expression_stage.with_pose_stats(ecfg, builder)
  stage = expression_stage.ExpressionStage(ecfg, base.renderer_cfg)
  ckdir = workdir_lib.checkpoint_dir(workdir, "joint")
  common.write_json_once(os.path.join(ckdir, workdir_lib.EXPRESSION_CONFIG), {
      "expression": ecfg.to_dict(), "renderer": base.renderer_cfg.to_dict(), "image_size": size,
      "renderer_source": "expression", "parallel": cfg.parallel,
      "base_checkpoint": base.checkpoint_dir, "base_step": base.step})
  params = jax.tree.map(jnp.asarray, base.params)
  state = expression_stage.ExpressionState(
      step=jnp.zeros((), jnp.int32), params=params, opt_state=stage.tx.init(params),
      renderer=base.renderer_variables)
  return expression_stage.fit_and_evaluate(
      "joint", stage, state, cfg, builder, mesh, ckdir, writer, jax.random.PRNGKey(cfg.seed + 1),
      {"base_checkpoint": base.checkpoint_dir})
