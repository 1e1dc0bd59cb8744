"""Audio2Head's 41-dim audio features (inputs of its `audio2kp` and `audio2pose` models).

Per 10 ms frame (16 kHz audio, 25 ms analysis windows): 13 MFCCs, 26 log mel filterbank energies,
the F0 in Hz with unvoiced gaps filled, and a voiced flag (1/0) = 13 + 26 + 1 + 1 = 41 columns.
Video frame t (25 fps) uses feature rows 4t .. 4t+3 (`per_video_frame` -> [T,4,41]).

Audio2Head computes these with python_speech_features (`mfcc`, `logfbank`, default arguments)
and pyworld (`harvest`, frame_period 10 ms). This module re-implements the python_speech_features
semantics in numpy (no dependency on it; tests check it against a loop-by-loop reference):
  * the waveform is first centred and peak-normalised (x - mean, / max |x|), as Audio2Head does;
  * pre-emphasis y[0] = x[0], y[n] = x[n] - 0.97 x[n-1];
  * frames of round_half_up(0.025 sr) = 400 samples every 160, no window (rectangular),
    count 1 + ceil((N - 400) / 160) (1 if N <= 400), the last frame zero-padded;
  * power spectrum |rfft(frame, 512)|^2 / 512; frame energy = its sum (0 -> float eps);
  * 26 triangular filters between 0 Hz and sr/2 on the mel scale 2595 log10(1 + f/700), with
    edges at FFT bins floor((512 + 1) f / sr) (python_speech_features' bin rule, not librosa's);
    filter outputs of 0 -> float eps; `logfbank` = log of them;
  * MFCC = orthonormal DCT-II of the log filterbank, first 13, liftered by
    1 + 11 sin(pi n / 22), then column 0 replaced by log(frame energy).

Pitch: if `pyworld` is importable its `harvest(x, sr, frame_period=10)` is used exactly as
Audio2Head does (f0_floor 71 Hz, f0_ceil 800 Hz). pyworld is not a dependency of this project;
without it the F0 comes from `librosa.pyin` (same 71-800 Hz range, 10 ms hop, centred frames,
unvoiced -> 0) -- a DEVIATION: a different F0 tracker, so F0 values and voiced decisions differ
from the published features (the other 39 columns are unaffected). Pass `f0_fn` to plug in
another tracker. Unvoiced runs are then filled like Audio2Head's `inter_pitch`: leading run with
the first voiced value, trailing run with the last, interior runs by linear interpolation
between the voiced neighbours; all-unvoiced audio stays 0.
"""

from __future__ import annotations

import decimal
import math
from typing import Callable

import numpy as np
import scipy.fft

SAMPLE_RATE = 16_000
WINLEN = 0.025
WINSTEP = 0.01
NFFT = 512
NFILT = 26
NUMCEP = 13
PREEMPH = 0.97
CEPLIFTER = 22
F0_FLOOR = 71.0
F0_CEIL = 800.0
NUM_FEATURES = NUMCEP + NFILT + 2  # 41
ROWS_PER_VIDEO_FRAME = 4
_EPS = np.finfo(float).eps


def _round_half_up(x: float) -> int:
  return int(decimal.Decimal(x).quantize(decimal.Decimal("1"), rounding=decimal.ROUND_HALF_UP))


def hz2mel(hz):
  return 2595 * np.log10(1 + np.asarray(hz) / 700.0)


def mel2hz(mel):
  return 700 * (10 ** (np.asarray(mel) / 2595.0) - 1)


def mel_filterbank(nfilt: int = NFILT, nfft: int = NFFT, sample_rate: int = SAMPLE_RATE,
                   lowfreq: float = 0.0, highfreq: float | None = None) -> np.ndarray:
  """[nfilt, nfft//2+1] triangular filters with python_speech_features' integer bin edges."""
  highfreq = highfreq or sample_rate / 2
  pts = np.linspace(hz2mel(lowfreq), hz2mel(highfreq), nfilt + 2)
  edges = np.floor((nfft + 1) * mel2hz(pts) / sample_rate)
  i = np.arange(nfft // 2 + 1, dtype=np.float64)[None, :]
  lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
  with np.errstate(divide="ignore", invalid="ignore"):
    rise = np.where((i >= lo) & (i < mid), (i - lo) / (mid - lo), 0.0)
    fall = np.where((i >= mid) & (i < hi), (hi - i) / (hi - mid), 0.0)
  return rise + fall


def frame_signal(x: np.ndarray, frame_len: int, step: int) -> np.ndarray:
  """[num_frames, frame_len] frames; the tail is zero-padded to a whole frame."""
  n = len(x)
  num = 1 if n <= frame_len else 1 + int(math.ceil((n - frame_len) / step))
  padded = np.concatenate([x, np.zeros(((num - 1) * step + frame_len - n,), x.dtype)])
  idx = np.arange(frame_len)[None, :] + step * np.arange(num)[:, None]
  return padded[idx]


def fbank(x: np.ndarray, sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, np.ndarray]:
  """(filterbank energies [F,26], frame energies [F]) as python_speech_features.fbank."""
  x = np.asarray(x, np.float64)
  x = np.append(x[0], x[1:] - PREEMPH * x[:-1])
  frames = frame_signal(x, _round_half_up(WINLEN * sample_rate),
                       _round_half_up(WINSTEP * sample_rate))
  pspec = np.square(np.abs(np.fft.rfft(frames, NFFT))) / NFFT
  energy = pspec.sum(axis=1)
  energy = np.where(energy == 0, _EPS, energy)
  feat = pspec @ mel_filterbank(NFILT, NFFT, sample_rate).T
  feat = np.where(feat == 0, _EPS, feat)
  return feat, energy


def logfbank(x: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """[F,26] log mel filterbank energies."""
  return np.log(fbank(x, sample_rate)[0])


def mfcc(x: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """[F,13] MFCCs (orthonormal DCT-II, lifter 22, c0 = log frame energy)."""
  feat, energy = fbank(x, sample_rate)
  cep = scipy.fft.dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :NUMCEP]
  n = np.arange(NUMCEP)
  cep = cep * (1 + (CEPLIFTER / 2.0) * np.sin(np.pi * n / CEPLIFTER))
  cep[:, 0] = np.log(energy)
  return cep


def _f0_default(x: np.ndarray, sample_rate: int) -> np.ndarray:
  """pyworld.harvest when installed (Audio2Head's tracker), else librosa.pyin (see module doc)."""
  try:
    import pyworld  # pylint: disable=g-import-not-at-top  (optional)
  except ImportError:
    pyworld = None
  if pyworld is not None:
    f0, _ = pyworld.harvest(np.ascontiguousarray(x, np.float64), sample_rate, frame_period=10)
    return np.asarray(f0)
  import librosa  # pylint: disable=g-import-not-at-top  (slow import)

  hop = _round_half_up(WINSTEP * sample_rate)
  f0, voiced, _ = librosa.pyin(np.asarray(x, np.float32), fmin=F0_FLOOR, fmax=F0_CEIL,
                               sr=sample_rate, frame_length=1024, hop_length=hop, center=True)
  f0 = np.where(voiced & np.isfinite(f0), f0, 0.0)
  return f0[: 1 + len(x) // hop]  # harvest's frame count: 1 + floor(duration / 10 ms)


def fill_unvoiced(f0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(filled F0, voiced flag) following Audio2Head's `inter_pitch` (see module doc)."""
  f0 = np.asarray(f0, np.float64)
  flag = (f0 != 0).astype(np.int64)
  voiced = np.flatnonzero(flag)
  if len(voiced) == 0:
    return f0.copy(), flag
  # np.interp holds the end values outside [first, last] voiced frame: same as inter_pitch.
  return np.interp(np.arange(len(f0)), voiced, f0[voiced]), flag


def normalize_waveform(audio: np.ndarray) -> np.ndarray:
  """Audio2Head's input normalisation; stereo picks a channel like its reader does."""
  audio = np.asarray(audio)
  if audio.ndim == 2:
    audio = audio[:, 1] if np.min(audio[:, 0]) <= 0 else audio[:, 0]
  audio = audio.astype(np.float64)
  audio = audio - np.mean(audio)
  peak = np.max(np.abs(audio))
  return audio / peak if peak > 0 else audio


def audio_features(audio: np.ndarray, sample_rate: int = SAMPLE_RATE,
                   f0_fn: Callable[[np.ndarray, int], np.ndarray] | None = None) -> np.ndarray:
  """Waveform (int or float, mono or [N,2]) -> float32 [F,41] Audio2Head features (10 ms rows)."""
  x = normalize_waveform(audio)
  a = mfcc(x, sample_rate)
  b = logfbank(x, sample_rate)
  f0, flag = fill_unvoiced((f0_fn or _f0_default)(x, sample_rate))
  n = min(len(a), len(b), len(f0))
  return np.concatenate([a[:n], b[:n], f0[:n, None], flag[:n, None]], axis=1).astype(np.float32)


def per_video_frame(features: np.ndarray) -> np.ndarray:
  """[F,41] -> [F//4, 4, 41]: rows 4t..4t+3 for video frame t (audio2pose's `audio` input)."""
  t = len(features) // ROWS_PER_VIDEO_FRAME
  return np.asarray(features[: t * ROWS_PER_VIDEO_FRAME]).reshape(t, ROWS_PER_VIDEO_FRAME, -1)


def sequence_windows(frames: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
  """Audio2Head's audio2kp batching: windows of seq_len frames starting every seq_len // 2,
  zero-padded past the end -> (windows [N,seq_len,4,41], start frame of each window)."""
  t = len(frames)
  starts = np.arange(0, t, seq_len // 2)
  out = np.zeros((len(starts), seq_len) + frames.shape[1:], np.float32)
  for n, s in enumerate(starts):
    chunk = frames[s: s + seq_len]
    out[n, : len(chunk)] = chunk
  return out, starts
