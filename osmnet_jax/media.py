"""Video / audio file I/O through the ffmpeg binary that the imageio-ffmpeg wheel ships.

No system ffmpeg is needed. Reading: ``probe`` (size, fps, duration, audio), ``iter_frames`` /
``read_frames`` (RGB frames resampled to 25 fps), ``read_audio`` (16 kHz mono float32); all raise
``MediaError`` naming the file. Writing is atomic: a file appears under its final name only once
ffmpeg has finished (temp file + rename), so a crash never leaves a half-written mp4.
"""
from __future__ import annotations

import dataclasses
import os
import re
import secrets
import subprocess
import tempfile
from typing import Iterator

import numpy as np

from osmnet_jax import audio as audio_lib


def to_uint8(frames) -> np.ndarray:
  """Float frames in [0, 1] (numpy or jax, any shape) -> uint8, clipped then rounded to nearest.

  The one conversion every writer and pixel metric uses, so a saved mp4 and the frames a metric
  scores hold the same values. (Audio2Head's port keeps its reference's truncation on purpose.)
  """
  a = np.asarray(frames, np.float32)
  return np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)


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
  # ffmpeg creates the temp file itself, so it gets the mode of any new file (0666 minus the
  # user's umask); a mkstemp file would keep mode 0600 through the rename.
  tmp = os.path.join(
      out_dir, f".{os.path.basename(path)[:100]}.{os.getpid()}-{secrets.token_hex(4)}.mp4")
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
    cmd += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", str(crf), "-movflags", "+faststart",
            tmp]
    proc = subprocess.run(cmd, input=frames.tobytes(), capture_output=True)
    if proc.returncode != 0:
      err = proc.stderr.decode(errors="replace")[-2000:]
      raise RuntimeError(f"ffmpeg failed writing {path}: {err}")
    os.replace(tmp, path)
  finally:
    for f in (tmp, wav_tmp):
      if f and os.path.exists(f):
        os.remove(f)
  return path


# ----------------------------------------------------------------------------------------------
# Reading. Every function raises MediaError naming the file, so a caller processing a folder can
# report the reason and go on with the next file.


class MediaError(RuntimeError):
  """A media file cannot be read (missing, empty, corrupt, no video stream, ...)."""


class NoVideoStream(MediaError):
  """The file is readable media but holds no picture track (e.g. an audio-only file)."""


@dataclasses.dataclass(frozen=True)
class Probe:
  path: str
  width: int  # displayed size, i.e. after the container's rotation metadata is applied
  height: int
  fps: float  # nominal frame rate of the video stream (0 when ffmpeg cannot tell)
  duration: float  # seconds (container duration; 0 when unknown)
  has_audio: bool
  sample_rate: int  # of the first audio stream (0 without audio)
  rotation: int  # degrees of display rotation ffmpeg applies while decoding


_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_VIDEO = re.compile(r"Stream #\S+.*?: Video: .*")
_AUDIO = re.compile(r"Stream #\S+.*?: Audio: .*")
_SIZE = re.compile(r"[ ,](\d{2,5})x(\d{2,5})[ ,]")
_FPS = re.compile(r"([\d.]+)(k?) (?:fps|tbr)")
_RATE = re.compile(r"(\d+) Hz")
_ROTATION = re.compile(r"rotation of (-?[\d.]+) degrees")
_LOW_SCORE = re.compile(r"Format (\S+) detected only with low score")
_STREAM = re.compile(r"Stream #\S+?: (\w+: [^,\n]*)")


def _check_readable(path: str) -> None:
  if not os.path.exists(path):
    raise MediaError(f"{path}: file does not exist")
  if not os.path.isfile(path):
    raise MediaError(f"{path}: not a regular file")
  if os.path.getsize(path) == 0:
    raise MediaError(f"{path}: zero-length file")
  if not os.access(path, os.R_OK):
    raise MediaError(f"{path}: permission denied (not readable)")


def probe(path: str) -> Probe:
  """Stream facts from ``ffmpeg -i`` (no ffprobe ships with imageio-ffmpeg)."""
  _check_readable(path)
  proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", path], capture_output=True)
  err = proc.stderr.decode(errors="replace")
  video = _VIDEO.search(err)
  if video is None:
    last = err.strip().splitlines()[-1:] or ["no output"]
    if "Invalid data" in err or "moov atom not found" in err or "Stream #" not in err:
      raise MediaError(f"{path}: not a readable media file ({last[0]})")
    # ffmpeg can "find" a text format in junk bytes (e.g. random data read as an lrc subtitle)
    # and then says so; such a file is not media, whatever streams it reports.
    guess = _LOW_SCORE.search(err)
    if guess:
      raise MediaError(f"{path}: not a readable media file (ffmpeg only guessed the format "
                       f"'{guess.group(1)}' with a low score)")
    streams = "; ".join(m.group(1) for m in _STREAM.finditer(err))
    raise NoVideoStream(f"{path}: no video stream (ffmpeg finds: {streams}); "
                        "give a video file with a picture track")
  size = _SIZE.search(video.group(0))
  if size is None:
    raise MediaError(f"{path}: cannot parse the video frame size from {video.group(0)!r}")
  w, h = int(size.group(1)), int(size.group(2))
  rot_m = _ROTATION.search(err[video.end():video.end() + 2000])
  rotation = int(round(float(rot_m.group(1)))) % 360 if rot_m else 0
  if rotation in (90, 270):
    w, h = h, w
  fps_m = _FPS.search(video.group(0))
  fps = float(fps_m.group(1)) * (1000 if fps_m and fps_m.group(2) else 1) if fps_m else 0.0
  dur_m = _DURATION.search(err)
  duration = 0.0
  if dur_m:
    duration = int(dur_m.group(1)) * 3600 + int(dur_m.group(2)) * 60 + float(dur_m.group(3))
  audio = _AUDIO.search(err)
  rate_m = _RATE.search(audio.group(0)) if audio else None
  return Probe(path, w, h, fps, duration, audio is not None,
               int(rate_m.group(1)) if rate_m else 0, rotation)


def iter_frames(
    path: str,
    fps: int = audio_lib.FPS,
    size: tuple[int, int] | None = None,
    info: Probe | None = None,
) -> Iterator[np.ndarray]:
  """Decode a video as uint8 RGB frames [H, W, 3] resampled to a constant ``fps``.

  Variable or other frame rates are resampled by ffmpeg's ``fps`` filter (nearest frame in time,
  dropping or repeating frames) with ``start_time=0``, the same time origin ``read_audio`` uses,
  so video frame ``t`` lines up with audio samples ``[640 t, 640 (t + 1))``.

  Args:
    size: (width, height) to scale to (e.g. a small copy for face detection); default: the
      displayed size from ``probe``.

  Frames are streamed (a 1080p clip does not sit in memory twice). A truncated file yields the
  frames ffmpeg could decode; a file with no decodable frame raises MediaError.
  """
  info = info or probe(path)
  w, h = size or (info.width, info.height)
  vf = f"fps={fps}:start_time=0,scale={w}:{h}:flags=area"
  cmd = [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-i", path, "-map", "0:v:0", "-vf", vf,
         "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  nbytes = w * h * 3
  count = 0
  try:
    while True:
      buf = proc.stdout.read(nbytes)
      if len(buf) < nbytes:
        break
      count += 1
      yield np.frombuffer(buf, np.uint8).reshape(h, w, 3)
  finally:
    proc.stdout.close()
    if proc.poll() is None:  # consumer stopped early
      proc.kill()
    proc.wait()
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
  if count == 0:
    raise MediaError(f"{path}: no decodable video frame ({err.strip()[-300:] or 'empty stream'})")


def read_frames(path: str, fps: int = audio_lib.FPS, size=None, info=None) -> np.ndarray:
  """All frames: uint8 [T, H, W, 3] (see ``iter_frames``)."""
  return np.stack(list(iter_frames(path, fps, size, info)))


def read_audio(path: str, sample_rate: int = audio_lib.SAMPLE_RATE) -> np.ndarray:
  """Mono float32 audio [S] in [-1, 1] at ``sample_rate`` from any file ffmpeg reads.

  ffmpeg decodes the first audio stream, downmixes and resamples to a temporary 16-bit wav
  (librosa >= 1.0 reads only through soundfile, which cannot open mp4/aac). Timestamps start at
  the container origin like ``iter_frames`` (``first_pts=0`` pads a late-starting stream).
  """
  import soundfile as sf

  _check_readable(path)
  fd, wav = tempfile.mkstemp(suffix=".wav")
  os.close(fd)
  try:
    cmd = [ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error", "-i", path, "-map", "0:a:0",
           "-vn", "-ac", "1", "-ar", str(sample_rate), "-af", "aresample=async=1:first_pts=0",
           "-c:a", "pcm_s16le", "-f", "wav", wav]
    proc = subprocess.run(cmd, capture_output=True)
    err = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
      if "matches no streams" in err or "Stream map" in err:
        raise MediaError(f"{path}: no audio stream")
      raise MediaError(f"{path}: cannot decode audio ({err.strip()[-300:]})")
    x, sr = sf.read(wav, dtype="float32", always_2d=True)
  finally:
    os.remove(wav)
  x = x.mean(axis=1)
  if sr != sample_rate:  # ffmpeg honours -ar; kept for wav inputs from other tools
    import librosa

    x = librosa.resample(x, orig_sr=sr, target_sr=sample_rate).astype(np.float32)
  if x.size == 0:
    raise MediaError(f"{path}: audio stream is empty")
  return x
