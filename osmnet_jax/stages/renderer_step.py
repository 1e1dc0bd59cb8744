"""Stage A training library: FOMM's renderer objective as a pure train step.

    stage = RendererStage(cfg)                       # cfg: renderer.vox256_config() / tiny_config()
    state = stage.init_state(rng, image_size)
    step = stage.make_jit_step(mesh)                 # or stage.make_pmap_step()  (common.py)
    state, metrics = step(state, batch, rng)         # batch: {'source', 'driving'} uint8 [B,H,W,3]

One step follows FOMM's `GeneratorFullModel` (+ `DiscriminatorFullModel` when the GAN is on):
  kp_src = KP(source); kp_drv = KP(driving); pred = G(source, kp_drv, kp_src)
  loss = perceptual pyramid(pred, driving) [+ generator GAN + feature matching]
         + equivariance(KP(T(driving)), T) ;  Adam(2e-4, 0.5, 0.999) on KP and G jointly.
BatchNorm runs in training mode; the keypoint detector's running statistics are updated by its
three calls in order (source, driving, transformed) as in torch. Under `jax.jit` with a sharded
batch, batch statistics are global automatically; under `jax.pmap` the step is built with
axis_name='batch' so BatchNorm and gradients are averaged over devices (`lax.pmean`).

Deviation (ours): in the generator's GAN term the discriminator runs with frozen spectral-norm
vectors (torch advances them in that pass too); they advance in the discriminator step.
"""

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from osmnet_jax import renderer
from osmnet_jax.losses import equivariance, gan, landmark_anchors, perceptual
from osmnet_jax.runtime import zero1 as zero1_lib
from osmnet_jax.stages import common

GENERATOR_GROUPS = ("kp_detector", "generator")  # trained jointly by one loss
# Loss weights of the terms that need the batch's landmarks (losses/landmark_anchors.py).
LANDMARK_TERMS = ("keypoint_anchor", "keypoint_motion", "flow_anchor", "mask_background",
                  "mask_anchor", "mouth", "heatmap_anchor")
# Every keypoint/landmark term that is ours, not FOMM's: the FOMM configs set all of them to 0
# (heatmap_peak needs the landmarks only for its channel choice, so it is not a LANDMARK_TERM).
OURS_KEYPOINT_TERMS = (*LANDMARK_TERMS, "heatmap_peak")


@flax.struct.dataclass
class RendererState:
  """Everything that changes during training (plus the frozen perceptual backbone)."""

  step: jax.Array
  params: dict  # {'kp_detector', 'generator'[, 'discriminator']}
  batch_stats: dict  # same keys (the discriminator's holds spectral-norm vectors)
  opt_state: dict  # one optax state per group
  loss_params: dict  # frozen VGG variables for the perceptual loss


def _adam(lr: float, tcfg) -> optax.GradientTransformation:
  """Adam(lr, b1, b2) with MultiStepLR: lr * gamma^(number of milestones passed)."""
  milestones = tuple(int(m) for m in tcfg.get("lr_milestones", ()))
  sched = optax.piecewise_constant_schedule(lr, {m: tcfg.get("lr_gamma", 0.1) for m in milestones})
  return optax.adam(sched, b1=tcfg.b1, b2=tcfg.b2, eps=1e-8)


class RendererStage(common.CompiledSteps):
  """Builds the modules, optimizers and step functions for one renderer config."""

  def __init__(self, cfg, backbone: tuple[Any, dict] | None = None, dtype=jnp.float32):
    """`backbone`: optional (VGG module, variables) overriding cfg.train.perceptual_backbone.
    `dtype`: the images' compute dtype (float64 only for equivalence tests under jax x64)."""
    self.cfg = cfg
    self.dtype = dtype
    t = cfg.train
    self.use_gan = (bool(cfg.discriminator.get("enabled", False))
                    and t.loss_weights.generator_gan != 0)
    self.txs = {
        "kp_detector": _adam(t.lr_kp_detector, t),
        "generator": _adam(t.lr_generator, t),
    }
    if self.use_gan:
      self.txs["discriminator"] = _adam(t.lr_discriminator, t)
    n_layers = len(t.loss_weights.perceptual)
    if backbone is None and n_layers and sum(t.loss_weights.perceptual):
      backbone = perceptual.make_backbone(t.perceptual_backbone, n_layers, t.get("vgg19_path", ""))
    self.vgg, self._vgg_vars = backbone if backbone is not None else (None, {})
    vgg_dtype = renderer.compute_dtype(cfg)
    if self.vgg is not None and vgg_dtype is not None and self.vgg.dtype is None:
      # The frozen backbone computes in the renderer's dtype: in float32 it was about half of
      # the vox256 step's convolutions, all in float32 (BENCHMARKS.md "The perceptual VGG in
      # bf16, and TPU pooling").
      self.vgg = self.vgg.clone(dtype=vgg_dtype)

  # --------------------------------------------------------------------------------------------
  def init_state(self, rng: jax.Array, image_size: int) -> RendererState:
    """Fresh random renderer variables and optimizer states."""
    return self.state_from_variables(
        renderer.init(rng, self.cfg, image_size, with_discriminator=self.use_gan)
    )

  def state_from_variables(self, variables: dict) -> RendererState:
    """Training state starting from given variables (e.g. `convert.load_fomm` output)."""
    params = {k: v["params"] for k, v in variables.items()}
    stats = {k: v["batch_stats"] for k, v in variables.items()}
    opt = {k: tx.init(params[k]) for k, tx in self.txs.items()}
    return RendererState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=stats,
        opt_state=opt,
        # A copy: the jit/pmap steps donate the state, and jnp.asarray would hand them the
        # stage's own backbone buffers (deleted after the first step; the next init_state or
        # state_from_variables, e.g. a resume, then failed). One copy per state, not per step.
        loss_params=jax.tree.map(lambda x: jnp.array(x, copy=True), self._vgg_vars),
    )

  # --------------------------------------------------------------------------------------------
  def train_step(self, state: RendererState, batch: dict, rng: jax.Array, axis_name=None,
                 zero1: bool = False):
    """Pure: (state, batch, rng) -> (state, metrics). `axis_name` only under pmap/shard_map;
    `zero1`: the ZeRO-1 step's sharded update (runtime/zero1.py; needs `axis_name`)."""
    source = batch["source"].astype(self.dtype) / 255.0  # [B,H,W,3]
    driving = batch["driving"].astype(self.dtype) / 255.0
    self._check_pyramid(source)
    # Global sample indices so per-sample noise is the same however the batch is split.
    ids = jnp.arange(source.shape[0])
    if axis_name is not None:
      ids = ids + jax.lax.axis_index(axis_name) * source.shape[0]
    tps = equivariance.random_tps(jax.random.fold_in(rng, 0), ids,
                                  **dict(self.cfg.train.transform_params))
    loss_fn = functools.partial(self._generator_loss, state, source, driving, tps, axis_name,
                                self._landmarks(batch))
    grads, (losses, new_stats, pred, kp_drv_value) = jax.grad(loss_fn, has_aux=True)(
        {k: state.params[k] for k in GENERATOR_GROUPS})
    if axis_name is not None:
      losses = jax.lax.pmean(losses, axis_name)
    params, opt_state = self._adam_update(state, grads, axis_name, zero1)
    stats = dict(state.batch_stats) | new_stats
    metrics = dict(losses)
    if self.use_gan:  # FOMM's DiscriminatorFullModel on the detached prediction.
      d_loss, d_stats, dgrads = self._discriminator_grads(state, driving, pred, kp_drv_value)
      if axis_name is not None:
        d_loss = jax.lax.pmean(d_loss, axis_name)
      d_params, d_opt = self._adam_update(state, {"discriminator": dgrads}, axis_name, zero1)
      params, opt_state = params | d_params, opt_state | d_opt
      stats["discriminator"] = d_stats
      metrics["disc_gan"] = d_loss
    metrics["total"] = sum(losses.values())
    new_state = state.replace(step=state.step + 1, params=dict(state.params) | params,
                              batch_stats=stats, opt_state=dict(state.opt_state) | opt_state)
    return new_state, metrics

  def _landmarks(self, batch: dict) -> dict | None:
    """The batch's {'source', 'driving'} landmarks [B, 68, 2] when a landmark term is on."""
    w = self.cfg.train.loss_weights
    terms = [k for k in LANDMARK_TERMS if w.get(k, 0.0)]
    flow = renderer.uses_landmarks(self.cfg)
    if not (terms or flow):
      return None
    missing = [k for k in ("source_landmarks", "driving_landmarks") if k not in batch]
    if missing:
      why = " and ".join(([f"loss weights {terms}"] if terms else [])
                         + (["the landmark motion"] if flow else []))
      raise ValueError(
          f"renderer: {why} need {missing} in the batch (stages/renderer.py adds them from the "
          "dataset's landmarks); set those weights to 0 and "
          "generator.dense_motion_params.landmark_motion='none' to train without landmarks")
    return {"source": batch["source_landmarks"], "driving": batch["driving_landmarks"]}

  def _check_pyramid(self, source):
    t, n_layers = self.cfg.train, len(self.cfg.train.loss_weights.perceptual)
    if self.vgg is not None and min(source.shape[1:3]) * min(t.scales) < 2 ** (n_layers - 1):
      raise ValueError(
          f"perceptual loss: VGG layer {n_layers} sees the 1/{2 ** (n_layers - 1)} map of the "
          f"{min(t.scales)}-scale image, empty at {source.shape[1]}x{source.shape[2]}; drop small "
          "train.scales or use fewer train.loss_weights.perceptual entries")

  def _adam_update(self, state: RendererState, grads: dict, axis_name=None,
                   zero1: bool = False) -> tuple[dict, dict]:
    """One optimizer step per group in ``grads`` (this device's under pmap/shard_map: averaged
    over ``axis_name`` here) -> (new params, new opt states) of those."""
    params, opt = {}, {}
    for k, g in grads.items():
      if zero1:  # reduce-scatter, 1/n of the update, all-gather (runtime/zero1.py)
        params[k], opt[k], _ = zero1_lib.update(self.txs[k], state.params[k], state.opt_state[k],
                                                g, axis_name)
        continue
      if axis_name is not None:
        g = jax.lax.pmean(g, axis_name)
      upd, opt[k] = self.txs[k].update(g, state.opt_state[k], state.params[k])
      params[k] = optax.apply_updates(state.params[k], upd)
    return params, opt

  def _generator_loss(self, state, source, driving, tps, axis_name, marks, params):
    """FOMM's GeneratorFullModel: (total, (losses, new BN stats, prediction, kp_drv values)).

    source, driving: [B,H,W,3] in [0,1]; ``marks``: None or {'source', 'driving'} landmarks
    [B,68,2] for the landmark terms [ours]; ``params``: {'kp_detector', 'generator'}."""
    cfg, w = self.cfg, self.cfg.train.loss_weights
    kp_mod = renderer.make_kp_detector(cfg, train=True, bn_axis_name=axis_name)
    gen_mod = renderer.make_generator(cfg, train=True, bn_axis_name=axis_name)

    peak, hm_anchor = w.get("heatmap_peak", 0.0), w.get("heatmap_anchor", 0.0)
    logits = []  # [B, h, w, K] keypoint-head logits of the source and driving calls, if needed

    def kp_apply(x, stats, keep_logits=False):  # BN statistics advance call by call, as in torch
      variables = {"params": params["kp_detector"], "batch_stats": stats}
      if not ((peak or hm_anchor) and keep_logits):
        out, upd = kp_mod.apply(variables, x, mutable=["batch_stats"])
        return out, upd["batch_stats"]
      # The keypoint head's logits, captured (the detector's outputs stay FOMM's).
      out, upd = kp_mod.apply(variables, x, mutable=["batch_stats", "intermediates"],
                              capture_intermediates=lambda mdl, _: mdl.name == "kp")
      logits.append(upd["intermediates"]["kp"]["__call__"][0])
      return out, upd["batch_stats"]

    kp_src, s_kp = kp_apply(source, state.batch_stats["kp_detector"], keep_logits=True)
    kp_drv, s_kp = kp_apply(driving, s_kp, keep_logits=True)
    if renderer.uses_landmarks(cfg):  # the landmark motion [ours] reads them from the kp dicts
      kp_src = renderer.with_landmarks(kp_src, marks["source"], source.shape[1])
      kp_drv = renderer.with_landmarks(kp_drv, marks["driving"], source.shape[1])
    gen_out, upd = gen_mod.apply(
        {"params": params["generator"], "batch_stats": state.batch_stats["generator"]},
        source, kp_drv, kp_src, mutable=["batch_stats"])
    pred = gen_out["prediction"]
    losses = {}
    if self.vgg is not None:
      losses["perceptual"] = perceptual.perceptual_loss(
          self.vgg, state.loss_params, pred, driving, tuple(cfg.train.scales), tuple(w.perceptual))
    if self.use_gan:
      losses.update(self._generator_gan_losses(state, pred, driving, kp_drv["value"]))
    if w.get("decoder", 0.0) and "decoded" in gen_out:
      # [ours] L1 of the decoder's own image (output_blend="occlusion"): with the occlusion map
      # near 1 everywhere the blend gives the decoder no gradient, so it never learns to paint
      # what the warp cannot show (an open mouth), and a lower occlusion would only cost.
      losses["decoder"] = w.decoder * jnp.abs(
          gen_out["decoded"].astype(jnp.float32) - driving.astype(jnp.float32)).mean()
    if w.equivariance_value or w.equivariance_jacobian:
      kp_tr, s_kp = kp_apply(equivariance.transform_frame(tps, driving), s_kp)
      losses.update(equivariance.equivariance_losses(
          tps, kp_drv, kp_tr, w.equivariance_value, w.equivariance_jacobian))
    if any(w.get(k, 0.0) for k in LANDMARK_TERMS):
      # Each mask term [ours] reads either the generator's mask or, with its *_detach_kp flag,
      # the same mask from a second dense-motion pass on stop_gradient keypoints (one pass
      # serves both), so that term shapes the mask and cannot pull keypoints off landmarks.
      detach = {k: bool(w.get(k, 0.0)) and bool(cfg.train.get(f"{k}_detach_kp", False))
                for k in ("mask_anchor", "mask_background")}
      masks = dict.fromkeys(detach, gen_out["mask"])  # [B, h, w, K+1]
      if any(detach.values()):
        mask_sg = self._mask_without_kp_grad(gen_mod, params, state, source, kp_drv, kp_src)
        masks.update({k: mask_sg for k, on in detach.items() if on})
      losses.update(self._landmark_losses(marks, kp_src, kp_drv, gen_out, masks, pred, driving,
                                          logits, state.step))
    if peak:
      losses["heatmap_peak"] = peak * landmark_anchors.heatmap_peak_loss(
          landmark_anchors.heatmap_spread(jnp.concatenate(logits), cfg.kp_detector.temperature),
          len(cfg.train.anchor_landmarks), cfg.train.get("heatmap_floor", 1.5))
    new_stats = {"kp_detector": s_kp, "generator": upd["batch_stats"]}
    return sum(losses.values()), (losses, new_stats, pred, kp_drv["value"])

  @staticmethod
  def _mask_without_kp_grad(gen_mod, params, state, source, kp_drv, kp_src):
    """The dense-motion mask [B, h, w, K+1] again, from keypoints behind stop_gradient
    (``train.mask_anchor_detach_kp`` / ``train.mask_background_detach_kp`` [ours]): a second
    pass of the dense motion network alone, so the mask terms that read it train the mask's
    network and cannot pull keypoints off their landmarks.
    Same parameters and the same batch statistics (train-mode BN), so its values equal the
    generator's mask; its BN update is dropped (the generator pass already made it)."""
    dm = gen_mod.dense_motion_module()
    variables = {"params": params["generator"][dm.name],
                 "batch_stats": state.batch_stats["generator"][dm.name]}
    out, _ = dm.apply(variables, source, jax.lax.stop_gradient(kp_drv),
                      jax.lax.stop_gradient(kp_src), mutable=["batch_stats"])
    return out["mask"]

  def _landmark_losses(self, marks, kp_src, kp_drv, gen_out, masks, pred, driving, logits,
                       step) -> dict:
    """The landmark terms [ours] of losses/landmark_anchors.py whose weight is not 0; ``masks``:
    the [B, h, w, K+1] dense-motion mask each mask term reads (see _generator_loss); ``logits``:
    the keypoint head's [B, h, w, K] logits of the source and driving calls (heatmap_anchor);
    ``step``: the optimizer step (heatmap_anchor_until)."""
    t, w, size = self.cfg.train, self.cfg.train.loss_weights, driving.shape[1]
    out = {}
    if w.get("heatmap_anchor", 0.0):
      # A warm-up when heatmap_anchor_until > 0: the term places each peak on its landmark
      # early, then leaves the heatmap to the pixel loss (0 = the whole run).
      until = int(t.get("heatmap_anchor_until", 0))
      on = 1.0 if until <= 0 else (step < until).astype(jnp.float32)
      out["heatmap_anchor"] = on * w.heatmap_anchor * sum(
          landmark_anchors.heatmap_anchor_loss(
              lg, marks[k], tuple(t.anchor_landmarks), size, self.cfg.kp_detector.temperature,
              t.get("heatmap_anchor_sigma", 1.5))
          for lg, k in zip(logits, ("source", "driving")))
    if w.get("keypoint_anchor", 0.0):
      idx = tuple(t.anchor_landmarks)
      out["keypoint_anchor"] = w.keypoint_anchor * (
          landmark_anchors.keypoint_anchor_loss(kp_src["value"], marks["source"], idx, size)
          + landmark_anchors.keypoint_anchor_loss(kp_drv["value"], marks["driving"], idx, size))
    if w.get("keypoint_motion", 0.0):
      out["keypoint_motion"] = w.keypoint_motion * landmark_anchors.keypoint_motion_loss(
          kp_src["value"], kp_drv["value"], marks["source"], marks["driving"],
          tuple(t.anchor_landmarks), size)
    if w.get("flow_anchor", 0.0):
      out["flow_anchor"] = w.flow_anchor * landmark_anchors.flow_anchor_loss(
          gen_out["deformation"], marks["driving"], marks["source"], size)
    if w.get("mask_background", 0.0):
      out["mask_background"] = w.mask_background * landmark_anchors.mask_background_loss(
          masks["mask_background"], marks["driving"], size)
    if w.get("mask_anchor", 0.0):
      out["mask_anchor"] = w.mask_anchor * landmark_anchors.mask_anchor_loss(
          masks["mask_anchor"], marks["driving"], tuple(t.anchor_landmarks), size)
    if w.get("mouth", 0.0):
      out["mouth"] = w.mouth * landmark_anchors.mouth_loss(pred, driving, marks["driving"],
                                                           t.mouth_margin)
    return out

  def _generator_gan_losses(self, state, pred, driving, kp_value) -> dict:
    """Generator GAN + feature matching with the discriminator in eval mode (frozen spectral-norm
    vectors [ours]; torch advances them in this pass too)."""
    w, d_scales = self.cfg.train.loss_weights, tuple(self.cfg.discriminator.scales)
    disc = renderer.make_discriminator(self.cfg, train=False)
    kp_value = jax.lax.stop_gradient(kp_value)
    dvars = {"params": state.params["discriminator"],
             "batch_stats": state.batch_stats["discriminator"]}
    fake = disc.apply(dvars, perceptual.image_pyramid(pred, d_scales), kp_value)
    real = disc.apply(dvars, perceptual.image_pyramid(driving, d_scales), kp_value)
    losses = {"gen_gan": gan.generator_gan_loss(fake, d_scales, w.generator_gan)}
    if sum(w.feature_matching):
      losses["feature_matching"] = gan.feature_matching_loss(real, fake, d_scales,
                                                             tuple(w.feature_matching))
    return losses

  def _discriminator_grads(self, state, driving, pred, kp_value):
    """FOMM's DiscriminatorFullModel on the detached prediction -> (loss, stats, grads)."""
    d_scales = tuple(self.cfg.discriminator.scales)
    disc = renderer.make_discriminator(self.cfg, train=True)
    pred = jax.lax.stop_gradient(pred)
    kp_value = jax.lax.stop_gradient(kp_value)

    def d_loss_fn(dparams):
      dvars = {"params": dparams, "batch_stats": state.batch_stats["discriminator"]}
      real, upd1 = disc.apply(dvars, perceptual.image_pyramid(driving, d_scales), kp_value,
                              mutable=["batch_stats"])
      dvars = {"params": dparams, "batch_stats": upd1["batch_stats"]}
      fake, upd2 = disc.apply(dvars, perceptual.image_pyramid(pred, d_scales), kp_value,
                              mutable=["batch_stats"])
      loss = gan.discriminator_loss(real, fake, d_scales,
                                    self.cfg.train.loss_weights.discriminator_gan)
      return loss, upd2["batch_stats"]

    (d_loss, d_stats), dgrads = jax.value_and_grad(d_loss_fn, has_aux=True)(
        state.params["discriminator"])
    return d_loss, d_stats, dgrads
