"""Audio conventions and log-mel features shared by every dataset and by generation.

Conventions (DESIGN.md §2): video 25 fps, audio 16 kHz mono, log-mel with 80 bins, hop 160
samples (10 ms), window 640 samples (40 ms) -> exactly 4 mel frames per video frame.

Alignment: video frame ``t`` covers audio samples ``[640 t, 640 (t + 1))``. Mel frame ``j`` is
*centred* on sample ``160 j`` (librosa ``center=True``), so frames ``4t .. 4t+3`` belong to video
frame ``t``. A clip of ``T`` frames has exactly ``4T`` mel frames (librosa returns ``4T + 1``; the
last one, centred on the first sample after the clip, is dropped).

The per-frame model input is a time window of +-2 video frames: mel frames ``4(t-2) .. 4(t+3)-1``
= 20 x 80, edge-padded at clip borders (``mel_windows``).
"""
from __future__ import annotations

import functools

import numpy as np

SAMPLE_RATE = 16_000
FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
HOP_LENGTH = 160
WIN_LENGTH = 640
N_FFT = 1024  # [ours] zero-padded FFT of the 640-sample Hann window: finer mel filters at 80 bins.
N_MELS = 80
FMIN = 55.0
FMAX = 7600.0
MEL_PER_FRAME = SAMPLES_PER_FRAME // HOP_LENGTH  # 4
WINDOW_RADIUS = 2  # +-2 video frames -> 5 frames -> 20 mel frames
MEL_WINDOW = (2 * WINDOW_RADIUS + 1) * MEL_PER_FRAME  # 20
LOG_FLOOR = 1e-5


@functools.lru_cache(maxsize=None)
def _mel_basis() -> np.ndarray:
  import librosa  # local import: librosa pulls numba, slow to import

  return librosa.filters.mel(
      sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN, fmax=FMAX
  ).astype(np.float32)


def to_float(audio: np.ndarray) -> np.ndarray:
  """int16 PCM or float audio -> float32 in [-1, 1]."""
  audio = np.asarray(audio)
  if audio.dtype == np.int16:
    return audio.astype(np.float32) / 32768.0
  return audio.astype(np.float32)


def to_int16(audio: np.ndarray) -> np.ndarray:
  """float audio in [-1, 1] -> int16 PCM; the inverse of ``to_float`` (same 32768 scale, so
  int16 -> float -> int16 is exact; +1.0 clips to 32767)."""
  return np.clip(np.round(np.asarray(audio) * 32768.0), -32768, 32767).astype(np.int16)


def log_mel(audio: np.ndarray, num_frames: int | None = None) -> np.ndarray:
  """Log-mel spectrogram aligned to video frames.

  Args:
    audio: [S] mono 16 kHz samples (int16 or float in [-1, 1]).
    num_frames: number of video frames T. Defaults to ``len(audio) // 640``; audio shorter than
      ``640 T`` is zero-padded, longer is ignored.

  Returns:
    float32 [4T, 80]: natural log of the power mel spectrogram, floored at 1e-5.
  """
  import librosa

  x = to_float(audio)
  if x.ndim != 1:
    raise ValueError(f"log_mel expects mono audio [S], got shape {x.shape}")
  if num_frames is None:
    num_frames = len(x) // SAMPLES_PER_FRAME
  n = num_frames * SAMPLES_PER_FRAME
  x = np.pad(x[:n], (0, max(0, n - len(x))))
  spec = librosa.stft(
      x, n_fft=N_FFT, hop_length=HOP_LENGTH, win_length=WIN_LENGTH, window="hann", center=True,
      pad_mode="constant",
  )
  power = np.abs(spec).astype(np.float32) ** 2  # [F, 4T + 1]
  mel = _mel_basis() @ power
  mel = np.log(np.maximum(mel, LOG_FLOOR)).T  # [4T + 1, 80]
  return np.ascontiguousarray(mel[: num_frames * MEL_PER_FRAME])


def mel_windows(mel: np.ndarray, start: int = 0, num_frames: int | None = None) -> np.ndarray:
  """Per-video-frame mel windows (numpy reference of the tf.data slicing).

  Args:
    mel: [4T, 80] log-mel of a whole clip.
    start, num_frames: the video frames to produce windows for (default: all).

  Returns:
    [num_frames, 20, 80]: window ``i`` holds mel frames ``4(t-2) .. 4(t+3)-1`` of frame
    ``t = start + i``, edge-padded (repeat the first/last mel frame) at the clip borders.
  """
  total = mel.shape[0] // MEL_PER_FRAME
  if num_frames is None:
    num_frames = total - start
  pad = WINDOW_RADIUS * MEL_PER_FRAME
  padded = np.pad(mel, ((pad, pad), (0, 0)), mode="edge")
  idx = (np.arange(num_frames)[:, None] + start) * MEL_PER_FRAME + np.arange(MEL_WINDOW)[None]
  return padded[idx]


def frame_energy(audio: np.ndarray, num_frames: int) -> np.ndarray:
  """RMS energy of the audio under each video frame: float32 [T]."""
  x = to_float(audio)[: num_frames * SAMPLES_PER_FRAME]
  x = np.pad(x, (0, num_frames * SAMPLES_PER_FRAME - len(x)))
  return np.sqrt(np.mean(x.reshape(num_frames, SAMPLES_PER_FRAME) ** 2, axis=1)).astype(np.float32)
