"""Held-out evaluation of the expression stage: predicted vs true landmarks and keypoints."""
from __future__ import annotations

import jax
import numpy as np

from osmnet_jax.face import geometry as fg
from osmnet_jax.stages.expression import BATCH_KEYS, ExpressionStage


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
