"""media reading: probe, 25-fps resampling that keeps audio in sync, 16 kHz audio, clear errors."""
import os

import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

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
  # Fixed bytes: random junk is usually rejected outright, but some draws (seed 289 of
  # default_rng) are "detected" by ffmpeg as an lrc subtitle with a low score; both must read
  # as not media. (os.urandom made this test fail about once in 300 runs.)
  junk.write_bytes(np.random.default_rng(0).bytes(5000))
  lrc_junk = tmp_path / "lrc_junk.mp4"
  lrc_junk.write_bytes(np.random.default_rng(289).bytes(5000))
  sound = str(tmp_path / "sound.wav")
  sf.write(sound, np.zeros(1600, np.float32), 16000)
  silent = str(tmp_path / "noaudio.mp4")
  media.write_video(silent, np.zeros((5, 32, 32, 3), np.uint8))
  for path, words in [(str(empty), "zero-length"), (str(junk), "not a readable media file"),
                      (str(lrc_junk), "not a readable media file.*low score"),
                      (sound, "no video stream .*Audio: pcm"),
                      (str(tmp_path / "missing.mp4"), "does not exist")]:
    with pytest.raises(media.MediaError, match=words) as e:
      media.probe(path)
    assert path in str(e.value)
    # Only the audio-only file is the distinct "no picture track" case that callers skip on.
    assert isinstance(e.value, media.NoVideoStream) == (path == sound)
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


def test_variable_frame_rate_keeps_sync(tmp_path):
  # 30 frames at 30 fps then 12 frames at 12 fps in one stream (explicit timestamps: a
  # variable-frame-rate file), 2 s of audio. Flash + click at t = 1.5 s (frame 36 of the stream).
  import subprocess

  import soundfile as sf

  frames = np.full((42, 64, 96, 3), 60, np.uint8)
  frames[36] = 255
  audio = 0.001 * np.random.default_rng(1).standard_normal(32000).astype(np.float32)
  audio[24000:24160] = 0.8
  wav = str(tmp_path / "a.wav")
  sf.write(wav, audio, 16000)
  vfr = str(tmp_path / "vfr.mp4")
  pts = "if(lt(N,30),N/30,1+(N-30)/12)/TB"
  subprocess.run([media.ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo",
                  "-pix_fmt", "rgb24", "-s", "96x64", "-r", "60", "-i", "-", "-i", wav,
                  "-vf", f"setpts='{pts}'", "-fps_mode", "vfr", "-c:v", "libx264",
                  "-pix_fmt", "yuv420p", "-c:a", "aac", vfr],
                 input=frames.tobytes(), check=True)
  got = media.read_frames(vfr)
  sound = media.read_audio(vfr)
  assert abs(len(got) - 50) <= 2 and abs(len(sound) / 16000 - 2.0) < 0.1, len(got)
  flash = int(np.argmax(got.mean(axis=(1, 2, 3))))
  click = int(np.argmax(audio_lib.frame_energy(sound, len(got))))
  assert abs(flash - 37.5) <= 1.5 and abs(click - flash) <= 1, (flash, click)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_video_follows_the_umask_and_leaves_no_temp_file(tmp_path, umask):
  old = os.umask(umask)
  try:
    path = media.write_video(str(tmp_path / "v.mp4"), np.zeros((3, 16, 16, 3), np.uint8),
                             audio=np.zeros(3 * 640, np.float32))
  finally:
    os.umask(old)
  assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
  assert os.listdir(tmp_path) == ["v.mp4"]


def test_to_uint8_clips_and_rounds_to_nearest():
  # Out-of-range values clip (no uint8 wrap-around: 1.01 * 255 = 257.55 would wrap to 2), and
  # values round to the nearest level, not down (Audio2Head's truncation is not this helper).
  a = np.array([-0.2, 0.0, 0.4 / 255, 1.49 / 255, 1.51 / 255, 0.5, 254.6 / 255, 1.0, 1.01],
               np.float32)
  np.testing.assert_array_equal(media.to_uint8(a), [0, 0, 0, 1, 2, 128, 255, 255, 255])
  # jax arrays and any shape: [T, H, W, 3] frames keep their shape.
  frames = jnp.full((2, 3, 4, 3), 0.25)
  out = media.to_uint8(frames)
  assert out.dtype == np.uint8 and out.shape == (2, 3, 4, 3) and int(out[0, 0, 0, 0]) == 64
