"""Up-front checks of a train.py config: every bad value is reported before anything trains,
naming the field and its valid range (train.py exits 2 with the messages)."""
from __future__ import annotations

import math

STAGES = ("data", "renderer", "motion", "expression", "joint")
DATASETS = ("synth_talk", "talking_videos")
PARALLEL = ("jit", "pmap")


class ConfigError(ValueError):
  """One or more invalid config values; ``str`` lists them, one per line."""


def _int_at_least(errors, cfg, path: str, low: int):
  v = _get(cfg, path)
  if isinstance(v, bool) or not isinstance(v, int) or v < low:
    errors.append(f"config.{path}={v!r}: must be an integer >= {low}")


def _positive_float(errors, cfg, path: str):
  v = _get(cfg, path)
  if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
    errors.append(f"config.{path}={v!r}: must be a finite number > 0")


def _one_of(errors, cfg, path: str, allowed):
  v = _get(cfg, path)
  if v not in allowed:
    errors.append(f"config.{path}={v!r}: use one of {tuple(allowed)}")


def _get(cfg, path: str):
  for k in path.split("."):
    cfg = cfg[k]
  return cfg


def check(cfg) -> None:
  """Raises ConfigError listing every invalid field of the stages ``cfg.stages`` runs."""
  from osmnet_jax import renderer
  from osmnet_jax.models import expression as expression_lib
  from osmnet_jax.models import keypoint_predictor as kp_lib
  from osmnet_jax.stages import motion

  errors: list[str] = []
  stages = tuple(cfg.stages)
  unknown = [s for s in stages if s not in STAGES]
  if unknown or not stages:
    errors.append(f"config.stages={stages!r}: use a non-empty sequence of {STAGES}")
  _one_of(errors, cfg, "parallel", PARALLEL)
  zero1 = (cfg.get("mesh") or {}).get("shard_optimizer", False)
  if not isinstance(zero1, bool):
    errors.append(f"config.mesh.shard_optimizer={zero1!r}: must be True or False")
  elif zero1 and cfg.parallel != "jit":
    errors.append("config.mesh.shard_optimizer=True needs config.parallel='jit' (a pmap step "
                  "keeps a whole replica of the state on every device)")
  elif zero1 and int((cfg.get("mesh") or {}).get("fsdp", 1)) != 1:
    errors.append(f"config.mesh.shard_optimizer=True with config.mesh.fsdp={cfg.mesh.fsdp}: "
                  "FSDP already splits the Adam moments (with the params); use one of them "
                  "(the ZeRO-1 step keeps the params replicated: fsdp=1)")
  _one_of(errors, cfg, "data.name", DATASETS)
  _int_at_least(errors, cfg, "batch_size", 1)
  _int_at_least(errors, cfg, "log_every", 1)
  _int_at_least(errors, cfg, "data.prefetch", 1)
  _int_at_least(errors, cfg, "data.shuffle_buffer", 0)
  if "data" in stages:
    _int_at_least(errors, cfg, "data_check_steps", 1)
    _int_at_least(errors, cfg, "data.num_frames", 1)
  if "renderer" in stages:
    for f, low in (("steps", 1), ("save_every", 0), ("keep", 1), ("grid_every", 0),
                   ("sample_clips", 0)):
      _int_at_least(errors, cfg, f"renderer.{f}", low)
    for f in ("lr_generator", "lr_kp_detector", "lr_discriminator"):
      _positive_float(errors, cfg, f"renderer.train.{f}")
    ms = cfg.renderer.train.get("lr_milestones", ())
    ok = isinstance(ms, (tuple, list)) and all(
        isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in ms)
    if not ok or list(ms) != sorted(set(ms)):
      errors.append(f"config.renderer.train.lr_milestones={ms!r}: must be increasing optimizer "
                    "steps > 0, e.g. (600,) (the lr is multiplied by lr_gamma at each)")
    g = cfg.renderer.train.get("lr_gamma", 0.1)
    if isinstance(g, bool) or not isinstance(g, (int, float)) or not 0 < g <= 1:
      errors.append(f"config.renderer.train.lr_gamma={g!r}: must be a number in (0, 1]")
    _one_of(errors, cfg, "renderer.compute_dtype", renderer.COMPUTE_DTYPES)
    scales = tuple(cfg.renderer.train.scales)
    if not scales or not all(0 < s <= 1 for s in scales):
      errors.append(f"config.renderer.train.scales={scales!r}: must be non-empty, each in (0, 1]")
    _landmark_terms(errors, cfg.renderer)
    _renderer_health(errors, cfg.renderer)
  if "motion" in stages:
    models = tuple(cfg.motion_models)
    if not models or any(m not in motion.MODELS for m in models):
      errors.append(f"config.motion_models={models!r}: use a non-empty sequence of "
                    f"{motion.MODELS}")
    _stage_b(errors, cfg, "motion", min_frames=2)
    v = cfg.motion.sigma_holdout_pct
    if not isinstance(v, int) or not 0 <= v < 100:
      errors.append(f"config.motion.sigma_holdout_pct={v!r}: must be an integer in [0, 99]")
    _int_at_least(errors, cfg, "motion.sigma_passes", 1)
    _one_of(errors, cfg, "motion.identity", ("none", "image"))
    _one_of(errors, cfg, "motion.encoder", ("linear", "conv"))
  if "expression" in stages:
    _stage_b(errors, cfg, "expression", min_frames=1)
    _one_of(errors, cfg, "expression.identity", expression_lib.IDENTITY_MODES)
    _one_of(errors, cfg, "expression.inplane_pose", kp_lib.INPLANE_MODES)
    _one_of(errors, cfg, "expression.kp_target", kp_lib.KP_TARGETS)
    if (cfg.expression.get("kp_target", "frame") == "canonical"
        and cfg.expression.get("inplane_pose", "learned") != "geometric"):
      errors.append("expression.kp_target='canonical' needs expression.inplane_pose='geometric' "
                    f"(got {cfg.expression.get('inplane_pose', 'learned')!r})")
    _one_of(errors, cfg, "expression.renderer_source", ("auto", "init"))
    _int_at_least(errors, cfg, "expression.eval_passes", 1)
    _int_at_least(errors, cfg, "expression.eval_batch", 1)
  if "joint" in stages:
    for f in ("num_steps", "batch_size"):
      _int_at_least(errors, cfg, f"joint.{f}", 1)
    for f in ("save_every", "warmup_steps", "render_frames_per_call"):
      _int_at_least(errors, cfg, f"joint.{f}", 0)
    _positive_float(errors, cfg, "joint.lr")
    for f in ("w_rec", "w_rec_mouth"):
      v = cfg.joint[f]
      if not isinstance(v, (int, float)) or v < 0:
        errors.append(f"config.joint.{f}={v!r}: must be a number >= 0")
  if errors:
    raise ConfigError("\n".join(errors))


def _stage_b(errors, cfg, name: str, min_frames: int):
  from osmnet_jax.nn import precision

  _int_at_least(errors, cfg, f"{name}.num_steps", 1)
  _int_at_least(errors, cfg, f"{name}.batch_size", 1)
  _int_at_least(errors, cfg, f"{name}.num_frames", min_frames)
  _int_at_least(errors, cfg, f"{name}.log_every", 1)
  _int_at_least(errors, cfg, f"{name}.save_every", 0)
  _int_at_least(errors, cfg, f"{name}.warmup_steps", 0)
  _positive_float(errors, cfg, f"{name}.lr")
  _positive_float(errors, cfg, f"{name}.grad_clip")
  if "compute_dtype" in cfg[name]:
    _one_of(errors, cfg, f"{name}.compute_dtype", precision.COMPUTE_DTYPES)
  if not isinstance(cfg[name].get("remat", False), bool):
    errors.append(f"config.{name}.remat={cfg[name].remat!r}: must be True or False")


def check_devices(cfg, mesh) -> None:
  """Every global batch of the stages that run must split evenly over the mesh's devices."""
  n = mesh.size
  fields = [("batch_size", ("data", "renderer"))]
  fields += [("motion.batch_size", ("motion",)), ("expression.batch_size", ("expression",)),
             ("joint.batch_size", ("joint",))]
  errors = []
  for path, used_by in fields:
    v = _get(cfg, path)
    if any(s in cfg.stages for s in used_by) and v % n:
      errors.append(f"config.{path}={v} does not divide over the {n} devices of the mesh: use a "
                    f"multiple of {n}")
  if errors:
    raise ConfigError("\n".join(errors))


def _renderer_health(errors: list, rcfg) -> None:
  """renderer.health (evaluation/renderer_health.py): clips, retries, bounds per measure."""
  from osmnet_jax.evaluation.renderer_health import MEASURES, RETRY_MODES

  h = rcfg.get("health")
  if h is None:
    return
  for f in ("clips", "retries"):
    v = h.get(f, 0)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
      errors.append(f"config.renderer.health.{f}={v!r}: must be an integer >= 0")
  if h.get("retry", "restart") not in RETRY_MODES:
    errors.append(f"config.renderer.health.retry={h.retry!r}: use one of {RETRY_MODES} ('extend': "
                  "train the same run renderer.steps further; 'restart': a new run from another "
                  "seed)")
  bounds = h.get("bounds", {})
  if h.get("clips", 0) and not bounds:
    errors.append("config.renderer.health.bounds is empty: name at least one measure, or set "
                  "config.renderer.health.clips=0 to skip the check")
  for k, b in bounds.items():
    if k not in MEASURES:
      errors.append(f"config.renderer.health.bounds.{k}: unknown measure; use one of {MEASURES}")
    elif (not isinstance(b, (tuple, list)) or len(b) != 2
          or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in b)
          or b[0] > b[1]):
      errors.append(f"config.renderer.health.bounds.{k}={b!r}: must be (low, high) with "
                    "low <= high, e.g. (0.7, 1.3)")


def _landmark_terms(errors: list, rcfg) -> None:
  """The renderer's landmark loss terms [ours] (losses/landmark_anchors.py)."""
  from osmnet_jax.stages.renderer_step import OURS_KEYPOINT_TERMS

  t = rcfg.train
  for k in (*OURS_KEYPOINT_TERMS, "decoder"):
    v = t.loss_weights.get(k, 0.0)
    if not isinstance(v, (int, float)) or v < 0:
      errors.append(f"config.renderer.train.loss_weights.{k}={v!r}: must be a number >= 0 "
                    "(0 turns the term off)")
  idx = tuple(t.get("anchor_landmarks", ()))
  uses_idx = [k for k in ("keypoint_anchor", "keypoint_motion", "heatmap_peak", "heatmap_anchor",
                           "mask_anchor") if t.loss_weights.get(k, 0.0)]
  if uses_idx and (
      not idx or len(idx) > rcfg.num_kp or not all(isinstance(i, int) and 0 <= i < 68
                                                   for i in idx)):
    errors.append(f"config.renderer.train.anchor_landmarks={idx!r}: needs 1..num_kp "
                  f"({rcfg.num_kp}) iBUG-68 indices in [0, 67] for {' and '.join(uses_idx)}")
  f = t.get("heatmap_floor", 1.5)
  if not isinstance(f, (int, float)) or f < 0:
    errors.append(f"config.renderer.train.heatmap_floor={f!r}: must be a number >= 0 (heatmap "
                  "cells)")
  sg = t.get("heatmap_anchor_sigma", 1.5)
  if not isinstance(sg, (int, float)) or sg <= 0:
    errors.append(f"config.renderer.train.heatmap_anchor_sigma={sg!r}: must be a number > 0 "
                  "(heatmap cells)")
  u = t.get("heatmap_anchor_until", 0)
  if isinstance(u, bool) or not isinstance(u, int) or u < 0:
    errors.append(f"config.renderer.train.heatmap_anchor_until={u!r}: must be an integer >= 0 "
                  "(renderer steps with heatmap_anchor on; 0 = the whole run)")
  for k in ("mask_anchor_detach_kp", "mask_background_detach_kp"):
    d = t.get(k, False)
    if not isinstance(d, bool):
      errors.append(f"config.renderer.train.{k}={d!r}: must be True or False")
  m = t.get("mouth_margin", 0.35)
  if not isinstance(m, (int, float)) or m < 0:
    errors.append(f"config.renderer.train.mouth_margin={m!r}: must be a number >= 0")
  dmp = rcfg.generator.get("dense_motion_params", None)
  if dmp is not None:
    from osmnet_jax.models.dense_motion import LANDMARK_MOTIONS

    lm = dmp.get("landmark_motion", "none")
    if lm not in LANDMARK_MOTIONS:
      errors.append(f"config.renderer.generator.dense_motion_params.landmark_motion={lm!r}: use "
                    f"one of {LANDMARK_MOTIONS} ('tps': a spline through the 68 landmarks as one "
                    "more motion, models/dense_motion.py)")
    reg = dmp.get("landmark_tps_reg", 1e-6)
    if isinstance(reg, bool) or not isinstance(reg, (int, float)) or reg < 0:
      errors.append(f"config.renderer.generator.dense_motion_params.landmark_tps_reg={reg!r}: "
                    "must be a number >= 0 (0: the spline meets every landmark exactly)")
