"""Speech-like audio synthesis with a known, deterministic mouth track.

[ours] Source-filter synthesis: a glottal pulse train (per-speaker f0, intonation, stress)
through a cascade of three formant resonators chosen per vowel, shaped by syllable envelopes,
with noise-burst consonant onsets and pauses between words.

The mouth track is a deterministic function of what is heard: per video frame,
``mouth_open = openness(vowel) * envelope`` (averaged over the frame), where openness follows
the vowel's first formant (open vowels like /a/ have a high F1) and envelope is the syllable's
amplitude envelope. Both are audible (F1 and loudness show in the mel spectrogram), so lip sync
is learnable from the mel windows, and a model's mouth can be checked against it.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import scipy.signal

from osmnet_jax import audio as audio_lib

SR = audio_lib.SAMPLE_RATE
SPF = audio_lib.SAMPLES_PER_FRAME

# name: (F1, F2, F3 in Hz, openness in [0, 1], roundness in [0, 1])
VOWELS = {
    "a": (730.0, 1090.0, 2440.0, 1.0, 0.0),
    "ae": (660.0, 1720.0, 2410.0, 0.85, 0.0),
    "e": (530.0, 1840.0, 2480.0, 0.6, 0.0),
    "o": (570.0, 840.0, 2410.0, 0.7, 0.8),
    "u": (300.0, 870.0, 2240.0, 0.3, 1.0),
    "i": (270.0, 2290.0, 3010.0, 0.25, 0.0),
}
VOWEL_NAMES = tuple(VOWELS)


@dataclasses.dataclass(frozen=True)
class Voice:
  """A speaker's voice: base pitch, formant scaling (vocal-tract length), breathiness."""

  f0: float = 140.0
  formant_scale: float = 1.0
  breath: float = 0.05

  @classmethod
  def sample(cls, rng: np.random.Generator) -> "Voice":
    return cls(
        f0=float(rng.uniform(90.0, 230.0)),
        formant_scale=float(rng.uniform(0.88, 1.18)),
        breath=float(rng.uniform(0.02, 0.12)),
    )


def _resonator(x: np.ndarray, freq: float, bandwidth: float) -> np.ndarray:
  """Two-pole resonator with unit gain at DC-normalised peak (Klatt-style formant filter)."""
  r = np.exp(-np.pi * bandwidth / SR)
  theta = 2 * np.pi * freq / SR
  a = [1.0, -2 * r * np.cos(theta), r * r]
  b = [1.0 - r]
  return scipy.signal.lfilter(b, a, x)


def _envelope(n: int, attack: int, release: int) -> np.ndarray:
  env = np.ones(n)
  attack, release = min(attack, n // 2), min(release, n // 2)
  env[:attack] = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, attack))
  env[n - release:] = 0.5 + 0.5 * np.cos(np.linspace(0, np.pi, release))
  return env


def _plan_syllables(rng: np.random.Generator, total: int) -> list[dict]:
  """Syllable timing in samples: words of 1-4 syllables separated by pauses."""
  sylls = []
  t = int(rng.uniform(0.0, 0.25) * SR)
  while True:
    for _ in range(int(rng.integers(1, 5))):
      dur = int(rng.uniform(0.12, 0.28) * SR)
      if t + dur > total:
        return sylls
      sylls.append({
          "start": t,
          "end": t + dur,
          "vowel": VOWEL_NAMES[int(rng.integers(len(VOWEL_NAMES)))],
          "stressed": bool(rng.random() < 0.3),
          "consonant": bool(rng.random() < 0.6),
      })
      t += dur + int(rng.uniform(0.0, 0.04) * SR)
    t += int(rng.choice([rng.uniform(0.03, 0.12), rng.uniform(0.15, 0.45)]) * SR)


def synthesize_speech(
    rng: np.random.Generator, num_frames: int, voice: Voice | None = None
) -> tuple[np.ndarray, dict]:
  """Synthesise ``num_frames / 25`` seconds of speech-like audio.

  Returns:
    audio: float32 [num_frames * 640] in [-1, 1], 16 kHz.
    info: {"mouth_open": float32 [T] in [0, 1], "mouth_round": float32 [T],
           "stress": float32 [T] (1 on frames where a stressed syllable starts),
           "voiced": float32 [T] (fraction of the frame inside a syllable),
           "syllables": list of dicts (start/end samples, vowel, stressed, consonant),
           "voice": Voice}
  """
  voice = voice or Voice.sample(rng)
  total = num_frames * SPF
  out = np.zeros(total)
  env_track = np.zeros(total)  # amplitude envelope (0..1) of what is heard
  open_track = np.zeros(total)
  round_track = np.zeros(total)
  sylls = _plan_syllables(rng, total)
  phase = float(rng.random())
  # Phrase-level declination of pitch over the clip.
  decl = np.linspace(1.08, 0.92, total)
  for s in sylls:
    n = s["end"] - s["start"]
    f1, f2, f3, openness, roundness = VOWELS[s["vowel"]]
    stress_gain = 1.35 if s["stressed"] else 1.0
    # Glottal source: impulse train at f0 (rising a little on stressed syllables), smoothed.
    f0 = voice.f0 * decl[s["start"]:s["end"]] * (1.0 + (0.12 if s["stressed"] else 0.0)
                                                  * np.sin(np.linspace(0, np.pi, n)))
    ph = phase + np.cumsum(f0 / SR)
    pulses = np.diff(np.floor(ph), prepend=np.floor(ph[0])).astype(np.float64)
    phase = float(ph[-1] % 1.0)
    src = scipy.signal.lfilter([1.0], [1.0, -0.96], pulses)  # spectral tilt of the glottis
    src += voice.breath * rng.standard_normal(n)
    y = src
    for freq, bw in ((f1, 80.0), (f2, 110.0), (f3, 160.0)):
      y = _resonator(y, freq * voice.formant_scale, bw)
    env = _envelope(n, int(0.025 * SR), int(0.045 * SR))
    y = y / (np.abs(y).max() + 1e-9) * env * stress_gain
    out[s["start"]:s["end"]] += y
    env_track[s["start"]:s["end"]] = np.maximum(env_track[s["start"]:s["end"]],
                                                env * min(stress_gain, 1.2) / 1.2)
    open_track[s["start"]:s["end"]] = openness
    round_track[s["start"]:s["end"]] = roundness
    if s["consonant"]:
      # Unvoiced onset: 20-50 ms of high-passed noise just before the vowel, lips nearly closed.
      m = int(rng.uniform(0.02, 0.05) * SR)
      a = max(0, s["start"] - m)
      burst = scipy.signal.lfilter([1.0, -0.9], [1.0], rng.standard_normal(s["start"] - a))
      out[a:s["start"]] += 0.25 * burst * _envelope(s["start"] - a, m // 4 + 1, m // 3 + 1)
  gain = rng.uniform(0.35, 0.7)
  audio = (out / (np.abs(out).max() + 1e-9) * gain).astype(np.float32)

  def per_frame(x):
    return x.reshape(num_frames, SPF).mean(1).astype(np.float32)

  env_f = per_frame(env_track)
  mouth_open = np.clip(per_frame(env_track * open_track) * 1.1, 0.0, 1.0)
  stress = np.zeros(num_frames, np.float32)
  for s in sylls:
    if s["stressed"]:
      stress[min(s["start"] // SPF, num_frames - 1)] = 1.0
  info = {
      "mouth_open": mouth_open.astype(np.float32),
      "mouth_round": np.clip(per_frame(env_track * round_track), 0, 1).astype(np.float32),
      "stress": stress,
      "voiced": env_f,
      "syllables": sylls,
      "voice": voice,
  }
  return audio, info
