"""Stage "motion": OSM-Net's motion space + audio mapper, or a pose baseline, as a pure step.

    stage = MotionStage(cfg.motion)                  # cfg.motion.model: osmnet | audio2pose_lstm
    state = stage.init_state(rng)                    #                    | noise_sampler
    step = stage.make_jit_step(mesh)                 # or stage.make_pmap_step()  (common.py)
    state, metrics = step(state, batch, rng)         # batch: {'mel' [B,T,20,80], 'pose' [B,T,6]
                                                     #         (normalised), 'source' [B,H,W,3]}
    run_motion(cfg, builder, mesh, workdir, writer)  # train.py stage runner (cfg.motion)

OSM-Net objective ([ours]; the paper body is not available, every weight is in the config):
  L = w_rec        * |D(Q alpha, r) - pose|_1          reconstruction from the clip's own alpha
    + w_map        * |alpha_hat - sg(alpha)|^2 / |sg(alpha)|^2   the audio mapper regresses
                                                       the encoded alpha (relative MSE)
    + w_rec_mapped * |D_sg(Q alpha_hat, r) - pose|_1   pose from the mapped point; the motion
                                                       space (encoder, bases, decoder) is frozen
                                                       in this term so the unpredictable part of
                                                       the motion cannot collapse the decoder
    + w_alpha      * |alpha|^2                         keeps the coefficient scale bounded
with alpha = E(pose), alpha_hat = A(audio[, source]), r = per-frame audio rhythm features.
After training, ``estimate_sigma`` measures sigma_k = std over train windows of
(alpha - alpha_hat)_k and stores it next to the checkpoint (``sigma.json``); sampling draws
alpha = alpha_hat + U(-1, 1) * diversity * sample_width * sigma (motion_sampling.py).

Baselines: L1 (or L2) regression of the pose; ``noise_sampler`` gets N(0, I) noise drawn per
example from ``fold_in(rng, global example index)``, so jit over a mesh and pmap see the same
noise and give the same update.

The state has no batch statistics (the models use LayerNorm only), so the step is
``(params, opt_state, step)`` in and out; under jit the batch is sharded over the mesh and the
state replicated (donated); under pmap gradients and metrics are ``lax.pmean``-ed over 'batch'.
"""
from __future__ import annotations

import functools
import os
import time
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from osmnet_jax import workdir as workdir_lib
from osmnet_jax.models import motion as motion_models
from osmnet_jax.models import motion_space
from osmnet_jax.runtime.init_jit import init_jit
from osmnet_jax.stages import common

MODELS = motion_models.MODELS


def build_model(mcfg):
  """cfg.motion -> the linen module for ``mcfg.model``."""
  return motion_models.from_config(mcfg)


@flax.struct.dataclass
class MotionState:
  step: jax.Array
  params: Any
  opt_state: Any


def example_noise(rng, batch: int, offset, mcfg) -> jnp.ndarray:
  """noise_sampler input for examples offset .. offset+batch-1 of the global batch."""
  keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(offset + jnp.arange(batch))
  shape = (mcfg.num_frames, mcfg.noise_dim) if mcfg.noise_per_frame else (mcfg.noise_dim,)
  return jax.vmap(lambda k: jax.random.normal(k, shape, jnp.float32))(keys)


def _stop_subtree(params: dict, name: str) -> dict:
  return {**params, name: jax.lax.stop_gradient(params[name])}


class MotionStage(common.CompiledSteps):
  """Model, optimizer and step functions of one ``cfg.motion``."""

  def __init__(self, mcfg):
    self.cfg = mcfg
    self.model = build_model(mcfg)

  @functools.cached_property
  def tx(self) -> optax.GradientTransformation:
    """The optimizer (built on first use: sampling does not need it)."""
    c = self.cfg
    warmup = max(1, min(c.warmup_steps, c.num_steps // 2))
    # Linear warmup from lr / warmup (the first step already moves), cosine decay to 5 %.
    sched = optax.warmup_cosine_decay_schedule(
        c.lr / warmup, c.lr, warmup, max(c.num_steps, 2), end_value=c.lr * 0.05)
    return optax.chain(optax.clip_by_global_norm(c.grad_clip), optax.adam(sched))

  @property
  def uses_source(self) -> bool:
    return self.cfg.identity == "image"

  def batch_keys(self) -> tuple[str, ...]:
    return ("mel", "pose", "source") if self.uses_source else ("mel", "pose")

  # ------------------------------------------------------------------------------------------
  def init_params(self, rng: jax.Array) -> dict:
    c = self.cfg
    if c.model == "osmnet":
      return motion_space.init_variables(self.model, rng, c.image_size)["params"]
    t = c.num_frames
    mel = jnp.zeros((1, t, 20, 80), jnp.float32)
    noise = example_noise(rng, 1, 0, c) if c.model == "noise_sampler" else None
    src = jnp.zeros((1, c.image_size, c.image_size, 3), jnp.uint8) if self.uses_source else None
    return self.model.init(rng, mel, noise, src)["params"]

  def init_state(self, rng: jax.Array) -> MotionState:
    """Fresh state; one jitted program (op-by-op flax init compiles every op separately),
    compiled cheaply on CPU (``init_jit``: same values)."""

    def init(rng):
      params = self.init_params(rng)
      return MotionState(step=jnp.zeros((), jnp.int32), params=params,
                         opt_state=self.tx.init(params))

    return init_jit(init)(rng)

  # ------------------------------------------------------------------------------------------
  def loss(self, params, batch, rng, offset=0, axis_name=None):
    """(scalar loss, metrics) on one (local) batch; pure. ``axis_name``: pmap axis, for the
    one batch statistic in the loss (the alpha scale of the relative mapping loss)."""
    c = self.cfg
    pose = batch["pose"]  # [B,T,6] normalised
    source = batch.get("source") if self.uses_source else None
    if c.model == "osmnet":
      out = self.model.apply({"params": params}, batch["mel"], pose, source, train=True)
      rec = jnp.mean(jnp.abs(out["recon"] - pose))
      alpha_sg = jax.lax.stop_gradient(out["alpha"])
      # Relative to the coefficients' scale (which the encoder is free to choose): ~1 when the
      # audio explains nothing, 0 when it explains alpha exactly [ours].
      scale = jnp.mean(alpha_sg ** 2)
      if axis_name is not None:  # the global batch's scale, as under jit
        scale = jax.lax.pmean(scale, axis_name)
      mapped = jnp.mean((out["alpha_hat"] - alpha_sg) ** 2) / (scale + 1e-6)
      frozen = {"params": _stop_subtree(params, "space")}
      pose_m = self.model.apply(frozen, out["alpha_hat"], out["rhythm"],
                                method=motion_space.OSMNetMotion.decode)
      rec_m = jnp.mean(jnp.abs(pose_m - pose))
      a2 = jnp.mean(out["alpha"] ** 2)
      loss = c.w_rec * rec + c.w_map * mapped + c.w_rec_mapped * rec_m + c.w_alpha * a2
      q = self.model.apply({"params": params}, method=motion_space.OSMNetMotion.bases)
      orth = jnp.max(jnp.abs(q.T @ q - jnp.eye(q.shape[1])))
      return loss, {"loss": loss, "rec_l1": rec, "map_mse": mapped, "rec_mapped_l1": rec_m,
                    "alpha_rms": jnp.sqrt(a2), "q_orth_err": orth}
    noise = None
    if c.model == "noise_sampler":
      noise = example_noise(rng, pose.shape[0], offset, c)
    pred = self.model.apply({"params": params}, batch["mel"], noise, source, train=True)
    err = pred - pose
    l1 = jnp.mean(jnp.abs(err))
    l2 = jnp.mean(err ** 2)
    loss = l1 if c.loss == "l1" else l2
    return loss, {"loss": loss, "l1": l1, "mse": l2}

  def train_step(self, state: MotionState, batch: dict, rng: jax.Array,
                 axis_name: str | None = None, zero1: bool = False):
    """Pure: (state, batch, rng) -> (state, metrics). ``axis_name`` only under pmap."""
    offset = 0
    if axis_name is not None:  # global index of this device's first example (noise keys)
      offset = jax.lax.axis_index(axis_name) * batch["pose"].shape[0]
    grad_fn = jax.value_and_grad(self.loss, has_aux=True)
    (_, metrics), grads = grad_fn(state.params, batch, rng, offset, axis_name)
    params, opt_state, metrics = common.apply_gradients(
        self.tx, state.params, state.opt_state, grads, metrics, axis_name, zero1,
        self.cfg.grad_clip)
    return MotionState(step=state.step + 1, params=params, opt_state=opt_state), metrics


# ----------------------------------------------------------------------------------------------
# Residual spread sigma_k and the stage runner.

def splits(mcfg) -> tuple[str, str]:
  """(training split, sigma split): 'train' for both unless sigma_holdout_pct > 0."""
  h = int(mcfg.get("sigma_holdout_pct", 0))
  if not 0 <= h < 100:
    raise ValueError(f"sigma_holdout_pct={h}: use 0 (all train clips) .. 99")
  return ("train", "train") if h == 0 else (f"train[:{100 - h}%]", f"train[{100 - h}%:]")


def _train_windows(builder, mcfg, seed: int, batch: int, split: str = "train"):
  """One pass over ``split``: numpy batches of random T-frame windows (no shuffling)."""
  import tensorflow_datasets as tfds

  from osmnet_jax.input import pipeline as input_pipeline

  keys = ("mel", "pose", "source") if mcfg.identity == "image" else ("mel", "pose")
  ds = input_pipeline.make_dataset(builder, split, batch, mcfg.num_frames, seed=seed,
                                   shuffle_buffer=0, repeat=False, drop_remainder=False)
  ds = ds.map(lambda b: {k: b[k] for k in keys})
  return tfds.as_numpy(ds)


def estimate_sigma(stage: MotionStage, params, builder, seed: int = 0, passes: int = 4,
                   batch: int = 64) -> dict:
  """Residual statistics on train windows.

  osmnet: sigma_k = std over windows of (alpha - alpha_hat)_k [M] (+ its mean, for diagnosis).
  baselines: per-axis std of the pose residual (diagnostic only; they do not sample with it).
  """
  c = stage.cfg
  model = stage.model

  @jax.jit
  def residual(params, b):
    src = b.get("source")
    if c.model == "osmnet":
      out = model.apply({"params": params}, b["mel"], b["pose"], src)
      return out["alpha"] - out["alpha_hat"]  # [B, M]
    noise = None
    if c.model == "noise_sampler":
      noise = example_noise(jax.random.PRNGKey(0), b["pose"].shape[0], 0, c)
    return (model.apply({"params": params}, b["mel"], noise, src) - b["pose"]).reshape(-1, 6)

  res = []
  for p in range(passes):
    for b in _train_windows(builder, c, seed + 7919 * (p + 1), batch, splits(c)[1]):
      res.append(np.asarray(residual(params, b)))
  if not res:
    raise ValueError(f"no windows in the sigma split {splits(c)[1]!r} of {builder.info.full_name}: "
                     "lower config.motion.sigma_holdout_pct or num_frames, or use more clips")
  res = np.concatenate(res, 0).astype(np.float64)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    res = np.asarray(multihost_utils.process_allgather(res, tiled=True))
  key = "sigma" if c.model == "osmnet" else "pose_residual_std"
  return {key: res.std(0).tolist(), "residual_mean": res.mean(0).tolist(),
          "num_windows": int(res.shape[0] if c.model == "osmnet" else res.shape[0] // c.num_frames)}


def run_motion(cfg, builder, mesh, workdir: str, writer) -> dict:
  """Train ``cfg.motion.model`` on the train split, then store its residual spread."""
  mcfg = cfg.motion
  stage = MotionStage(mcfg)
  ckdir = workdir_lib.motion_dir(workdir, mcfg.model)
  # What load_motion needs to rebuild the restore target.
  common.write_json_once(os.path.join(ckdir, "motion_config.json"),
                         {**mcfg.to_dict(), "parallel": cfg.parallel})
  init_rng, step_rng = jax.random.split(jax.random.PRNGKey(cfg.seed))
  make_iterator = common.make_iterator_factory(
      cfg, builder, mesh, splits(mcfg)[0], mcfg.batch_size, mcfg.num_frames,
      keys=stage.batch_keys(), augment=False)  # frames/landmarks never reach the devices
  name = os.path.basename(ckdir)
  state = stage.init_state(init_rng)
  state_sh = common.state_layout(stage, cfg, mesh, state)  # FSDP / ZeRO-1 / replicated
  t0 = time.perf_counter()
  state, last = common.fit(
      name=name, train_step=stage.train_step, state=state, mesh=mesh,
      parallel=cfg.parallel, make_iterator=make_iterator, ckdir=ckdir,
      num_steps=mcfg.num_steps, save_every=mcfg.save_every, rng=step_rng,
      log_every=mcfg.log_every, writer=writer, meta={"model": mcfg.model},
      state_sharding=state_sh, zero1=common.uses_zero1(cfg))
  train_s = time.perf_counter() - t0
  params = jax.device_get(state.params)
  stats = estimate_sigma(stage, params, builder, seed=cfg.seed, passes=mcfg.sigma_passes)
  stats.update(step=int(state.step), model=mcfg.model, split=splits(mcfg)[1])
  common.write_json_once(os.path.join(ckdir, "sigma.json"), stats)
  logging.info("%s: trained to step %d in %.1f s; %s", name, int(state.step), train_s,
               {k: v for k, v in stats.items() if k in ("sigma", "pose_residual_std")})
  return {"model": mcfg.model, "step": int(state.step), "train_seconds": train_s,
          "last_metrics": last, "checkpoint_dir": ckdir, **stats}
