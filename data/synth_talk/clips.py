"""One synthetic clip = identity + speech + head motion + blinks, rendered.

Every clip is a pure function of ``(seed, split, index)`` (NumPy ``default_rng`` seeded with
that triple), so two builds with one seed are identical and any clip can be regenerated alone.
Identities are split-specific: train and test never share a face or a voice.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from data.synth_talk import face_render, motion, speech
from osmnet_jax import audio as audio_lib

SPLIT_CODES = {"train": 0, "test": 1}


@dataclasses.dataclass(frozen=True)
class SynthSpec:
  """What to generate (mirrors the TFDS builder config)."""

  resolution: int = 64
  num_train: int = 200
  num_test: int = 32
  seconds: float = 2.0
  num_train_ids: int = 40
  num_test_ids: int = 8
  seed: int = 0

  @property
  def num_frames(self) -> int:
    return int(round(self.seconds * audio_lib.FPS))

  def count(self, split: str) -> int:
    return {"train": self.num_train, "test": self.num_test}[split]

  def validate(self) -> None:
    if self.resolution < 16:
      raise ValueError(f"resolution={self.resolution}: must be >= 16 px")
    if self.num_frames < 1:
      raise ValueError(f"seconds={self.seconds}: need at least one 25-fps frame")
    if self.num_train < 1 or self.num_test < 0:
      raise ValueError(
          f"num_train={self.num_train}, num_test={self.num_test}: need >= 1 train clip")
    if self.num_train_ids < 1 or self.num_test_ids < 1:
      raise ValueError("num_train_ids and num_test_ids must be >= 1")


def identity(spec: SynthSpec, split: str, k: int) -> face_render.Identity:
  rng = np.random.default_rng([spec.seed, 100 + SPLIT_CODES[split], k])
  return face_render.Identity.sample(rng)


def _blinks(rng: np.random.Generator, n: int) -> np.ndarray:
  """Blinks every 2-6 s, each a 5-frame close/open."""
  track = np.zeros(n)
  shape = np.array([0.5, 1.0, 1.0, 0.6, 0.2])
  t = int(rng.uniform(0, 3) * audio_lib.FPS)
  while t < n:
    seg = shape[: n - t]
    track[t:t + len(seg)] = seg
    t += int(rng.uniform(2, 6) * audio_lib.FPS)
  return track


def generate_clip(spec: SynthSpec, split: str, index: int, render: bool = True,
                  tracks: bool = False) -> dict:
  """Generate clip ``index`` of ``split``.

  Returns the schema fields (data/schema.py) plus synth-only ground truth:
  ``mouth_open`` [T], ``stress`` [T] (stressed-syllable onsets, drives nods), ``framing`` [3]
  (identity's resting tx, ty, scale). With ``render=False`` frames/landmarks are omitted (cheap:
  used for pose statistics). ``tracks=True`` adds ``_tracks`` (identity, mouth_round, blink:
  what is needed to re-render the clip with other expressions; not a dataset field).
  """
  n_ids = spec.num_train_ids if split == "train" else spec.num_test_ids
  ident_idx = index % n_ids
  ident = identity(spec, split, ident_idx)
  rng = np.random.default_rng([spec.seed, SPLIT_CODES[split], index])
  t_len = spec.num_frames
  wav, info = speech.synthesize_speech(rng, t_len, ident.voice)
  pose, _ = motion.sample_motion(rng, info["stress"], ident.framing)
  blink = _blinks(rng, t_len)
  ex = {
      "pose": pose,
      "audio": audio_lib.to_int16(wav),
      "speaker": f"{split}_id{ident_idx:04d}",
      "clip_id": f"{split}_{index:06d}",
      "mouth_open": info["mouth_open"],
      "stress": info["stress"],
      "framing": ident.framing.astype(np.float32),
  }
  if render:
    frames, lm = face_render.render_frames(
        ident, pose, info["mouth_open"], info["mouth_round"], blink, spec.resolution
    )
    ex["frames"] = frames
    ex["landmarks"] = lm
    ex["mel"] = audio_lib.log_mel(ex["audio"], t_len)
  if tracks:
    ex["_tracks"] = {"identity": ident, "mouth_round": info["mouth_round"], "blink": blink}
  return ex


def redraw_for_example(example: dict, num: int, seed: int = 0) -> np.ndarray:
  """``num`` fresh valid head motions [num, T, 6] for a stored synth_talk example's audio."""
  return motion.redraw_head_motions(np.asarray(example["stress"]), np.asarray(example["framing"]),
                                    num, seed)
