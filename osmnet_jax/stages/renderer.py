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
from osmnet_jax.stages import common
from osmnet_jax.stages import renderer_step as renderer_stage

STAGE_FIELDS = ("steps", "save_every", "keep", "grid_every", "sample_clips")


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
  """Train the renderer of ``cfg.renderer``, then write the sample reconstructions."""
  rcfg = cfg.renderer
  mcfg = model_config(rcfg)
  size = builder.info.features["frames"].shape[1]
  _check_pyramid(mcfg, size)
  common.write_json_once(os.path.join(workdir, workdir_lib.RENDERER_CONFIG),
                         {"model": mcfg.to_dict(), "image_size": size})
  stage = renderer_stage.RendererStage(mcfg)
  rng = jax.random.PRNGKey(cfg.seed)
  state = stage.init_state(jax.random.fold_in(rng, 0), size)
  state_sh = common.state_layout(stage, cfg, mesh, state)  # FSDP / ZeRO-1 / replicated
  # Checkpoints leave out the frozen perceptual backbone: it is rebuilt from its source.
  backbone = state.loss_params
  make_iterator = common.make_iterator_factory(cfg, builder, mesh, "train", cfg.batch_size,
                                               num_frames=1, transform=_pairs)
  state, metrics = common.fit(
      name="renderer", train_step=stage.train_step, state=state, mesh=mesh,
      parallel=cfg.parallel, make_iterator=make_iterator,
      ckdir=workdir_lib.checkpoint_dir(workdir, "renderer"), num_steps=rcfg.steps,
      save_every=rcfg.save_every, keep=rcfg.keep, rng=jax.random.fold_in(rng, 1),
      log_every=cfg.log_every, writer=writer, meta={"image_size": size},
      state_sharding=state_sh, zero1=common.uses_zero1(cfg),
      to_saved=lambda s: s.replace(loss_params={}),
      from_saved=lambda s: s.replace(loss_params=backbone),
      on_log=_grid_logger(writer, rcfg.grid_every, mcfg))
  written = []
  if jax.process_index() == 0 and rcfg.sample_clips:
    written = write_samples(variables_from_state(state), mcfg, builder, rcfg.sample_clips,
                            os.path.join(workdir, "samples"))
  return {"metrics": metrics, "samples": written}


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
    grid = reconstruction.renderer_grid(variables_from_state(state), mcfg, source, driving)
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
    pred = reconstruction.reconstruct_clip(variables, mcfg, ex["frames"])
    side = np.concatenate([ex["frames"], media.to_uint8(pred)], axis=2)
    written.append(media.write_video(
        os.path.join(out_dir, f"renderer_reconstruction_{i}.mp4"), side, audio=ex["audio"]))
    logging.info("wrote %s", written[-1])
  return written
