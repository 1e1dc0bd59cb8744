"""Stage ``renderer`` of train.py: data -> RendererStage step (jit or pmap) -> shared loop.

``cfg.renderer`` (configs/default.py) holds the stage's own fields (``STAGE_FIELDS``: steps,
save_every, keep, grid_every, sample_clips) and every field of the renderer model config
(renderer.vox256_config() lists them: num_kp, kp_detector, generator, discriminator, train,
compute_dtype, remat). ``model_config`` splits off the latter.

Writes W/checkpoints/renderer/ (orbax), W/renderer_config.json (the model config, so eval and
generation rebuild the same modules) and W/samples/renderer_reconstruction_{i}.mp4.
"""
from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np
from absl import logging

from osmnet_jax import renderer
from osmnet_jax import workdir as workdir_lib
from osmnet_jax.evaluation import renderer_health
from osmnet_jax.stages import common
from osmnet_jax.stages import renderer_health_record as health_record
from osmnet_jax.stages import renderer_step as renderer_stage

STAGE_FIELDS = ("steps", "save_every", "keep", "grid_every", "sample_clips", "health")


def model_config(rcfg) -> ml_collections.ConfigDict:
  """``cfg.renderer`` -> the renderer model config (its fields minus ``STAGE_FIELDS``)."""
  mcfg = ml_collections.ConfigDict({k: v for k, v in rcfg.to_dict().items()
                                    if k not in STAGE_FIELDS})
  renderer.compute_dtype(mcfg)  # fail early on an unknown dtype name
  return mcfg


def _pairs(b: dict) -> dict:
  """A window batch (T = 1) -> the renderer's {'source', 'driving'} uint8 [B, H, W, 3] and their
  landmarks {'source_landmarks', 'driving_landmarks'} float32 [B, 68, 2] (the landmark terms of
  renderer_step use them; a step without those terms ignores them)."""
  return {"source": b["source"], "driving": b["frames"][:, 0],
          "source_landmarks": b["source_landmarks"], "driving_landmarks": b["landmarks"][:, 0]}


def variables_from_state(state) -> dict:
  """RendererState -> renderer API variables {'kp_detector': {...}, 'generator': {...}}."""
  return {k: {"params": state.params[k], "batch_stats": state.batch_stats.get(k, {})}
          for k in state.params}


def run_renderer(cfg, builder, mesh, workdir: str, writer) -> dict:
  """Train the renderer of ``cfg.renderer``, check its motion on the pixels (``health``), train
  again from a new seed while it fails and retries are left, then write the sample
  reconstructions of the attempt kept."""
  rcfg = cfg.renderer
  mcfg = model_config(rcfg)
  size = builder.info.features["frames"].shape[1]
  _check_pyramid(mcfg, size)
  common.write_json_once(os.path.join(workdir, workdir_lib.RENDERER_CONFIG),
                         {"model": mcfg.to_dict(), "image_size": size})
  hcfg = rcfg.get("health")
  if hcfg is None or not hcfg.clips:
    state, metrics = _train(cfg, cfg.seed, mcfg, builder, mesh, workdir, writer, size)
    return {"metrics": metrics, "samples": _samples(variables_from_state(state), mcfg, builder,
                                                    rcfg, workdir)}
  return _run_checked(cfg, hcfg, mcfg, builder, mesh, workdir, writer, size)


def attempt_plan(seed: int, steps: int, attempt: int, mode: str) -> tuple[int, int]:
  """(seed, total steps) of ``attempt`` (0 = the config's run). "extend": the same run trained
  ``steps`` further per retry (800 -> 1600 -> ...); "restart": a new run of ``steps`` from seed
  ``seed + 1000 * attempt``, reproducible alone with ``--config.seed``."""
  if mode == "extend":
    return seed, steps * (attempt + 1)
  return seed + 1000 * attempt, steps


def _train(cfg, seed: int, mcfg, builder, mesh, workdir: str, writer, size: int,
           num_steps: int | None = None):
  """One training run of the renderer from ``seed`` (model init, data order, step rng) to
  ``num_steps`` (default ``renderer.steps``), resumed from W/checkpoints/renderer if it holds
  one. Returns (host state, last logged metrics)."""
  rcfg = cfg.renderer
  if seed != cfg.seed:
    cfg = ml_collections.ConfigDict(cfg.to_dict())  # cfg is locked; the data order reads seed
    cfg.seed = seed
  stage = renderer_stage.RendererStage(mcfg)
  rng = jax.random.PRNGKey(seed)
  state = stage.init_state(jax.random.fold_in(rng, 0), size)
  state_sh = common.state_layout(stage, cfg, mesh, state)  # FSDP / ZeRO-1 / replicated
  # Checkpoints leave out the frozen perceptual backbone: it is rebuilt from its source.
  backbone = state.loss_params
  make_iterator = common.make_iterator_factory(cfg, builder, mesh, "train", cfg.batch_size,
                                               num_frames=1, transform=_pairs)
  return common.fit(
      name="renderer", train_step=stage.train_step, state=state, mesh=mesh,
      parallel=cfg.parallel, make_iterator=make_iterator,
      ckdir=workdir_lib.checkpoint_dir(workdir, "renderer"), num_steps=num_steps or rcfg.steps,
      save_every=rcfg.save_every, keep=rcfg.keep, rng=jax.random.fold_in(rng, 1),
      log_every=cfg.log_every, writer=writer, meta={"image_size": size},
      state_sharding=state_sh, zero1=common.uses_zero1(cfg),
      to_saved=lambda s: s.replace(loss_params={}),
      from_saved=lambda s: s.replace(loss_params=backbone),
      on_log=_grid_logger(writer, rcfg.grid_every, mcfg))


def _samples(variables, mcfg, builder, rcfg, workdir: str) -> list[str]:
  if jax.process_index() != 0 or not rcfg.sample_clips:
    return []
  return write_samples(variables, mcfg, builder, rcfg.sample_clips,
                       os.path.join(workdir, "samples"))


def _run_checked(cfg, hcfg, mcfg, builder, mesh, workdir: str, writer, size: int) -> dict:
  """The attempt loop behind ``health``; its record, W/renderer_health.json, makes it resumable:
  a crash mid-attempt resumes that attempt (same seed, its checkpoint), a finished decision is
  not re-measured. "extend" keeps the last attempt (the longest-trained: in every run measured,
  more steps never lowered a passing run below the bounds; BENCHMARKS.md "Renderer health
  check"); "restart" keeps the first that passed, else the nearest miss."""
  mode = hcfg.get("retry", "restart")
  bounds, note = renderer_health.usable_bounds(hcfg.bounds)
  if note:
    logging.warning("renderer health check: %s", note)
  record = health_record.load(workdir, cfg.renderer.steps, bounds, cfg.seed, mode)
  health_record.finish_moves(record, workdir)
  if (record.get("kept") is not None and not record["attempts"][record["kept"]]["passed"]
      and len(record["attempts"]) <= hcfg.retries):  # retries raised after a failed decision
    health_record.reopen(record, workdir, move=mode == "restart")
  if record.get("kept") is not None:  # decided by an earlier run: resume it (no steps left)
    kept = record["attempts"][record["kept"]]
    state, metrics = _train(cfg, kept["seed"], mcfg, builder, mesh, workdir, writer, size,
                            kept["steps"])
    variables = variables_from_state(state)
  else:
    while True:
      attempt = len(record["attempts"])
      seed, steps = attempt_plan(cfg.seed, cfg.renderer.steps, attempt, mode)
      logging.info("renderer: attempt %d of %d (%s), seed %d, %d steps", attempt + 1,
                   hcfg.retries + 1, mode, seed, steps)
      state, metrics = _train(cfg, seed, mcfg, builder, mesh, workdir, writer, size, steps)
      variables = variables_from_state(state)
      scores = renderer_health.measure(variables, mcfg, builder, hcfg.clips)
      result = renderer_health.verdict(scores, bounds)
      logging.info("renderer health, attempt %d (seed %d, %d train clips reconstructed, motion "
                   "measured on the frames): %s\n%s", attempt + 1, seed, scores["num_clips"],
                   "PASSED" if result["passed"] else "FAILED",
                   renderer_health.describe(scores, result, bounds))
      record["attempts"].append(dict(result, attempt=attempt, seed=seed, steps=steps,
                                     scores=scores, checkpoint=health_record.CURRENT))
      last = result["passed"] or attempt >= hcfg.retries
      if last:
        kept = attempt if mode == "extend" else renderer_health.best_attempt(record["attempts"])
        if kept != attempt:  # every attempt failed and an earlier one missed by less
          health_record.swap_in(record, workdir, kept)
          variables, _ = workdir_lib.load_renderer(workdir)
        record["kept"] = kept
        health_record.save(record, workdir)
        break
      if mode == "restart":
        health_record.set_aside(record, workdir, attempt)  # record first, then the move
      else:
        health_record.continue_in_place(record, workdir, attempt)
    kept = record["attempts"][record["kept"]]
    if not kept["passed"]:
      logging.warning(
          "renderer: no attempt passed the health check (%d tried); kept attempt %d (seed %d, "
          "shortfall %.2f). Its head or mouth motion will show weakly in the videos. "
          "W/renderer_health.json has every attempt's figures; more retries: "
          "--config.renderer.health.retries=N", len(record["attempts"]), record["kept"] + 1,
          kept["seed"], kept["shortfall"])
  return {"metrics": metrics, "health": record,
          "samples": _samples(variables, mcfg, builder, cfg.renderer, workdir)}


def _check_pyramid(mcfg, size: int) -> None:
  smallest = size * min(mcfg.train.scales)
  if mcfg.train.perceptual_backbone and smallest < 16:
    raise ValueError(
        f"renderer: the perceptual pyramid scales {tuple(mcfg.train.scales)} shrink {size}-px "
        f"frames to {smallest:g} px, but the VGG backbone needs >= 16 px (4 poolings). Drop the "
        f"small scales, e.g. --config.renderer.train.scales='(1, 0.5)' for 32 px")


def _grid_logger(writer, every: int, mcfg):
  """on_log hook: a TensorBoard grid source | driving | deformed | occlusion | prediction."""
  from osmnet_jax.evaluation import reconstruction

  if writer is None or not every:
    return None

  def on_log(step, state, batch):
    if step % every:
      return
    source, driving = (np.asarray(batch[k]).reshape((-1,) + batch[k].shape[-3:])
                       for k in ("source", "driving"))  # pmap: [n_dev, b] -> [B]
    marks = tuple(np.asarray(batch[k]).reshape((-1, 68, 2))
                  for k in ("source_landmarks", "driving_landmarks"))
    grid = reconstruction.renderer_grid(variables_from_state(state), mcfg, source, driving,
                                        landmarks=marks)
    writer.add_image("renderer/source_driving_deformed_occlusion_prediction", grid, step,
                     dataformats="HWC")

  return on_log


def write_samples(variables, mcfg, builder, num_clips: int, out_dir: str) -> list[str]:
  """Held-out clips reconstructed from their first frame: mp4 (GT | prediction) with sound."""
  from osmnet_jax import media
  from osmnet_jax.evaluation import clips, reconstruction

  split = "test" if "test" in builder.info.splits else "train"
  written = []
  for i, ex in enumerate(clips.iter_clips(builder, split, max_clips=num_clips)):
    pred = reconstruction.reconstruct_clip(variables, mcfg, ex["frames"],
                                           landmarks=ex["landmarks"])
    side = np.concatenate([ex["frames"], media.to_uint8(pred)], axis=2)
    written.append(media.write_video(
        os.path.join(out_dir, f"renderer_reconstruction_{i}.mp4"), side, audio=ex["audio"]))
    logging.info("wrote %s", written[-1])
  return written
