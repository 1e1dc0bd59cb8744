"""Stage ``renderer`` of train.py: data -> RendererStage step (jit or pmap) -> shared loop.

Config (``cfg.renderer``, defaults in ``renderer_train_config``):
  model        "tiny" | "vox256"  (renderer.tiny_config / vox256_config)
  overrides    dict merged into the model config (e.g. {"train": {"lr_generator": 1e-4}})
  steps, save_every, keep, grid_every (TensorBoard image grid period)
  compute_dtype "float32" | "bfloat16" (bf16 compute, float32 params / BN stats / losses / Adam)
  remat        True: recompute the hourglass blocks in the backward pass (less activation memory)
  sample_clips test clips reconstructed into W/samples/ after training (mp4 with sound)

Writes W/checkpoints/renderer/ (orbax), W/renderer_config.json (the model config, so eval and
generation rebuild the same modules) and W/samples/renderer_reconstruction_{i}.mp4.
"""
from __future__ import annotations

import json
import os

import jax
import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from osmnet_jax import checkpointing, renderer
from osmnet_jax import workdir as workdir_lib
from osmnet_jax.input import pipeline as input_pipeline
from osmnet_jax.runtime import sharding
from osmnet_jax.stages import loop as train_loop
from osmnet_jax.stages import renderer_step as renderer_stage



def renderer_train_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      model="tiny", overrides={}, steps=200, save_every=100, keep=2, grid_every=100,
      sample_clips=1, seed=0, compute_dtype="float32", remat=False))


def model_config(rcfg) -> ml_collections.ConfigDict:
  """The renderer model config named by ``cfg.renderer`` with its overrides applied."""
  makers = {"tiny": renderer.tiny_config, "vox256": renderer.vox256_config}
  if rcfg.model not in makers:
    raise ValueError(f"config.renderer.model={rcfg.model!r}: use one of {sorted(makers)}")
  mcfg = makers[rcfg.model]()
  # Model-config fields (saved in renderer_config.json, so eval/generation rebuild the same
  # modules); set here rather than through `overrides` so `--config.renderer.remat=True` works.
  mcfg.compute_dtype = rcfg.get("compute_dtype", "float32")
  mcfg.remat = bool(rcfg.get("remat", False))
  mcfg.update_from_flattened_dict(_flatten(dict(rcfg.overrides)))
  renderer.compute_dtype(mcfg)  # fail early on an unknown dtype name
  return mcfg


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, (dict, ml_collections.ConfigDict)):
      out.update(_flatten(dict(v), f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _pairs(ds: tf.data.Dataset) -> tf.data.Dataset:
  """Window batches (T = 1) -> the renderer's {'source', 'driving'} uint8 [B, H, W, 3]."""
  return ds.map(lambda b: {"source": b["source"], "driving": b["frames"][:, 0]})


def variables_from_state(state) -> dict:
  """RendererState -> renderer API variables {'kp_detector': {...}, 'generator': {...}}."""
  return {k: {"params": state.params[k], "batch_stats": state.batch_stats.get(k, {})}
          for k in state.params}


def run_renderer(cfg, builder, mesh, workdir: str, writer) -> dict:
  from osmnet_jax import media
  from osmnet_jax.evaluation import reconstruction

  rcfg = cfg.renderer
  mcfg = model_config(rcfg)
  size = builder.info.features["frames"].shape[1]
  smallest = size * min(mcfg.train.scales)
  if mcfg.train.perceptual_backbone and smallest < 16:
    raise ValueError(
        f"renderer: the perceptual pyramid scales {tuple(mcfg.train.scales)} shrink {size}-px "
        f"frames to {smallest:g} px, but the VGG backbone needs >= 16 px (4 poolings). Drop the "
        f"small scales, e.g. --config.renderer.overrides.train.scales='(1, 0.5)' for 32 px")
  if jax.process_index() == 0:
    with open(os.path.join(workdir, workdir_lib.RENDERER_CONFIG), "w") as f:
      json.dump({"model": mcfg.to_dict(), "image_size": size}, f, indent=2, default=list)

  # --- Model, optimizer, step.
  stage = renderer_stage.RendererStage(mcfg)
  rng = jax.random.PRNGKey(cfg.seed)
  state = stage.init_state(jax.random.fold_in(rng, 0), size)
  per_process = sharding.check_batch_size(cfg.batch_size, mesh)
  # Checkpoints hold the unreplicated state without the frozen perceptual backbone (it is
  # rebuilt from its source; no need to write ~60 MB of VGG weights at every save).
  backbone = state.loss_params
  strip = lambda s: s.replace(loss_params={})
  attach = lambda s: s.replace(loss_params=backbone)
  if cfg.parallel == "pmap":
    step_fn = stage.make_pmap_step()
    state = sharding.replicate(state)
    export_state = lambda s: strip(sharding.unreplicate(s))
    import_state = lambda s: sharding.replicate(attach(s))
  else:
    # config.mesh.fsdp > 1 splits params and Adam moments over the 'fsdp' axis (replicated at 1).
    # Checkpoints restore straight into this layout: the restore target carries its shardings.
    state_sh = stage.state_shardings(mesh, state)
    step_fn = stage.make_jit_step(mesh, state_sh)
    state = jax.device_put(state, state_sh)
    export_state = strip
    import_state = lambda s: jax.device_put(attach(s), state_sh)

  # --- Data: pairs (source frame, driving frame) of the same clip.
  def make_iterator(start_step: int):
    ds = input_pipeline.make_dataset(
        builder, "train", per_process, num_frames=1, seed=cfg.seed, start_step=start_step,
        shuffle_buffer=cfg.data.shuffle_buffer, augment=tuple(cfg.data.augment))
    return input_pipeline.DeviceIterator(_pairs(ds), mesh, layout=cfg.parallel,
                                         prefetch=cfg.data.prefetch, start_step=start_step)

  def on_log(step, st, batch):
    if writer is None or not rcfg.grid_every or step % rcfg.grid_every:
      return
    st = export_state(st)
    take = lambda x: np.asarray(x).reshape((-1,) + x.shape[-3:])
    grid = reconstruction.renderer_grid(variables_from_state(st), mcfg, take(batch["source"]),
                                        take(batch["driving"]))
    writer.add_image("renderer/source_driving_deformed_occlusion_prediction", grid, step,
                     dataformats="HWC")

  # --- Loop (resumes from W/checkpoints/renderer).
  ck = checkpointing.Checkpointer(workdir_lib.checkpoint_dir(workdir, "renderer"),
                                  max_to_keep=rcfg.keep, save_every=rcfg.save_every)
  try:
    state, metrics = train_loop.run(
        name="renderer", state=state, step_fn=step_fn, make_iterator=make_iterator,
        checkpointer=ck, num_steps=rcfg.steps, rng=jax.random.fold_in(rng, 1),
        log_every=cfg.log_every, writer=writer, on_log=on_log,
        export_state=export_state, import_state=import_state,
        meta={"model": rcfg.model, "image_size": size})
  finally:
    ck.close()
  state = export_state(state)

  # --- Sample video: held-out clips reconstructed from their first frame (GT | prediction).
  written = []
  if jax.process_index() == 0 and rcfg.sample_clips:
    import tensorflow_datasets as tfds

    split = "test" if "test" in builder.info.splits else "train"
    variables = variables_from_state(state)
    out_dir = os.path.join(workdir, "samples")
    for i, ex in enumerate(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)
                                         .take(rcfg.sample_clips))):
      pred = reconstruction.reconstruct_clip(variables, mcfg, ex["frames"])
      side = np.concatenate([ex["frames"], (pred * 255).round().astype(np.uint8)], axis=2)
      written.append(media.write_video(
          os.path.join(out_dir, f"renderer_reconstruction_{i}.mp4"), side, audio=ex["audio"]))
      logging.info("wrote %s", written[-1])
  return {"metrics": metrics, "samples": written}
