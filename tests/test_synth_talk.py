"""synth_talk: format, determinism, lip sync in the pixels, audio alignment, motion re-draws."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import tiny_config
from data import schema
from data.synth_talk import builder, clips, face_render, motion
from osmnet_jax import audio
from osmnet_jax.face import geometry as fg


def _read(b, split):
  return list(tfds.as_numpy(b.as_dataset(split=split, shuffle_files=False)))


def test_builds_and_reads_back_with_schema_shapes(tiny_synth):
  spec = tiny_synth.builder_config.spec
  assert tiny_synth.info.splits["train"].num_examples == 6
  assert tiny_synth.info.splits["test"].num_examples == 2
  for split in ("train", "test"):
    for ex in _read(tiny_synth, split):
      t = spec.num_frames
      assert ex["frames"].shape == (t, 32, 32, 3) and ex["frames"].dtype == np.uint8
      assert ex["landmarks"].shape == (t, 68, 2) and ex["landmarks"].dtype == np.float32
      assert ex["pose"].shape == (t, 6) and ex["pose"].dtype == np.float32
      assert ex["mel"].shape == (4 * t, 80) and ex["mel"].dtype == np.float32
      assert ex["audio"].shape == (640 * t,) and ex["audio"].dtype == np.int16
      assert ex["mouth_open"].shape == (t,)
      assert isinstance(ex["speaker"], bytes) and isinstance(ex["clip_id"], bytes)
      schema.check_example(ex, 32)  # the writer's own validation accepts what was read back
      # Stored mel is exactly the mel of the stored audio.
      np.testing.assert_allclose(ex["mel"], audio.log_mel(ex["audio"], t), atol=1e-5)


def test_metadata_has_pose_stats_after_reload(tiny_synth):
  again = builder.SynthTalk(config=tiny_config(), data_dir=tiny_synth.data_dir_root)
  stats = again.info.metadata["pose_stats"]
  poses = np.concatenate([ex["pose"] for ex in _read(tiny_synth, "train")])
  np.testing.assert_allclose(stats["mean"], poses.mean(0), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(stats["std"], poses.std(0), rtol=1e-4, atol=1e-6)
  assert stats["num_frames"] == len(poses)


def test_train_and_test_never_share_a_speaker(tiny_synth):
  train = {ex["speaker"] for ex in _read(tiny_synth, "train")}
  test = {ex["speaker"] for ex in _read(tiny_synth, "test")}
  assert len(train) == 3 and len(test) == 1
  assert not train & test


def test_two_builds_with_one_seed_are_identical(tmp_path, tiny_synth, monkeypatch):
  # A build leaves nothing in the system temp dir and writes files with the user's umask.
  sys_tmp = tmp_path / "sys_tmp"
  sys_tmp.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(sys_tmp))
  old_umask = os.umask(0o027)
  try:
    again = builder.build(tiny_config(), str(tmp_path / "a"))
  finally:
    os.umask(old_umask)
  assert not os.listdir(sys_tmp)
  written = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "a") for f in fs]
  assert written and {os.stat(f).st_mode & 0o777 for f in written} == {0o640}
  other = builder.build(tiny_config(seed=1), str(tmp_path / "b"))
  a = {ex["clip_id"]: ex for ex in _read(tiny_synth, "train")}
  b = {ex["clip_id"]: ex for ex in _read(again, "train")}
  c = {ex["clip_id"]: ex for ex in _read(other, "train")}
  assert a.keys() == b.keys() == c.keys()
  for k in a:
    for f in ("frames", "landmarks", "pose", "mel", "audio"):
      np.testing.assert_array_equal(a[k][f], b[k][f])
  assert any(not np.array_equal(a[k]["frames"], c[k]["frames"]) for k in a)
  assert any(not np.array_equal(a[k]["audio"], c[k]["audio"]) for k in a)


def test_invalid_spec_is_rejected_with_the_field_named():
  with pytest.raises(ValueError, match="resolution"):
    builder.SynthTalkConfig(name="bad", spec=clips.SynthSpec(resolution=8))
  with pytest.raises(ValueError, match="seconds"):
    builder.SynthTalkConfig(name="bad2", spec=clips.SynthSpec(seconds=0.01))


@pytest.mark.parametrize("index", [0, 1, 2])
def test_rendered_mouth_follows_the_audio(index):
  """Pixels around the mouth change with the mouth track, which follows the audio."""
  spec = clips.SynthSpec(resolution=64, seconds=2.0)
  ex = clips.generate_clip(spec, "train", index, tracks=True)
  tr = ex["_tracks"]
  t = spec.num_frames
  closed, _ = face_render.render_frames(tr["identity"], ex["pose"], np.zeros(t), np.zeros(t),
                                        tr["blink"], 64)
  # How much the frame differs from the same frame with the mouth shut.
  diff = np.abs(ex["frames"].astype(np.float32) - closed.astype(np.float32)).mean((1, 2, 3))
  assert np.corrcoef(diff, ex["mouth_open"])[0, 1] > 0.9
  energy = audio.frame_energy(ex["audio"], t)
  assert np.corrcoef(diff, energy)[0, 1] > 0.4
  silent = energy < 1e-3
  assert silent.any() and (~silent).any()
  assert diff[silent].max() < 0.05 * diff.max()  # silence -> closed mouth
  # The stored landmarks open with it too.
  assert np.corrcoef(fg.mouth_opening(ex["landmarks"]), ex["mouth_open"])[0, 1] > 0.99


@pytest.mark.parametrize("k", [0, 3, 17])
def test_click_lands_in_its_frame_window(k):
  t = 20
  wav = np.zeros(t * audio.SAMPLES_PER_FRAME, np.float32)
  wav[k * 640 + 320] = 1.0  # a click in the middle of video frame k
  mel = audio.log_mel(wav, t)
  assert mel.shape == (4 * t, 80)
  energy = mel.mean(1)
  assert int(np.argmax(energy)) == 4 * k + 2
  assert int(np.argmax(energy)) // audio.MEL_PER_FRAME == k
  win = audio.mel_windows(mel)
  assert win.shape == (t, 20, 80)
  # Frame k's +-2-frame window has the click at its centre (mel row 8 + 2 = 10).
  assert int(np.argmax(win[k].mean(1))) == 10
  # Windows of frames more than 2 frames away do not contain the click.
  far = [j for j in range(t) if abs(j - k) > 2]
  assert win[far].mean(2).max() < energy.max() - 5.0


def test_mel_windows_edge_padding():
  mel = np.arange(4 * 6 * 80, dtype=np.float32).reshape(24, 80)
  win = audio.mel_windows(mel)
  np.testing.assert_array_equal(win[0, :8], np.repeat(mel[:1], 8, 0))
  np.testing.assert_array_equal(win[0, 8:], mel[:12])
  np.testing.assert_array_equal(win[5, 12:], np.repeat(mel[-1:], 8, 0))
  np.testing.assert_array_equal(win[3], mel[4:24])


def test_redraw_gives_many_valid_motions_for_one_audio():
  spec = clips.SynthSpec(resolution=32, seconds=4.0)
  ex = clips.generate_clip(spec, "test", 0, render=False)
  draws = clips.redraw_for_example(ex, num=16, seed=3)
  assert draws.shape == (16, spec.num_frames, 6) and draws.dtype == np.float32
  np.testing.assert_array_equal(draws, clips.redraw_for_example(ex, num=16, seed=3))
  assert np.all(np.abs(draws[..., :3]) <= motion.POSE_LIMITS + 1e-6)
  # One-to-many: different samples differ substantially (mean pairwise yaw/pitch/roll distance).
  rot = draws[..., :3]
  pair = np.abs(rot[:, None] - rot[None]).mean((2, 3))
  off_diag = pair[~np.eye(16, dtype=bool)]
  assert off_diag.min() > 1e-3 and off_diag.mean() > 0.03
  # ... while the identity framing they move around is the clip's own.
  np.testing.assert_allclose(draws[..., 3:].mean((0, 1)), ex["framing"], atol=0.03)


def test_nods_land_on_stressed_syllables():
  """Averaged over many draws, pitch rises right after stressed-syllable onsets."""
  stress = np.zeros(200, np.float32)
  onsets = [20, 70, 120, 170]
  stress[onsets] = 1.0
  draws = motion.redraw_head_motions(stress, np.array([0.0, 0.05, 0.6]), num=200, seed=0)
  pitch = draws[..., 1].mean(0)
  after = np.mean([pitch[o + 3:o + 7].mean() for o in onsets])
  before = np.mean([pitch[o - 8:o - 2].mean() for o in onsets])
  assert after - before > 0.01
