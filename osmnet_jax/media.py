"""Video / audio file I/O through the ffmpeg binary that the imageio-ffmpeg wheel ships.

No system ffmpeg is needed. Writing is atomic: a file appears under its final name only once
ffmpeg has finished (temp file + rename), so a crash never leaves a half-written mp4.
"""
from __future__ import annotations

import os
import subprocess
import tempfile

import numpy as np

from osmnet_jax import audio as audio_lib


def ffmpeg_exe() -> str:
  import imageio_ffmpeg

  return imageio_ffmpeg.get_ffmpeg_exe()


def write_video(
    path: str,
    frames: np.ndarray,
    fps: int = audio_lib.FPS,
    audio: np.ndarray | None = None,
    sample_rate: int = audio_lib.SAMPLE_RATE,
    crf: int = 18,
) -> str:
  """Encode uint8 frames [T, H, W, 3] (RGB) to an H.264 mp4, muxing mono audio if given.

  Odd frame sizes are padded to even ones (yuv420p needs them). Returns ``path``.
  """
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"write_video expects uint8 [T,H,W,3], got {frames.dtype}{list(frames.shape)}")
  t, h, w, _ = frames.shape
  if h % 2 or w % 2:
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    h, w = frames.shape[1:3]
  out_dir = os.path.dirname(os.path.abspath(path))
  os.makedirs(out_dir, exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".mp4", dir=out_dir)
  os.close(fd)
  wav_tmp = None
  try:
    cmd = [ffmpeg_exe(), "-y", "-loglevel", "error",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "-"]
    if audio is not None:
      import soundfile as sf

      fd, wav_tmp = tempfile.mkstemp(suffix=".wav", dir=out_dir)
      os.close(fd)
      sf.write(wav_tmp, audio_lib.to_float(audio), sample_rate, subtype="PCM_16")
      cmd += ["-i", wav_tmp, "-c:a", "aac", "-b:a", "128k", "-shortest"]
    cmd += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", str(crf), "-movflags", "+faststart", tmp]
    proc = subprocess.run(cmd, input=frames.tobytes(), capture_output=True)
    if proc.returncode != 0:
      raise RuntimeError(f"ffmpeg failed writing {path}: {proc.stderr.decode(errors='replace')[-2000:]}")
    os.replace(tmp, path)
  finally:
    for f in (tmp, wav_tmp):
      if f and os.path.exists(f):
        os.remove(f)
  return path
