"""The example format every osmnet_jax dataset writes (DESIGN.md §2).

One example = one clip of T frames at 25 fps with 16 kHz audio:

  frames     uint8   [T, H, W, 3]   zlib-compressed tensor (no ffmpeg needed to read it back)
  landmarks  float32 [T, 68, 2]     iBUG-300W order, (x, y) pixels of the crop
  pose       float32 [T, 6]         yaw, pitch, roll (rad), tx, ty, scale (face/geometry.py);
                                    raw values; normalisation statistics are in the metadata
  mel        float32 [4T, 80]       osmnet_jax.audio.log_mel
  audio      int16   [640 T]        the clip's audio (optional per builder, present in ours)
  speaker    string                 identity / speaker id (train/test splits never share one)
  clip_id    string                 unique within the dataset

Builders may add extra keys (``synth_talk`` adds ground-truth ``mouth_open`` [T] and the
generator seed); the input pipeline reads only what it needs.
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from osmnet_jax import audio as audio_lib
from osmnet_jax.face import geometry as face_geometry

# Keys every dataset provides, with their per-frame trailing shapes.
REQUIRED_KEYS = ("frames", "landmarks", "pose", "mel", "audio", "speaker", "clip_id")


def features(size: int, extra: dict | None = None) -> tfds.features.FeaturesDict:
  """FeaturesDict for square crops of ``size`` pixels."""
  spec = {
      "frames": tfds.features.Tensor(
          shape=(None, size, size, 3), dtype=np.uint8, encoding=tfds.features.Encoding.ZLIB
      ),
      "landmarks": tfds.features.Tensor(
          shape=(None, face_geometry.NUM_LANDMARKS, 2), dtype=np.float32
      ),
      "pose": tfds.features.Tensor(shape=(None, 6), dtype=np.float32),
      "mel": tfds.features.Tensor(shape=(None, audio_lib.N_MELS), dtype=np.float32),
      "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16),
      "speaker": tfds.features.Text(),
      "clip_id": tfds.features.Text(),
  }
  spec.update(extra or {})
  return tfds.features.FeaturesDict(spec)


def check_example(ex: dict, size: int) -> None:
  """Raise ValueError naming the field if ``ex`` breaks the format (used before writing)."""
  t = ex["frames"].shape[0]
  want = {
      "frames": ((t, size, size, 3), np.uint8),
      "landmarks": ((t, face_geometry.NUM_LANDMARKS, 2), np.float32),
      "pose": ((t, 6), np.float32),
      "mel": ((audio_lib.MEL_PER_FRAME * t, audio_lib.N_MELS), np.float32),
      "audio": ((audio_lib.SAMPLES_PER_FRAME * t,), np.int16),
  }
  for key, (shape, dtype) in want.items():
    arr = np.asarray(ex[key])
    if arr.shape != shape or arr.dtype != dtype:
      raise ValueError(
          f"example {ex.get('clip_id', '?')!r}: {key} is {arr.dtype}{list(arr.shape)}, "
          f"expected {np.dtype(dtype)}{list(shape)}"
      )
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
      raise ValueError(f"example {ex.get('clip_id', '?')!r}: {key} has NaN/inf values")
  if t < 1:
    raise ValueError(f"example {ex.get('clip_id', '?')!r} has no frames")


def pose_statistics(poses: list[np.ndarray]) -> dict:
  """Mean/std/percentiles of per-frame poses over a split, stored in the dataset metadata."""
  allp = np.concatenate([np.asarray(p, np.float64).reshape(-1, 6) for p in poses], 0)
  return {
      "mean": allp.mean(0).tolist(),
      "std": np.maximum(allp.std(0), 1e-6).tolist(),
      "p01": np.percentile(allp, 1, axis=0).tolist(),
      "p99": np.percentile(allp, 99, axis=0).tolist(),
      "num_frames": int(allp.shape[0]),
  }


class LocalDatasetInfo(tfds.core.DatasetInfo):
  """DatasetInfo of a dataset that is only ever built locally.

  A builder whose dataset is not built yet asks ``initialize_from_bucket`` for a pre-computed
  copy on the TFDS bucket; TFDS makes a ``tmp*tfds`` folder in the system temp dir for that and
  never removes it. These datasets are never on the bucket, so there is nothing to look up.
  """

  def initialize_from_bucket(self) -> None:
    pass
