"""Inputs and outputs of generation: the face photo, the speech, the written videos and poses."""
from __future__ import annotations

import json
import os

import numpy as np

from osmnet_jax import audio as audio_lib
from osmnet_jax import media

POSE_NAMES = ("yaw", "pitch", "roll", "tx", "ty", "scale")


class GenerateError(RuntimeError):
  """A user-facing problem with the inputs or the workdir; the message says what to do."""


def _to_uint8(a: np.ndarray) -> np.ndarray:
  """Any numeric image array -> uint8: integers scaled by their type's range (uint16 / 257),
  floats taken as [0, 1]."""
  if a.dtype == np.uint8:
    return a
  if a.dtype == bool:
    return a.astype(np.uint8) * 255
  if np.issubdtype(a.dtype, np.integer):
    sixteen = a.dtype == np.uint16 or a.max(initial=0) > 255  # other ints: by their values
    top = 65535.0 if sixteen else 255.0
    return np.clip(np.round(a.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)
  return media.to_uint8(a)


def _pil_rgb(im) -> np.ndarray:
  """A Pillow image of any mode and bit depth -> uint8 RGB [H,W,3]. 16-bit greyscale ('I;16*',
  'I') is scaled to 8 bits (Pillow's own RGB conversion clips it to white); transparent images
  are composited on white."""
  from PIL import Image

  if im.mode.startswith("I;16"):
    return _to_uint8(np.asarray(im).astype(np.uint16))
  if im.mode == "I":  # 16-bit PNG greyscale in some Pillow versions (int32 holding 0..65535)
    a = np.asarray(im)
    return _to_uint8(a.astype(np.uint16) if a.max(initial=0) > 255 else a.astype(np.uint8))
  if im.mode == "F":
    a = np.asarray(im, np.float64)
    return _to_uint8(a if a.max(initial=0) <= 1.0 else a / 255.0)
  if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
    rgba = im.convert("RGBA")
    im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
  return np.asarray(im.convert("RGB"))


def read_image(image) -> np.ndarray:
  """A path (any format Pillow reads, any bit depth or mode; EXIF rotation applied) or an array
  -> uint8 RGB [H,W,3]."""
  if isinstance(image, (str, os.PathLike)):
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = os.fspath(image)
    if not os.path.isfile(path):
      raise GenerateError(f"image {path}: file does not exist")
    try:
      with Image.open(path) as im:
        image = _pil_rgb(ImageOps.exif_transpose(im))
    except (UnidentifiedImageError, OSError) as e:
      raise GenerateError(f"image {path}: not a readable image ({e})") from e
  image = np.asarray(image)
  if image.ndim == 2:  # greyscale
    image = np.repeat(image[..., None], 3, -1)
  if image.ndim != 3 or image.shape[-1] not in (3, 4):
    raise GenerateError(f"image must be [H, W, 3] RGB, got shape {image.shape}")
  return np.ascontiguousarray(_to_uint8(image)[..., :3])


def read_speech(audio) -> np.ndarray:
  """A path (any format/rate ffmpeg reads), a float/int16 array at 16 kHz, or (array, rate)
  -> float32 mono [S] at 16 kHz. Raises GenerateError for unreadable or empty audio."""
  if isinstance(audio, (str, os.PathLike)):
    try:
      x = media.read_audio(os.fspath(audio))
    except media.MediaError as e:
      kind = "empty audio" if "empty" in str(e) or "zero-length" in str(e) else "unreadable audio"
      raise GenerateError(f"{kind}: {e}") from e
  else:
    rate = audio_lib.SAMPLE_RATE
    if isinstance(audio, tuple):
      audio, rate = audio
    x = audio_lib.to_float(np.asarray(audio))
    if x.ndim == 2:  # [S, channels]
      x = x.mean(1)
    if x.ndim != 1:
      raise GenerateError(f"audio array must be [S] or [S, channels], got {x.shape}")
    if rate != audio_lib.SAMPLE_RATE and x.size:
      import librosa

      x = librosa.resample(x, orig_sr=rate, target_sr=audio_lib.SAMPLE_RATE).astype(np.float32)
  if x.size < audio_lib.SAMPLES_PER_FRAME // 2:  # less than half a video frame (20 ms)
    raise GenerateError(f"empty audio: {x.size} samples at 16 kHz, need at least 20 ms of speech")
  return x.astype(np.float32)


def grid_frames(frames: np.ndarray, max_cols: int = 4) -> np.ndarray:
  """[N,T,H,W,3] -> [T, rows*H, cols*W, 3]: samples side by side (row-major, black padding)."""
  n, t, h, w, c = frames.shape
  cols = min(n, max_cols)
  rows = -(-n // cols)
  pad = rows * cols - n
  if pad:
    frames = np.concatenate([frames, np.zeros((pad, t, h, w, c), frames.dtype)])
  g = frames.reshape(rows, cols, t, h, w, c).transpose(2, 0, 3, 1, 4, 5)
  return g.reshape(t, rows * h, cols * w, c)


def write_outputs(out: dict, out_dir: str, meta: dict) -> list[str]:
  """sample_{i}.mp4 + grid.mp4 (audio muxed), poses.json, poses.png -> the written paths."""
  from osmnet_jax.generate import pose_plot

  os.makedirs(out_dir, exist_ok=True)
  frames, poses = out["frames"], out["poses"]
  paths = []
  for i in range(frames.shape[0]):
    paths.append(media.write_video(os.path.join(out_dir, f"sample_{i}.mp4"), frames[i],
                                   out["fps"], audio=out["audio"]))
  paths.append(media.write_video(os.path.join(out_dir, "grid.mp4"), grid_frames(frames),
                                 out["fps"], audio=out["audio"]))
  record = {**meta, "fps": out["fps"], "num_frames": int(poses.shape[1]),
            "pose_names": list(POSE_NAMES),
            "units": "yaw/pitch/roll radians; tx, ty, scale in crop units (osmnet_jax.face.pose)",
            "poses": np.round(poses, 6).tolist()}
  path = os.path.join(out_dir, "poses.json")
  with open(path, "w") as f:
    json.dump(record, f)
  paths.append(path)
  paths.append(pose_plot.plot_poses(poses, os.path.join(out_dir, "poses.png"), out["fps"],
                                    title=meta.get("title", "")))
  return paths


