"""metrics/pixel_motion: known rotations, shifts and mouth openings drawn by synth_talk's
rasteriser are recovered from the pixels alone (no landmarks of the rendered frames are used)."""
import numpy as np
import pytest

from data.synth_talk import face_render
from osmnet_jax.metrics import pixel_motion as pm

T, S = 40, 64


@pytest.fixture(scope="module")
def ident():
  return face_render.Identity.sample(np.random.default_rng(3))


def _pose(ident, roll_amp=0.2, tx_amp=0.05, ty_amp=0.04):
  t = np.arange(T)
  pose = np.tile(np.r_[0.0, 0.0, 0.0, ident.framing], (T, 1))
  pose[:, 2] = roll_amp * np.sin(2 * np.pi * t / 20)
  pose[:, 3] += tx_amp * np.sin(2 * np.pi * t / 13)
  pose[:, 4] += ty_amp * np.cos(2 * np.pi * t / 17)
  return pose


def _render(ident, pose, mouth):
  z = np.zeros(T)
  return face_render.render_frames(ident, pose, mouth, z, z, S)


def test_recovers_roll_and_translation(ident):
  pose = _pose(ident)
  frames, lm = _render(ident, pose, np.zeros(T))
  got = pm.head_motion_in_pixels(frames, pose, lm[0])
  for k in ("roll", "tx", "ty"):
    assert got[k]["r"] > 0.93, (k, got)
    assert 0.85 < got[k]["amplitude_ratio"] < 1.15, (k, got)
  assert got["ecc_ok_frac"] >= 0.9


def test_damped_roll_is_measured_as_damped(ident):
  """A video that shows 0.3x the asked roll reads as ~0.3x (the failure this metric exists for)."""
  asked = _pose(ident)
  shown = asked.copy()
  shown[:, 2] *= 0.3
  frames, lm = _render(ident, shown, np.zeros(T))
  got = pm.head_motion_in_pixels(frames, asked, lm[0])
  assert got["roll"]["r"] > 0.9
  assert 0.2 < got["roll"]["amplitude_ratio"] < 0.4, got


def test_still_video_has_no_motion(ident):
  pose = np.tile(np.r_[0.0, 0.0, 0.0, ident.framing], (T, 1))
  frames, _ = _render(ident, pose, np.zeros(T))
  reg = pm.register_to_first(frames)
  assert np.abs(reg["roll"]).max() < 1e-3 and np.abs(reg["tx"]).max() < 1e-3


def test_mouth_opening_follows_the_opening_under_head_motion(ident):
  t = np.arange(T)
  mouth = np.clip(np.sin(2 * np.pi * t / 8), 0, 1)
  for pose in (np.tile(np.r_[0.0, 0.0, 0.0, ident.framing], (T, 1)), _pose(ident)):
    frames, lm = _render(ident, pose, mouth)
    got = pm.mouth_in_pixels(frames, lm[0], mouth_landmarks=lm)
    assert got["landmark_r"] > 0.9, got
    assert got["audio_r"] is None


def test_closed_mouth_does_not_correlate_with_speech(ident):
  t = np.arange(T)
  mouth = np.clip(np.sin(2 * np.pi * t / 8), 0, 1)
  frames, lm = _render(ident, _pose(ident), np.zeros(T))
  _, lm_open = _render(ident, _pose(ident), mouth)
  got = pm.mouth_in_pixels(frames, lm[0], mouth_landmarks=lm_open)
  assert got["landmark_r"] is None or abs(got["landmark_r"]) < 0.5, got


def test_audio_energy_correlation():
  """Mouth opening driven by an audio envelope: activity correlates with the audio energy."""
  ident = face_render.Identity.sample(np.random.default_rng(5))
  rng = np.random.default_rng(0)
  env = np.clip(np.sin(2 * np.pi * np.arange(T) / 10) + 0.1 * rng.normal(size=T), 0, 1)
  audio = (np.repeat(env, 640) * 0.5 * np.sin(np.arange(640 * T) * 0.3) * 32767).astype(np.int16)
  pose = np.tile(np.r_[0.0, 0.0, 0.0, ident.framing], (T, 1))
  frames, lm = _render(ident, pose, env)
  got = pm.mouth_in_pixels(frames, lm[0], audio=audio)
  assert got["audio_r"] > 0.8, got


def test_agreement_arithmetic():
  x = np.sin(np.linspace(0, 6, 50))
  assert pm.agreement(0.5 * x + 3, x) == pytest.approx({"r": 1.0, "amplitude_ratio": 0.5})
  assert pm.agreement(x, np.zeros(50)) == {"r": None, "amplitude_ratio": None}
