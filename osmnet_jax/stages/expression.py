"""Stage "expression": ExpressionEncoder + landmark head + KeypointPredictor on a FROZEN renderer.

    stage = ExpressionStage(cfg.expression, renderer_model_config)
    state = stage.init_state(rng, renderer_variables, image_size)
    step = stage.make_jit_step(mesh)                 # or stage.make_pmap_step()  (common.py)
    state, metrics = step(state, batch, rng)         # batch: input_pipeline windows (below)
    run_expression(cfg, builder, mesh, workdir, writer)   # train.py stage runner (cfg.expression)

Batch (input_pipeline.make_dataset): frames uint8 [B,T,H,W,3], source uint8 [B,H,W,3],
source_landmarks [B,68,2] and landmarks [B,T,68,2] (crop pixels), mel [B,T,20,80], pose [B,T,6]
(normalised). During training the pose input is the clip's ground-truth pose (teacher forcing);
at generation it comes from the motion stage's sampler.

Objective ([paper: landmark constraint + keypoint-driven rendering]; weights and the distillation
target [ours], all in the config):
  L = w_landmark    * landmark_loss(LM(expr, id, pose), landmarks; mouth_weight)   [-1,1] coords
    + w_kp_value    * |kp_pred - KP(frames)|_1          distillation: the frozen renderer's
    + w_kp_jacobian * |jac_pred - KP_jac(frames)|_1     KPDetector on the true driving frames
    + w_rec         * |G(source, kp_src, kp_pred) - frames|_1   (render_clip; 0 by default: the
                                                        renderer forward+backward on B*T frames
                                                        dominates the CPU step time)
    + w_rec_mouth   * the same inside each true frame's mouth box (stages/joint.py uses both)
The renderer (KPDetector, generator) runs in inference mode and gets no gradient: its variables
ride in the state as ``renderer`` (stop_gradient, no optimizer), so the expression checkpoint is
self-contained for generation. No batch statistics in the trained models (LayerNorm only): jit
over a mesh and pmap with ``lax.pmean`` give the same update.
"""
from __future__ import annotations

import functools
import os
import time
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging

from osmnet_jax import renderer
from osmnet_jax import workdir as workdir_lib
from osmnet_jax.face import geometry as fg
from osmnet_jax.inference import keypoints as keypoints_lib
from osmnet_jax.inference import render as render_lib
from osmnet_jax.losses import landmark_anchors
from osmnet_jax.models import expression as expression_lib
from osmnet_jax.models import keypoint_predictor as kp_lib
from osmnet_jax.runtime.init_jit import init_jit
from osmnet_jax.stages import common

BATCH_KEYS = ("frames", "source", "source_landmarks", "mel", "landmarks", "pose")


@flax.struct.dataclass
class ExpressionState:
  step: jax.Array
  params: Any     # {'expression': ExpressionEncoder params, 'keypoints': KeypointPredictor params}
  opt_state: Any
  renderer: Any   # FROZEN renderer variables {'kp_detector', 'generator'}: {'params','batch_stats'}


class ExpressionStage(common.CompiledSteps):
  """Models, optimizer and step functions of one ``cfg.expression`` on one renderer config."""

  def __init__(self, ecfg, renderer_cfg, dtype=jnp.float32):
    """`dtype`: compute dtype of images/landmarks (float64 only for equivalence tests)."""
    self.cfg = ecfg
    self.rcfg = renderer_cfg
    self.dtype = dtype
    self.encoder = expression_lib.from_config(ecfg)
    self.kp_predictor = kp_lib.from_config(ecfg)
    self.kp_detector = renderer.make_kp_detector(renderer_cfg)  # inference mode

  @functools.cached_property
  def tx(self) -> optax.GradientTransformation:
    """The optimizer (built on first use: forward/predict/animate do not need it)."""
    c = self.cfg
    # Warm-up starts at lr/100 (not 0) so that the very first step already moves the params.
    sched = optax.warmup_cosine_decay_schedule(
        c.lr * 0.01, c.lr, max(1, min(c.warmup_steps, c.num_steps // 2)), max(c.num_steps, 2),
        end_value=c.lr * 0.05)
    return optax.chain(optax.clip_by_global_norm(c.grad_clip), optax.adam(sched))

  # ------------------------------------------------------------------------------------------
  def init_params(self, rng: jax.Array, image_size: int) -> dict:
    t, k = self.cfg.num_frames, self.rcfg.num_kp
    r_enc, r_kp = jax.random.split(rng)
    mel = jnp.zeros((1, t, 20, 80), self.dtype)
    src = jnp.zeros((1, image_size, image_size, 3), self.dtype)
    lm = jnp.zeros((1, fg.NUM_LANDMARKS, 2), self.dtype)
    pose = jnp.zeros((1, t, 6), self.dtype)
    p_enc = init_jit(self.encoder.init)(r_enc, mel, src, lm, pose)["params"]
    kp_src = {"value": jnp.zeros((1, k, 2), self.dtype),
              "jacobian": jnp.zeros((1, k, 2, 2), self.dtype)}
    expr = jnp.zeros((1, t, self.cfg.expression_dim), self.dtype)
    p_kp = init_jit(self.kp_predictor.init)(r_kp, kp_src, expr, pose)["params"]
    return {"expression": p_enc, "keypoints": p_kp}

  def init_state(self, rng: jax.Array, renderer_variables: dict, image_size: int
                 ) -> ExpressionState:
    params = self.init_params(rng, image_size)
    frozen = {k: renderer_variables[k] for k in ("kp_detector", "generator")}
    return ExpressionState(step=jnp.zeros((), jnp.int32), params=params,
                           opt_state=self.tx.init(params), renderer=frozen)

  # ------------------------------------------------------------------------------------------
  def _images(self, batch):
    source = batch["source"].astype(self.dtype) / 255.0  # [B,H,W,3]
    return source, source.shape[1]

  def detect(self, renderer_vars, images):
    """Frozen KPDetector on [N,H,W,3] (or [B,T,H,W,3]) images in [0,1]."""
    lead = images.shape[:-3]
    kp = self.kp_detector.apply(renderer_vars["kp_detector"],
                                images.reshape((-1,) + images.shape[-3:]))
    return jax.tree.map(lambda x: x.reshape(lead + x.shape[1:]), kp)

  def forward(self, params, renderer_vars, batch, train: bool = True) -> dict:
    """Predictions for one batch: landmarks [B,T,68,2] ([-1,1]), kp_src, kp (driving) dict."""
    source, size = self._images(batch)
    src_lm = expression_lib.normalise_landmarks(batch["source_landmarks"].astype(self.dtype), size)
    pose = batch["pose"].astype(self.dtype)
    out = self.encoder.apply({"params": params["expression"]}, batch["mel"].astype(self.dtype),
                             source, src_lm, pose, train=train)
    kp_src = self.detect(renderer_vars, source)  # [B,K,2], [B,K,2,2]
    kp = kp_lib.predict(self.kp_predictor, params["keypoints"], kp_src, out["expression"], pose,
                        self.cfg)
    # The renderer's landmark motion [ours] is driven by the predicted landmarks; the rendered-
    # frame terms reach the landmark head through the spline only with cfg.render_landmark_grad.
    marks = out["landmarks"]
    if not self.cfg.get("render_landmark_grad", False):
      marks = jax.lax.stop_gradient(marks)
    kp_src, kp = keypoints_lib.with_predicted_landmarks(self.rcfg, kp_src, kp,
                                                        batch["source_landmarks"], marks, size)
    return {"landmarks": out["landmarks"], "expression": out["expression"], "kp_src": kp_src,
            "kp": kp, "source": source}

  def kp_targets(self, renderer_vars, frames, pose) -> dict:
    """The predictor's distillation targets [B,T,K,2], [B,T,K,2,2]: the frozen detector's
    keypoints of each frame (kp_target "frame"), or under inplane_pose "geometric" with
    kp_target "canonical" [ours] those of the frame moved to the mean in-plane pose, moved back
    by the frame's exact similarity (models/keypoint_predictor.canonical_frames)."""
    c = self.cfg
    if c.get("kp_target", "frame") == "frame":
      return self.detect(renderer_vars, frames)
    if c.get("inplane_pose", "learned") != "geometric":
      raise ValueError("expression.kp_target='canonical' needs expression.inplane_pose="
                       f"'geometric', got {c.get('inplane_pose', 'learned')!r}")
    mean, std = kp_lib.pose_stats_of(c)
    a, b = kp_lib.inplane_similarity(pose.astype(jnp.float32), mean, std)
    kp = self.detect(renderer_vars, kp_lib.canonical_frames(frames, a, b))
    return kp_lib.move_keypoints(kp, a, b)

  def loss(self, params, renderer_vars, batch):
    """(scalar loss, metrics) on one (local) batch; pure. The renderer gets no gradient."""
    c = self.cfg
    renderer_vars = jax.lax.stop_gradient(renderer_vars)
    out = self.forward(params, renderer_vars, batch)
    size = out["source"].shape[1]
    lm_true = expression_lib.normalise_landmarks(batch["landmarks"].astype(self.dtype), size)
    lm_loss = expression_lib.landmark_loss(out["landmarks"], lm_true, c.mouth_weight)
    frames = batch["frames"].astype(self.dtype) / 255.0  # [B,T,H,W,3]
    kp_true = jax.lax.stop_gradient(self.kp_targets(renderer_vars, frames, batch["pose"]))
    kp_v = jnp.mean(jnp.abs(out["kp"]["value"] - kp_true["value"]))
    kp_j = jnp.mean(jnp.abs(out["kp"]["jacobian"] - kp_true["jacobian"]))
    loss = c.w_landmark * lm_loss + c.w_kp_value * kp_v + c.w_kp_jacobian * kp_j
    metrics = {"landmark_loss": lm_loss, "kp_value_l1": kp_v, "kp_jacobian_l1": kp_j}
    w_mouth = c.get("w_rec_mouth", 0.0)
    if c.w_rec or w_mouth:
      pred = render_lib.render_clip(renderer_vars, self.rcfg, out["source"], out["kp_src"],
                                    out["kp"], c.render_frames_per_call or None)
      rec = jnp.mean(jnp.abs(pred - frames))
      loss = loss + c.w_rec * rec
      metrics["rec_l1"] = rec
      if w_mouth:  # the mouth box of each true frame: [B*T] frames
        flat = lambda x: x.reshape((-1,) + x.shape[2:])
        mouth = landmark_anchors.mouth_loss(flat(pred), flat(frames), flat(batch["landmarks"]),
                                            self.rcfg.train.get("mouth_margin", 0.35))
        loss = loss + w_mouth * mouth
        metrics["rec_mouth_l1"] = mouth
    metrics["loss"] = loss
    metrics["landmark_l1"] = jnp.mean(jnp.abs(out["landmarks"] - lm_true))  # unweighted
    return loss, metrics

  def train_step(self, state: ExpressionState, batch: dict, rng: jax.Array,
                 axis_name: str | None = None, zero1: bool = False):
    """Pure: (state, batch, rng) -> (state, metrics). ``axis_name`` only under pmap.

    ``rng`` is unused today (no dropout/noise); it is part of the shared step signature."""
    del rng
    grad_fn = jax.value_and_grad(self.loss, has_aux=True)
    (_, metrics), grads = grad_fn(state.params, state.renderer, batch)
    params, opt_state, metrics = common.apply_gradients(
        self.tx, state.params, state.opt_state, grads, metrics, axis_name, zero1,
        self.cfg.grad_clip)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  @functools.partial(jax.jit, static_argnums=0)
  def predict(self, params, renderer_vars, batch) -> dict:
    """Eval forward: landmarks in crop pixels [B,T,68,2], predicted and detected driving kp."""
    out = self.forward(params, renderer_vars, batch, train=False)
    size = out["source"].shape[1]
    kp_true = self.detect(renderer_vars, batch["frames"].astype(self.dtype) / 255.0)
    return {"landmarks": expression_lib.denormalise_landmarks(out["landmarks"], size),
            "kp": out["kp"], "kp_true": kp_true, "kp_src": out["kp_src"]}

  @functools.partial(jax.jit, static_argnums=0)
  def animate(self, params, renderer_vars, batch) -> dict:
    """Generation: batch {'source' [B,H,W,3] uint8, 'source_landmarks' [B,68,2] px, 'mel'
    [B,T,20,80], 'pose' [B,T,6] normalised (from the motion stage's sampler)} -> {'frames'
    [B,T,H,W,3] float in [0,1], 'kp' driving keypoints, 'landmarks' [B,T,68,2] px}."""
    out = self.forward(params, renderer_vars, batch, train=False)
    size = out["source"].shape[1]
    frames = render_lib.render_clip(renderer_vars, self.rcfg, out["source"], out["kp_src"],
                                    out["kp"], self.cfg.render_frames_per_call or None)
    return {"frames": frames, "kp": out["kp"],
            "landmarks": expression_lib.denormalise_landmarks(out["landmarks"], size)}


# ----------------------------------------------------------------------------------------------
# Renderer variables and the stage runner.

def resolve_renderer(cfg, workdir: str, image_size: int, renderer_variables: dict | None = None
                     ) -> tuple[dict, ml_collections.ConfigDict, str]:
  """(frozen renderer variables, renderer model config, where they came from).

  ``renderer_variables`` given: those ('argument'), with the model config
  ``stages/renderer.model_config(cfg.renderer)`` (default renderer.tiny_config()). Else, with
  cfg.expression.renderer_source == 'auto', the workdir's renderer when it has one
  ('checkpoint': workdir.load_renderer, trained or converted, with the config saved beside it);
  else ``renderer.init`` with seed cfg.seed + 1 ('init').
  """
  source = cfg.expression.renderer_source
  if source not in ("auto", "init"):
    raise ValueError(f"cfg.expression.renderer_source={source!r}: use 'auto' or 'init'")
  has = (workdir_lib.has_renderer(workdir) or
         os.path.isdir(workdir_lib.checkpoint_dir(workdir, "renderer")))
  if renderer_variables is None and source == "auto" and has:
    variables, mcfg = workdir_lib.load_renderer(workdir)
    return variables, mcfg, "checkpoint"
  from osmnet_jax.stages import renderer as renderer_train

  rc = cfg.get("renderer", None)
  # model_config accepts a bare renderer model config and train.py's cfg.renderer alike.
  mcfg = renderer.tiny_config() if rc is None else renderer_train.model_config(rc)
  if renderer_variables is not None:
    return renderer_variables, mcfg, "argument"
  return renderer.init(jax.random.PRNGKey(cfg.seed + 1), mcfg, image_size, False), mcfg, "init"


def run_expression(cfg, builder, mesh, workdir: str, writer, renderer_variables: dict | None = None
                   ) -> dict:
  """Train cfg.expression on the train split with a frozen renderer; evaluate on held-out clips.

  The renderer (variables and model config) comes from ``resolve_renderer``; the result says
  which source it used (``renderer_source``: argument | checkpoint | init)."""
  from osmnet_jax.stages import renderer as renderer_train

  ecfg = cfg.expression
  size = int(builder.info.features["frames"].shape[1])
  renderer_variables, rcfg, source = resolve_renderer(cfg, workdir, size, renderer_variables)
  rcfg = renderer_train.model_config(rcfg)  # without the renderer stage's own fields
  renderer_variables = jax.device_get(
      {k: renderer_variables[k] for k in ("kp_detector", "generator")})
  logging.info("expression: renderer variables from %s", source)
  ecfg = with_pose_stats(ecfg, builder)
  stage = ExpressionStage(ecfg, rcfg)
  ckdir = workdir_lib.checkpoint_dir(workdir, "expression")
  # What a loader needs to rebuild the restore target.
  common.write_json_once(os.path.join(ckdir, "expression_config.json"), {
      "expression": ecfg.to_dict(), "renderer": rcfg.to_dict(), "image_size": size,
      "renderer_source": source, "parallel": cfg.parallel})
  init_rng, step_rng = jax.random.split(jax.random.PRNGKey(cfg.seed))
  state = stage.init_state(init_rng, renderer_variables, size)
  result = fit_and_evaluate("expression", stage, state, cfg, builder, mesh, ckdir, writer,
                            step_rng, {"renderer_source": source})
  ev = result["eval"]
  logging.info("expression: step %d in %.1f s; held-out mouth-opening corr %.3f, landmark L1 "
               "%.3f px (copy-source %.3f px)", result["step"], result["train_seconds"],
               ev["mouth_open_corr"], ev["landmark_l1_px"], ev["copy_source_landmark_l1_px"])
  return result


def with_pose_stats(ecfg, builder):
  """cfg.expression with the dataset's pose mean/std that ``inplane_pose="geometric"`` needs
  (saved with the checkpoint's expression_config.json, so generation reads the same)."""
  if ecfg.get("inplane_pose", "learned") != "geometric":
    return ecfg
  from osmnet_jax.input import pipeline as input_pipeline  # tf.data: only for training

  mean, std = input_pipeline.pose_stats(builder)
  ecfg = ecfg.copy_and_resolve_references()
  ecfg.pose_mean = tuple(float(x) for x in mean)
  ecfg.pose_std = tuple(float(x) for x in std)
  return ecfg


def fit_and_evaluate(name: str, stage: ExpressionStage, state: ExpressionState, cfg, builder,
                     mesh, ckdir: str, writer, rng: jax.Array, meta: dict) -> dict:
  """The shared tail of the "expression" and "joint" stages: ``state`` trained by
  ``stage.cfg`` on the train split (resuming from ``ckdir``), evaluated on held-out clips
  (stages/expression_eval.py) -> the result, also written once to ckdir/eval.json and, as
  ``<name>_eval/*`` scalars, to TensorBoard. ``meta`` goes into the checkpoints and the result.
  """
  from osmnet_jax.stages import expression_eval

  ecfg = stage.cfg
  make_iterator = common.make_iterator_factory(cfg, builder, mesh, "train", ecfg.batch_size,
                                               ecfg.num_frames, keys=BATCH_KEYS)
  # The frozen renderer stays replicated (every frame's keypoint detection reads it whole).
  state_sh = common.state_layout(stage, cfg, mesh, state)  # FSDP / ZeRO-1 / replicated
  t0 = time.perf_counter()
  state, last = common.fit(
      name=name, train_step=stage.train_step, state=state, mesh=mesh, parallel=cfg.parallel,
      make_iterator=make_iterator, ckdir=ckdir, num_steps=ecfg.num_steps,
      save_every=ecfg.save_every, rng=rng, log_every=ecfg.log_every, writer=writer, meta=meta,
      state_sharding=state_sh, zero1=common.uses_zero1(cfg))
  train_s = time.perf_counter() - t0
  state = jax.device_get(state)
  t1 = time.perf_counter()
  ev = expression_eval.evaluate(stage, state.params, state.renderer, builder,
                                split=ecfg.eval_split, seed=cfg.seed, passes=ecfg.eval_passes,
                                batch=ecfg.eval_batch)
  ev["eval_seconds"] = time.perf_counter() - t1
  result = {"step": int(state.step), "train_seconds": train_s, **meta, "last_metrics": last,
            "checkpoint_dir": ckdir, "eval": ev}
  common.write_json_once(os.path.join(ckdir, "eval.json"), result)
  if writer is not None:
    for k, v in ev.items():
      if isinstance(v, float):
        writer.add_scalar(f"{name}_eval/{k}", v, int(state.step))
  return result
