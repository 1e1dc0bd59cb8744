"""Renderer reconstruction: animate a clip's first frame with the clip's own keypoints.

This is FOMM's reconstruction protocol (the renderer's upper bound in OSM-Net: motion comes from
the ground-truth frames); a renderer with the landmark spline (renderer.uses_landmarks) is also
driven by the clip's landmarks (synth_talk: exact; prepared videos: the landmark backend's).
Used by ``eval.py --mode reconstruction``, by the sample video that ``train.py`` writes after
the renderer stage, and by TensorBoard image grids.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from osmnet_jax import media, renderer
from osmnet_jax.inference import render


def reconstruct_clip(variables: dict, cfg, frames: np.ndarray, batch: int = 16,
                     landmarks: np.ndarray | None = None) -> np.ndarray:
  """frames uint8 [T, H, W, 3] -> predictions float32 [T, H, W, 3] in [0, 1]: frame 0 moved to
  every frame's own keypoints, ``batch`` frames per jitted call (inference/render.py).
  ``landmarks`` [T, 68, 2] px: the frames' landmarks, needed (and only read) by a renderer with
  a landmark motion (renderer.uses_landmarks), which the clip's landmarks then drive as well."""
  kp = render.detect_sequence(variables, cfg, frames, batch)  # [T, K, ...]
  if renderer.uses_landmarks(cfg):
    if landmarks is None:
      raise ValueError("this renderer's flow reads landmarks (dense_motion_params."
                       "landmark_motion): pass the clip's landmarks [T, 68, 2] px")
    kp = renderer.with_landmarks(kp, landmarks, frames.shape[1])
  kp_src = jax.tree.map(lambda x: x[:1], kp)
  return render.sequence_renderer(cfg, uint8=False)(variables, frames[0], kp_src, kp, batch)


def _draw_keypoints(img: np.ndarray, kp: np.ndarray) -> np.ndarray:
  """img uint8 [H, W, 3], kp [K, 2] in [-1, 1] (x, y) -> copy with coloured dots."""
  import cv2

  img = np.ascontiguousarray(img)
  h, w = img.shape[:2]
  k = kp.shape[0]
  for i, (x, y) in enumerate(kp):
    hue = int(180 * i / max(k, 1))
    col = cv2.cvtColor(np.uint8([[[hue, 255, 255]]]), cv2.COLOR_HSV2RGB)[0, 0].tolist()
    cv2.circle(img, (int(round((x + 1) * w / 2 - 0.5)), int(round((y + 1) * h / 2 - 0.5))),
               max(1, h // 64), col, -1)
  return img


def renderer_grid(variables: dict, cfg, source: np.ndarray, driving: np.ndarray,
                  max_rows: int = 4, landmarks: tuple | None = None) -> np.ndarray:
  """TensorBoard grid, one row per example: source+kp | driving+kp | deformed | occlusion | pred.

  source, driving: uint8 [B, H, W, 3]; landmarks: (source, driving) [B, 68, 2] px, for a
  renderer with a landmark motion. Returns uint8 [rows*H, 5*W, 3].
  """
  from osmnet_jax.nn.grid_sample import grid_sample, resize_bilinear

  src = jnp.asarray(source[:max_rows], jnp.float32) / 255.0
  drv = jnp.asarray(driving[:max_rows], jnp.float32) / 255.0
  kp_s = renderer.detect_keypoints(variables, cfg, src)
  kp_d = renderer.detect_keypoints(variables, cfg, drv)
  if renderer.uses_landmarks(cfg):
    size = src.shape[1]
    kp_s = renderer.with_landmarks(kp_s, np.asarray(landmarks[0])[:max_rows], size)
    kp_d = renderer.with_landmarks(kp_d, np.asarray(landmarks[1])[:max_rows], size)
  out = renderer.render(variables, cfg, src, kp_s, kp_d)
  h, w = src.shape[1:3]
  deformed = grid_sample(src, resize_bilinear(out["deformation"], (h, w)))
  occ = resize_bilinear(out["occlusion_map"], (h, w))
  to8 = media.to_uint8
  rows = []
  for i in range(src.shape[0]):
    cols = [_draw_keypoints(to8(src[i]), np.asarray(kp_s["value"][i])),
            _draw_keypoints(to8(drv[i]), np.asarray(kp_d["value"][i])),
            to8(deformed[i]), np.repeat(to8(occ[i]), 3, -1), to8(out["prediction"][i])]
    rows.append(np.concatenate(cols, 1))
  return np.concatenate(rows, 0)
