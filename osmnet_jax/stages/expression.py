"""Stage "expression": ExpressionEncoder + landmark head + KeypointPredictor on a FROZEN renderer.

    stage = ExpressionStage(expression_config(), renderer.tiny_config())
    state = stage.init_state(rng, renderer_variables, image_size)
    step = stage.make_jit_step(mesh)                 # or stage.make_pmap_step()
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
The renderer (KPDetector, generator) runs in inference mode and gets no gradient: its variables
ride in the state as ``renderer`` (stop_gradient, no optimizer), so the expression checkpoint is
self-contained for generation. No batch statistics in the trained models (LayerNorm only): jit
over a mesh and pmap with ``lax.pmean`` give the same update.
"""
from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from osmnet_jax.face import geometry as fg
from osmnet_jax import renderer
from osmnet_jax import workdir as workdir_lib
from osmnet_jax.runtime import sharding as sharding_lib
from osmnet_jax.runtime.init_jit import init_jit
from osmnet_jax.models import expression as expression_lib
from osmnet_jax.inference import render as render_lib
from osmnet_jax.models import keypoint_predictor as kp_lib

BATCH_KEYS = ("frames", "source", "source_landmarks", "mel", "landmarks", "pose")


def expression_config() -> ml_collections.ConfigDict:
  """Defaults of the expression stage (``cfg.expression``); sizes CPU-friendly, all [ours]."""
  c = ml_collections.ConfigDict()
  c.num_frames = 8              # window length T (the temporal convs see the whole window)
  c.batch_size = 8              # global batch of windows
  c.num_steps = 2000
  c.lr = 1e-3
  c.warmup_steps = 100
  c.grad_clip = 1.0
  c.log_every = 50
  c.save_every = 500
  # ExpressionEncoder.
  c.expression_dim = 64         # E
  c.audio_dim = 64
  c.audio_channels = (8, 16, 32)
  c.identity = "image+landmarks"  # image | landmarks | image+landmarks
  c.identity_dim = 64
  c.identity_channels = (16, 32, 64)
  c.temporal_layers = 2
  c.temporal_kernel = 3
  c.landmark_hidden = 128
  c.landmark_depth = 2
  c.landmark_residual = True    # landmarks = source landmarks + predicted offset
  c.landmark_use_pose = True    # the head also sees the frame's pose (see models/expression.py)
  # KeypointPredictor.
  c.kp_hidden = 128
  c.kp_temporal_layers = 1
  c.kp_head_depth = 2
  c.kp_jacobian = True
  # Loss weights.
  c.w_landmark = 1.0
  c.mouth_weight = 5.0          # weight of iBUG 48-67 in the landmark L1 (others 1)
  c.w_kp_value = 1.0
  c.w_kp_jacobian = 0.5
  c.w_rec = 0.0                 # rendered-frame L1; >0 renders B*T frames per step
  c.render_frames_per_call = 0  # 0: all B*T frames in one generator call; n: chunks of n
  # Renderer: "auto" = the renderer stage's checkpoint in the workdir if present, else a
  # randomly initialised renderer (cfg.renderer or renderer.tiny_config()); "init" = always init.
  c.renderer_source = "auto"
  # Held-out evaluation (test split): `eval_passes` passes of random T-frame windows.
  c.eval_split = "test"
  c.eval_passes = 4
  c.eval_batch = 16
  return c


@flax.struct.dataclass
class ExpressionState:
  step: jax.Array
  params: Any      # {'expression': ExpressionEncoder params, 'keypoints': KeypointPredictor params}
  opt_state: Any
  renderer: Any    # FROZEN renderer variables {'kp_detector', 'generator'}: {'params','batch_stats'}


class ExpressionStage:
  """Models, optimizer and step functions of one ``cfg.expression`` on one renderer config."""

  def __init__(self, ecfg, renderer_cfg, dtype=jnp.float32):
    """`dtype`: compute dtype of images/landmarks (float64 only for equivalence tests)."""
    self.cfg = ecfg
    self.rcfg = renderer_cfg
    self.dtype = dtype
    self.encoder = expression_lib.from_config(ecfg)
    self.kp_predictor = kp_lib.from_config(ecfg)
    self.kp_detector = renderer.make_kp_detector(renderer_cfg)  # inference mode
    # Warm-up starts at lr/100 (not 0) so that the very first step already moves the params.
    sched = optax.warmup_cosine_decay_schedule(
        ecfg.lr * 0.01, ecfg.lr, max(1, min(ecfg.warmup_steps, ecfg.num_steps // 2)),
        max(ecfg.num_steps, 2), end_value=ecfg.lr * 0.05)
    self.tx = optax.chain(optax.clip_by_global_norm(ecfg.grad_clip), optax.adam(sched))

  # ------------------------------------------------------------------------------------------
  def init_params(self, rng: jax.Array, image_size: int) -> dict:
    t, k = self.cfg.num_frames, self.rcfg.num_kp
    r_enc, r_kp = jax.random.split(rng)
    mel = jnp.zeros((1, t, 20, 80), self.dtype)
    src = jnp.zeros((1, image_size, image_size, 3), self.dtype)
    lm = jnp.zeros((1, fg.NUM_LANDMARKS, 2), self.dtype)
    pose = jnp.zeros((1, t, 6), self.dtype)
    p_enc = init_jit(self.encoder.init)(r_enc, mel, src, lm, pose)["params"]
    kp_src = {"value": jnp.zeros((1, k, 2), self.dtype), "jacobian": jnp.zeros((1, k, 2, 2), self.dtype)}
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
    kp = self.kp_detector.apply(renderer_vars["kp_detector"], images.reshape((-1,) + images.shape[-3:]))
    return jax.tree.map(lambda x: x.reshape(lead + x.shape[1:]), kp)

  def forward(self, params, renderer_vars, batch, train: bool = True) -> dict:
    """Predictions for one batch: landmarks [B,T,68,2] ([-1,1]), kp_src, kp (driving) dict."""
    source, size = self._images(batch)
    src_lm = expression_lib.normalise_landmarks(batch["source_landmarks"].astype(self.dtype), size)
    pose = batch["pose"].astype(self.dtype)
    out = self.encoder.apply({"params": params["expression"]}, batch["mel"].astype(self.dtype),
                             source, src_lm, pose, train=train)
    kp_src = self.detect(renderer_vars, source)  # [B,K,2], [B,K,2,2]
    kp = self.kp_predictor.apply({"params": params["keypoints"]}, kp_src, out["expression"], pose)
    return {"landmarks": out["landmarks"], "expression": out["expression"], "kp_src": kp_src,
            "kp": kp, "source": source}

  def loss(self, params, renderer_vars, batch):
    """(scalar loss, metrics) on one (local) batch; pure. The renderer gets no gradient."""
    c = self.cfg
    renderer_vars = jax.lax.stop_gradient(renderer_vars)
    out = self.forward(params, renderer_vars, batch)
    size = out["source"].shape[1]
    lm_true = expression_lib.normalise_landmarks(batch["landmarks"].astype(self.dtype), size)
    lm_loss = expression_lib.landmark_loss(out["landmarks"], lm_true, c.mouth_weight)
    frames = batch["frames"].astype(self.dtype) / 255.0  # [B,T,H,W,3]
    kp_true = jax.lax.stop_gradient(self.detect(renderer_vars, frames))  # [B,T,K,2], [B,T,K,2,2]
    kp_v = jnp.mean(jnp.abs(out["kp"]["value"] - kp_true["value"]))
    kp_j = jnp.mean(jnp.abs(out["kp"]["jacobian"] - kp_true["jacobian"]))
    loss = c.w_landmark * lm_loss + c.w_kp_value * kp_v + c.w_kp_jacobian * kp_j
    metrics = {"landmark_loss": lm_loss, "kp_value_l1": kp_v, "kp_jacobian_l1": kp_j}
    if c.w_rec:
      pred = render_lib.render_clip(renderer_vars, self.rcfg, out["source"], out["kp_src"],
                                    out["kp"], c.render_frames_per_call or None)
      rec = jnp.mean(jnp.abs(pred - frames))
      loss = loss + c.w_rec * rec
      metrics["rec_l1"] = rec
    metrics["loss"] = loss
    metrics["landmark_l1"] = jnp.mean(jnp.abs(out["landmarks"] - lm_true))  # unweighted
    return loss, metrics

  def train_step(self, state: ExpressionState, batch: dict, rng: jax.Array,
                 axis_name: str | None = None):
    """Pure: (state, batch, rng) -> (state, metrics). ``axis_name`` only under pmap.

    ``rng`` is unused today (no dropout/noise); it is part of the shared step signature."""
    del rng
    grad_fn = jax.value_and_grad(self.loss, has_aux=True)
    (_, metrics), grads = grad_fn(state.params, state.renderer, batch)
    if axis_name is not None:
      grads = jax.lax.pmean(grads, axis_name)
      metrics = jax.lax.pmean(metrics, axis_name)
    metrics["grad_norm"] = optax.tree.norm(grads)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  def make_jit_step(self, mesh):
    """jit over ``mesh``: state replicated and donated, batch sharded on the batch axes."""
    rep = sharding_lib.replicated(mesh)
    return jax.jit(self.train_step,
                   in_shardings=(rep, sharding_lib.batch_sharding(mesh), rep),
                   out_shardings=(rep, rep), donate_argnums=0)

  def make_pmap_step(self):
    """pmap over local devices (axis 'batch'): state with a leading device axis (``replicate``),
    batch [n_dev, B/n_dev, ...], one rng shared by all devices."""
    return jax.pmap(functools.partial(self.train_step, axis_name=sharding_lib.PMAP_AXIS),
                    axis_name=sharding_lib.PMAP_AXIS, in_axes=(0, 0, None), donate_argnums=0)

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
# Held-out evaluation.

def evaluate(stage: ExpressionStage, params, renderer_vars, builder, split: str = "test",
             seed: int = 0, passes: int = 4, batch: int = 16) -> dict:
  """Predicted vs true landmarks on ``split`` windows (teacher-forced pose).

  Returns mouth_open_corr (Pearson over all frames between face_geometry.mouth_opening of the
  predicted and the true landmarks), mouth_open_std_ratio (pred std / true std: 0 means a mouth
  that never moves), landmark L1 ([-1,1] units and pixels), mouth L1 (pixels), lmd_mouth
  (metrics.lip_sync), the copy-source baseline (source landmarks as every frame's prediction),
  and keypoint L1 vs the frozen detector on the true frames (and its copy-source baseline).
  Control: mouth_open_corr_shuffled_audio predicts every window with the mel of another window
  of the batch (rolled by one); if the lip motion comes from the audio it falls towards 0.
  """
  import tensorflow_datasets as tfds

  from osmnet_jax.input import pipeline as input_pipeline
  from osmnet_jax.metrics import lip_sync

  t = stage.cfg.num_frames
  pred, true, src, kp_err, kp_src_err, jac_err, shuf = [], [], [], [], [], [], []
  for p in range(passes):
    ds = input_pipeline.make_dataset(builder, split, batch, t, seed=seed + 104729 * (p + 1),
                                     shuffle_buffer=0, repeat=False, drop_remainder=False,
                                     process_index=0, process_count=1)
    for b in tfds.as_numpy(ds):
      b = {k: b[k] for k in BATCH_KEYS}
      out = jax.device_get(stage.predict(params, renderer_vars, b))
      pred.append(np.asarray(out["landmarks"], np.float64))
      rolled = {**b, "mel": np.roll(b["mel"], 1, axis=0)}
      shuf.append(np.asarray(stage.predict(params, renderer_vars, rolled)["landmarks"], np.float64))
      true.append(b["landmarks"].astype(np.float64))
      src.append(np.broadcast_to(b["source_landmarks"][:, None], b["landmarks"].shape))
      kv, kt = out["kp"]["value"], out["kp_true"]["value"]
      kp_err.append(np.abs(kv - kt).mean((2, 3)).ravel())
      kp_src_err.append(np.abs(out["kp_src"]["value"][:, None] - kt).mean((2, 3)).ravel())
      jac_err.append(np.abs(out["kp"]["jacobian"] - out["kp_true"]["jacobian"]).mean((2, 3, 4))
                     .ravel())
  if not pred:
    raise ValueError(f"split {split!r} has no clip of at least {t} frames")
  size = builder.info.features["frames"].shape[1]
  pred = np.concatenate([x.reshape(-1, 68, 2) for x in pred])
  true = np.concatenate([x.reshape(-1, 68, 2) for x in true])
  src = np.concatenate([np.asarray(x, np.float64).reshape(-1, 68, 2) for x in src])
  shuf = np.concatenate([x.reshape(-1, 68, 2) for x in shuf])
  mo_p, mo_t = fg.mouth_opening(pred), fg.mouth_opening(true)
  to_norm = 2.0 / size
  return {
      "split": split, "num_frames": int(pred.shape[0]), "image_size": int(size),
      "mouth_open_corr": lip_sync.pearson(mo_p, mo_t),
      "mouth_open_std_ratio": float(mo_p.std() / max(mo_t.std(), 1e-12)),
      "mouth_open_corr_shuffled_audio": lip_sync.pearson(fg.mouth_opening(shuf), mo_t),
      "landmark_l1": float(np.abs(pred - true).mean() * to_norm),
      "landmark_l1_px": float(np.abs(pred - true).mean()),
      "mouth_l1_px": float(np.abs(pred - true)[:, fg.MOUTH].mean()),
      "lmd_mouth_px": lip_sync.lmd_mouth(pred, true),
      "copy_source_landmark_l1_px": float(np.abs(src - true).mean()),
      "copy_source_mouth_l1_px": float(np.abs(src - true)[:, fg.MOUTH].mean()),
      "copy_source_lmd_mouth_px": lip_sync.lmd_mouth(src, true),
      "kp_value_l1": float(np.concatenate(kp_err).mean()),
      "kp_jacobian_l1": float(np.concatenate(jac_err).mean()),
      "copy_source_kp_value_l1": float(np.concatenate(kp_src_err).mean()),
  }


# ----------------------------------------------------------------------------------------------
# Renderer variables and the stage runner.

def resolve_renderer(cfg, workdir: str, image_size: int, renderer_variables: dict | None = None
                     ) -> tuple[dict, ml_collections.ConfigDict, str]:
  """(frozen renderer variables, renderer model config, where they came from).

  ``renderer_variables`` given: those ('argument'), with the model config ``cfg.renderer`` (a
  renderer model config with ``num_kp``, or train.py's renderer stage config resolved by
  stages/renderer.model_config; default renderer.tiny_config()). Else, with
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
  rc = cfg.get("renderer", None)
  if rc is None:
    mcfg = renderer.tiny_config()
  elif "num_kp" in rc:
    mcfg = rc
  else:
    from osmnet_jax.stages import renderer as renderer_train

    mcfg = renderer_train.model_config(rc)
  if renderer_variables is not None:
    return renderer_variables, mcfg, "argument"
  return renderer.init(jax.random.PRNGKey(cfg.seed + 1), mcfg, image_size, False), mcfg, "init"


def run_expression(cfg, builder, mesh, workdir: str, writer, renderer_variables: dict | None = None
                   ) -> dict:
  """Train cfg.expression on the train split with a frozen renderer; evaluate on held-out clips.

  The renderer (variables and model config) comes from ``resolve_renderer``; the result says
  which source it used (``renderer_source``: argument | checkpoint | init)."""
  from osmnet_jax import checkpointing
  from osmnet_jax.input import pipeline as input_pipeline
  from osmnet_jax.stages import loop as train_loop

  ecfg = cfg.expression
  size = int(builder.info.features["frames"].shape[1])
  renderer_variables, rcfg, source = resolve_renderer(cfg, workdir, size, renderer_variables)
  renderer_variables = jax.device_get(
      {k: renderer_variables[k] for k in ("kp_detector", "generator")})
  logging.info("expression: renderer variables from %s", source)

  stage = ExpressionStage(ecfg, rcfg)
  ckdir = workdir_lib.checkpoint_dir(workdir, "expression")
  os.makedirs(ckdir, exist_ok=True)
  parallel = cfg.get("parallel", "jit")
  if jax.process_index() == 0:  # what a loader needs to rebuild the restore target
    with open(os.path.join(ckdir, "expression_config.json"), "w") as f:
      json.dump({"expression": ecfg.to_dict(), "renderer": rcfg.to_dict(), "image_size": size,
                 "renderer_source": source, "parallel": parallel}, f, indent=2)
  per_process = sharding_lib.check_batch_size(ecfg.batch_size, mesh)
  init_rng, step_rng = jax.random.split(jax.random.PRNGKey(cfg.seed))
  state = stage.init_state(init_rng, renderer_variables, size)
  if parallel == "pmap":
    state = sharding_lib.replicate(state)
    step_fn = stage.make_pmap_step()
  else:
    state = jax.device_put(state, sharding_lib.replicated(mesh))
    step_fn = stage.make_jit_step(mesh)
  data_cfg = cfg.get("data", ml_collections.ConfigDict())

  def make_iterator(start_step):
    ds = input_pipeline.make_dataset(
        builder, "train", per_process, ecfg.num_frames, seed=cfg.seed, start_step=start_step,
        shuffle_buffer=data_cfg.get("shuffle_buffer", 256),
        augment=tuple(data_cfg.get("augment", ())))
    ds = ds.map(lambda b: {k: b[k] for k in BATCH_KEYS})
    return input_pipeline.DeviceIterator(ds, mesh, layout=parallel,
                                         prefetch=data_cfg.get("prefetch", 2),
                                         start_step=start_step)

  ck = checkpointing.Checkpointer(ckdir, save_every=ecfg.save_every)
  t0 = time.perf_counter()
  state, last = train_loop.run(
      name="expression", state=state, step_fn=step_fn, make_iterator=make_iterator,
      checkpointer=ck, num_steps=ecfg.num_steps, rng=step_rng, log_every=ecfg.log_every,
      writer=writer, meta={"renderer_source": source},
      # Checkpoints hold the unreplicated state whichever way the run trained.
      export_state=sharding_lib.unreplicate if parallel == "pmap" else lambda s: s,
      import_state=sharding_lib.replicate if parallel == "pmap" else lambda s: s)
  train_s = time.perf_counter() - t0
  ck.close()
  if parallel == "pmap":
    state = sharding_lib.unreplicate(state)
  state = jax.device_get(state)
  t1 = time.perf_counter()
  ev = evaluate(stage, state.params, state.renderer, builder, split=ecfg.eval_split,
                seed=cfg.seed, passes=ecfg.eval_passes, batch=ecfg.eval_batch)
  ev["eval_seconds"] = time.perf_counter() - t1
  result = {"step": int(state.step), "train_seconds": train_s, "renderer_source": source,
            "last_metrics": last, "checkpoint_dir": ckdir, "eval": ev}
  if jax.process_index() == 0:
    with open(os.path.join(ckdir, "eval.json"), "w") as f:
      json.dump(result, f, indent=2)
    if writer is not None:
      for k, v in ev.items():
        if isinstance(v, float):
          writer.add_scalar(f"expression_eval/{k}", v, int(state.step))
  logging.info("expression: step %d in %.1f s; held-out mouth-opening corr %.3f, landmark L1 "
               "%.3f px (copy-source %.3f px)", int(state.step), train_s, ev["mouth_open_corr"],
               ev["landmark_l1_px"], ev["copy_source_landmark_l1_px"])
  return result


def main(argv=None) -> dict:
  """Standalone run of this stage (before train.py wires it), e.g.

    python -m osmnet_jax.stages.expression --workdir /tmp/expr --data_dir /tmp/tfds_expr \\
        --set num_steps=600 --set batch_size=8

  Data: synth_talk ``--builder_config`` in ``--data_dir`` (built if missing); renderer:
  renderer.tiny_config() (from ``WORKDIR/checkpoints/renderer`` when present, else initialised).
  ``--set key=value`` overrides cfg.expression fields (values are Python literals).
  Prints the result (train time, last metrics, held-out evaluation) as JSON.
  """
  import argparse
  import ast

  from osmnet_jax.input import datasets

  p = argparse.ArgumentParser(description=main.__doc__.split("\n")[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--data_dir", default="")
  p.add_argument("--builder_config", default="64px")
  p.add_argument("--parallel", default="jit", choices=("jit", "pmap"))
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  args = p.parse_args(argv)
  cfg = ml_collections.ConfigDict()
  cfg.seed = args.seed
  cfg.parallel = args.parallel
  cfg.renderer = renderer.tiny_config()
  cfg.data = ml_collections.ConfigDict(dict(name="synth_talk", builder_config=args.builder_config,
                                            data_dir=args.data_dir, shuffle_buffer=256,
                                            prefetch=2, augment=()))
  cfg.expression = expression_config()
  for item in args.set:
    key, value = item.split("=", 1)
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      pass  # a bare string
    cfg.expression[key] = value
  logging.set_verbosity(logging.INFO)
  builder = datasets.get_builder(cfg.data)
  mesh = sharding_lib.make_mesh()
  os.makedirs(args.workdir, exist_ok=True)
  result = run_expression(cfg, builder, mesh, args.workdir, None)
  print(json.dumps(result, indent=2))
  return result


if __name__ == "__main__":
  main()
