"""Real test videos made offline, shared by the preprocessing tests (and a check of them).

A video is scikit-image's astronaut photo (a real face) moved by known similarity warps
(cv2.warpAffine), 25 fps, with speech-like audio from data.synth_talk.speech muxed in. Tests know
every frame's warp, so the true position of any point of the photo is known in every frame.
"""
from __future__ import annotations

import functools
import os

import cv2
import numpy as np

from osmnet_jax import media

FRAME = 192  # frame side of the test videos (px)


@functools.lru_cache(maxsize=None)
def base_image() -> np.ndarray:
  """uint8 [192, 192, 3]: the astronaut's head and shoulders (face box ~70 px, centred)."""
  import skimage.data

  img = skimage.data.astronaut()[0:288, 84:372]
  return cv2.resize(img, (FRAME, FRAME), interpolation=cv2.INTER_AREA)


FACE_CENTER = (96.0, 78.0)  # approx. face centre in base_image (rotation/scale pivot)


def warps(num_frames: int, shift=(0.0, 0.0), roll_deg=0.0, scale=(1.0, 1.0), wobble=0.0):
  """[T, 2, 3] similarity warps about FACE_CENTER: translation ramps 0 -> shift, roll ramps
  0 -> roll_deg (counter-clockwise in the image), scale ramps scale[0] -> scale[1]; ``wobble``
  adds a 2-px sinusoidal jitter."""
  out = []
  for t in range(num_frames):
    a = t / max(num_frames - 1, 1)
    m = cv2.getRotationMatrix2D(FACE_CENTER, roll_deg * a, scale[0] + (scale[1] - scale[0]) * a)
    m[0, 2] += shift[0] * a + wobble * np.sin(t / 3)
    m[1, 2] += shift[1] * a + wobble * np.cos(t / 4)
    out.append(m)
  return np.stack(out)


def warp_points(points: np.ndarray, m: np.ndarray) -> np.ndarray:
  """[N, 2] base-image pixels -> frame pixels under one [2, 3] warp."""
  return points @ m[:, :2].T + m[:, 2]


def speech(num_frames: int, seed: int = 0) -> np.ndarray:
  from data.synth_talk.speech import synthesize_speech

  audio, _ = synthesize_speech(np.random.default_rng(seed), num_frames)
  return np.asarray(audio, np.float32)


def make_video(path: str, ms: np.ndarray, seed: int = 0, audio: str = "speech",
               sample_rate: int = 16_000, image: np.ndarray | None = None,
               oracle: np.ndarray | None = None) -> str:
  """Write the astronaut moved by warps ``ms`` [T, 2, 3] to ``path`` (mp4 via write_video).

  audio: 'speech', 'silence' (digital zero) or 'none' (no audio stream). ``oracle``: base-image
  landmarks [68, 2]; writes their warped positions to VIDEO.landmarks.npy.
  """
  img = base_image() if image is None else image
  frames = np.stack([cv2.warpAffine(img, m, (img.shape[1], img.shape[0]),
                                    flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                     for m in ms])
  t = len(ms)
  sound = None
  if audio == "speech":
    sound = speech(t, seed)
  elif audio == "silence":
    sound = np.zeros(t * 640, np.float32)
  if sound is not None and sample_rate != 16_000:
    import librosa

    sound = librosa.resample(sound, orig_sr=16_000, target_sr=sample_rate)
  media.write_video(path, frames, audio=sound, sample_rate=sample_rate)
  if oracle is not None:
    np.save(os.path.splitext(path)[0] + ".landmarks.npy",
            np.stack([warp_points(oracle, m) for m in ms]).astype(np.float32))
  return path


def test_made_video_decodes_with_known_motion(tmp_path):
  ms = warps(30, shift=(20, -10))
  path = make_video(str(tmp_path / "v.mp4"), ms)
  frames = media.read_frames(path)
  assert frames.shape == (30, FRAME, FRAME, 3)
  # Frame 29 equals the base image shifted by (20, -10): compare an interior patch.
  want = base_image()[40:120, 40:120].astype(float)
  got = frames[29][30:110, 60:140].astype(float)
  assert np.abs(got - want).mean() < 8.0  # H.264 at crf 18
  audio = media.read_audio(path)
  assert abs(len(audio) - 30 * 640) <= 1024 + 640
  assert 0.01 < np.sqrt(np.mean(audio ** 2)) < 0.7
