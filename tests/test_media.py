"""media reading: probe, 25-fps resampling that keeps audio in sync, 16 kHz audio, clear errors."""
import os

import numpy as np
import pytest

from osmnet_jax import audio as audio_lib
from osmnet_jax import media


def _flash_video(path, fps, num_frames, flash_frame, sample_rate):
  """Grey frames with one white frame, and a click in the audio at the same instant."""
  frames = np.full((num_frames, 64, 96, 3), 60, np.uint8)
  frames[flash_frame] = 255
  n = int(round(num_frames / fps * sample_rate))
  audio = 0.001 * np.random.default_rng(0).standard_normal(n).astype(np.float32)
  at = int(round(flash_frame / fps * sample_rate))
  audio[at:at + sample_rate // 100] = 0.8  # 10 ms click
  media.write_video(path, frames, fps=fps, audio=audio, sample_rate=sample_rate)
  return flash_frame / fps  # seconds


@pytest.mark.parametrize("fps,rate", [(25, 16000), (30, 44100)])
def test_resample_to_25fps_keeps_sync(tmp_path, fps, rate):
  path = str(tmp_path / f"flash{fps}.mp4")
  when = _flash_video(path, fps, int(1.6 * fps), int(0.8 * fps) + 1, rate)
  info = media.probe(path)
  assert (info.width, info.height, info.has_audio, info.sample_rate) == (96, 64, True, rate)
  assert info.fps == fps and abs(info.duration - 1.6) < 0.1
  frames = media.read_frames(path)
  assert frames.shape[1:] == (64, 96, 3) and abs(len(frames) - 40) <= 1  # 1.6 s at 25 fps
  audio = media.read_audio(path)
  assert audio.dtype == np.float32 and abs(len(audio) / 16000 - 1.6) < 0.07
  flash = int(np.argmax(frames.mean(axis=(1, 2, 3))))
  energy = audio_lib.frame_energy(audio, len(frames))
  click = int(np.argmax(energy))
  assert abs(flash - when * 25) <= 1  # the white frame is where it was in time
  assert abs(click - flash) <= 1  # audio frame t <-> video frame t


def test_scaled_decode(tmp_path):
  path = str(tmp_path / "v.mp4")
  _flash_video(path, 25, 10, 3, 16000)
  small = media.read_frames(path, size=(48, 32))
  assert small.shape == (10, 32, 48, 3)


def test_errors_name_the_file(tmp_path):
  empty = tmp_path / "empty.mp4"
  empty.write_bytes(b"")
  junk = tmp_path / "junk.mp4"
  junk.write_bytes(os.urandom(5000))
  silent = str(tmp_path / "noaudio.mp4")
  media.write_video(silent, np.zeros((5, 32, 32, 3), np.uint8))
  for path, words in [(str(empty), "zero-length"), (str(junk), "not a readable media file"),
                      (str(tmp_path / "missing.mp4"), "does not exist")]:
    with pytest.raises(media.MediaError, match=words) as e:
      media.probe(path)
    assert path in str(e.value)
  assert not media.probe(silent).has_audio
  with pytest.raises(media.MediaError, match="no audio stream") as e:
    media.read_audio(silent)
  assert silent in str(e.value)


def test_display_rotation_is_applied(tmp_path):
  # Phone videos carry a rotation in their metadata; frames come out as displayed.
  path = str(tmp_path / "land.mp4")
  frames = np.zeros((5, 64, 96, 3), np.uint8)
  frames[:, :, :48] = 255  # left half white
  media.write_video(path, frames)
  rotated = str(tmp_path / "rot.mp4")
  import subprocess
  subprocess.run([media.ffmpeg_exe(), "-y", "-loglevel", "error", "-display_rotation", "90",
                  "-i", path, "-c", "copy", rotated], check=True)
  info = media.probe(rotated)
  assert (info.width, info.height, info.rotation) == (64, 96, 90)
  out = media.read_frames(rotated).mean(axis=(0, 3))  # [96, 64]
  rows, cols = out.mean(1), out.mean(0)
  assert abs(rows[:40].mean() - rows[-40:].mean()) > 200  # white half is now top or bottom
  assert np.ptp(cols) < 30
