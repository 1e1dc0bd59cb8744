"""Head motion of the synthetic dataset: random given the audio, with a known distribution.

[ours] Each clip draws a *motion style*: overall energy, a nod/shake/tilt mix (Dirichlet), a
tempo, the probability and size of nods on stressed syllables, slow drift of the face position
and scale, and a small resting offset. Given the style and the audio's stressed-syllable onsets,
the pose sequence is a sum of smooth quasi-periodic oscillations (random phases), raised-cosine
nods that start on stressed syllables, and a smoothed random-walk drift.

Because the style and the phases are drawn independently of the audio, the same audio admits a
whole distribution of valid head motions; ``sample_motion`` with fresh RNGs re-draws from exactly
that distribution (ground truth for the one-to-many evaluation). All rotations stay inside
``POSE_LIMITS``.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from osmnet_jax import audio as audio_lib

# Hard limits on the generated rotations (radians): yaw, pitch, roll.
POSE_LIMITS = np.array([0.5, 0.35, 0.3])
# Largest oscillation amplitude per axis at energy 1 with all of the mix on that axis.
MAX_AMPLITUDE = np.array([0.26, 0.16, 0.12])


@dataclasses.dataclass(frozen=True)
class MotionStyle:
  energy: float          # overall motion energy in [0, 1]
  mix: tuple             # (shake=yaw, nod=pitch, tilt=roll) weights, sum 1
  tempo: float           # base oscillation frequency, Hz
  nod_prob: float        # chance that a stressed syllable triggers a nod
  nod_size: float        # nod amplitude (radians of pitch)
  drift: float           # amplitude of the slow tx/ty drift (normalised crop units)
  offset: tuple          # resting (yaw, pitch, roll)

  @classmethod
  def sample(cls, rng: np.random.Generator) -> "MotionStyle":
    energy = float(rng.uniform(0.25, 1.0))
    return cls(
        energy=energy,
        mix=tuple(float(v) for v in rng.dirichlet([1.5, 1.5, 1.5])),
        tempo=float(rng.uniform(0.15, 0.7)),
        nod_prob=float(rng.uniform(0.3, 1.0)),
        nod_size=float(energy * rng.uniform(0.03, 0.1)),
        drift=float(rng.uniform(0.0, 0.05)),
        offset=tuple(float(v) for v in rng.uniform(-1, 1, 3) * np.array([0.08, 0.05, 0.04])),
    )


def _smooth_noise(rng: np.random.Generator, n: int, tempo: float,
                  components: int = 3) -> np.ndarray:
  """Sum of ``components`` sinusoids around ``tempo`` Hz with random phases, unit RMS: [n]."""
  t = np.arange(n) / audio_lib.FPS
  freqs = tempo * rng.uniform(0.6, 1.6, components)
  phases = rng.uniform(0, 2 * np.pi, components)
  weights = rng.uniform(0.5, 1.0, components)
  x = (weights[:, None] * np.sin(2 * np.pi * freqs[:, None] * t[None] + phases[:, None])).sum(0)
  return x / np.sqrt((weights ** 2).sum() / 2)


def sample_motion(
    rng: np.random.Generator,
    stress: np.ndarray,
    framing: np.ndarray,
    style: MotionStyle | None = None,
) -> tuple[np.ndarray, MotionStyle]:
  """Draw one head-motion sequence for an audio clip.

  Args:
    rng: randomness for the style (if not given) and the motion.
    stress: float [T], 1 on frames where a stressed syllable starts (from the speech synthesis).
    framing: [3] the identity's resting (tx, ty, scale) in the crop.
    style: a fixed style; by default one is drawn.

  Returns:
    (pose float32 [T, 6] = yaw, pitch, roll, tx, ty, scale; the style used).
  """
  style = style or MotionStyle.sample(rng)
  n = len(stress)
  amp = style.energy * MAX_AMPLITUDE * np.sqrt(3 * np.asarray(style.mix)).clip(0, 1.4)
  rot = np.stack([a * _smooth_noise(rng, n, style.tempo) for a in amp], 1)
  rot = rot + np.asarray(style.offset)
  # Nods on stressed syllables: a 0.4 s raised-cosine dip of the chin (pitch > 0 = chin down).
  width = int(0.4 * audio_lib.FPS)
  bump = 0.5 - 0.5 * np.cos(np.linspace(0, 2 * np.pi, width))
  for t0 in np.flatnonzero(stress > 0.5):
    if rng.random() < style.nod_prob:
      seg = bump[: n - t0] * style.nod_size
      rot[t0:t0 + len(seg), 1] += seg
  rot = np.clip(rot, -POSE_LIMITS, POSE_LIMITS)
  # Slow drift of position and scale: a random walk, heavily smoothed, zero-mean.
  walk = np.cumsum(rng.standard_normal((n + 24, 3)), 0)
  kernel = np.hanning(25) / np.hanning(25).sum()
  walk = np.stack([np.convolve(walk[:, k], kernel, mode="valid") for k in range(3)], 1)[:n]
  walk -= walk.mean(0)
  walk /= np.abs(walk).max(0).clip(1e-6) if n > 1 else 1.0
  trans = np.asarray(framing) + walk * np.array([style.drift, style.drift, 0.5 * style.drift])
  return np.concatenate([rot, trans], 1).astype(np.float32), style


def redraw_head_motions(
    stress: np.ndarray, framing: np.ndarray, num: int, seed: int = 0
) -> np.ndarray:
  """``num`` independent valid head motions for one clip's audio: float32 [num, T, 6].

  This is the ground-truth one-to-many distribution: same audio (stress onsets), same identity
  framing, fresh motion styles and phases.
  """
  rng = np.random.default_rng(seed)
  return np.stack([sample_motion(rng, stress, framing)[0] for _ in range(num)])
