"""Held-out score of a trained run, read from its workdir (what the frontier is fitted to).

  renderer:   heldout_loss = L1 of the FOMM reconstruction (frame 0 animated with every frame's
              own keypoints, evaluation/reconstruction.py) on test clips, pixels in [0, 1];
              also LPIPS (AlexNet) of the same frames.
  motion:     heldout_loss = the motion space's pose reconstruction L1 (the objective's rec_l1
              term, stages/motion.py) on test windows. The whole objective is recorded too
              (heldout_objective) but not fitted: its audio -> motion mapping term regresses a
              motion that is random given the audio (one-to-many), so on held-out clips it
              grows with training (overfitting), whatever the model size. Also the one-to-many
              metrics of evaluation/motion.py (diversity_ratio, pose_fd).
  expression: heldout_loss = held-out landmark L1 ([-1, 1] units) that the stage itself
              measures after training (checkpoints/expression/eval.json).
"""
from __future__ import annotations

import json
import os

import jax
import numpy as np

from osmnet_jax import workdir as workdir_lib

HELDOUT_CLIPS = 8  # renderer: test clips reconstructed


def _renderer(run_dir: str, builder, cfg) -> dict:
  del cfg
  from osmnet_jax.evaluation import clips as clips_lib
  from osmnet_jax.evaluation import reconstruction
  from osmnet_jax.metrics import lpips as lpips_lib

  variables, mcfg = workdir_lib.load_renderer(run_dir)
  split = "test" if "test" in builder.info.splits else "train"
  l1, lp = [], []
  for clip in clips_lib.iter_clips(builder, split, max_clips=HELDOUT_CLIPS):
    gt = clip["frames"].astype(np.float32) / 255.0        # [T, H, W, 3]
    pred = reconstruction.reconstruct_clip(variables, mcfg, clip["frames"],
                                           landmarks=clip["landmarks"])
    l1.append(np.abs(pred - gt).mean())
    lp.append(np.asarray(lpips_lib.lpips(pred, gt)).mean())
  return {"heldout_loss": float(np.mean(l1)), "heldout_l1": float(np.mean(l1)),
          "heldout_lpips": float(np.mean(lp)), "heldout_split": split}


def _motion(run_dir: str, builder, cfg) -> dict:
  from osmnet_jax.evaluation import motion as motion_eval
  from osmnet_jax.stages import motion as motion_stage

  motion = workdir_lib.load_motion(run_dir, "osmnet")
  stage = motion_stage.MotionStage(motion.cfg)
  terms = jax.jit(lambda p, b: stage.loss(p, b, jax.random.PRNGKey(0))[1])
  rows, weights = [], []
  for b in motion_stage._train_windows(builder, motion.cfg, seed=cfg.seed, batch=16,  # noqa: SLF001
                                       split="test"):
    rows.append(jax.device_get(terms(motion.params, b)))
    weights.append(len(b["pose"]))
  if not rows:
    raise ValueError(f"{run_dir}: the test split has no window of {motion.cfg.num_frames} frames")

  def mean(k):
    return float(np.average([float(r[k]) for r in rows], weights=weights))

  hm = motion_eval.evaluate_motion(run_dir, builder, models=("osmnet",))["osmnet"]["head_motion"]
  return {"heldout_loss": mean("rec_l1"), "heldout_objective": mean("loss"),
          "heldout_map_mse": mean("map_mse"), "diversity_ratio": hm.get("diversity_ratio"),
          "pose_fd": hm.get("pose_fd"), "heldout_split": "test"}


def _expression(run_dir: str, builder, cfg) -> dict:
  del builder, cfg
  path = os.path.join(workdir_lib.checkpoint_dir(run_dir, "expression"), "eval.json")
  with open(path) as f:
    ev = json.load(f)["eval"]
  return {"heldout_loss": ev["landmark_l1"], "landmark_l1_px": ev["landmark_l1_px"],
          "mouth_open_corr": ev["mouth_open_corr"], "heldout_split": ev["split"]}


_SCORERS = {"renderer": _renderer, "motion": _motion, "expression": _expression}


def score(stage: str, run_dir: str, cfg) -> dict:
  """``{"heldout_loss": float, ...stage metrics}`` of the run trained in ``run_dir``."""
  from osmnet_jax.input import datasets

  return _SCORERS[stage](run_dir, datasets.get_builder(cfg.data), cfg)
