"""train.py / eval.py end to end on the tiny config (subprocesses, like a user runs them)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_script as _run


@pytest.fixture(scope="module")
def trained_workdir(tiny_trained):
  return tiny_trained


def test_train_data_stage_reports_shapes_and_throughput(trained_workdir):
  wd, _ = trained_workdir
  cfg = json.loads((wd / "config.json").read_text())
  assert cfg["data"]["builder_config"] == "32px" and cfg["batch_size"] == 4
  report = json.loads((wd / "data_check.json").read_text())
  assert report["batch_shapes"]["frames"] == "uint8[4, 5, 32, 32, 3]"
  assert report["batch_shapes"]["mel"] == "float32[4, 5, 20, 80]"
  assert report["batch_shapes"]["pose"] == "float32[4, 5, 6]"
  assert report["clips_per_s"] > 0 and report["steps"] == 5
  assert any(p.name.startswith("events") for p in (wd / "tb").iterdir())


def test_renderer_stage_writes_checkpoint_sample_video_and_resumes(trained_workdir):
  from osmnet_jax import media

  wd, tfds_dir = trained_workdir
  assert sorted(p.name for p in (wd / "checkpoints" / "renderer").iterdir()
                if p.name.isdigit()) == ["2"]
  video = wd / "samples" / "renderer_reconstruction_0.mp4"
  info = media.probe(str(video))
  assert info.has_audio
  frames = media.read_frames(str(video))
  assert frames.shape == (25, 32, 64, 3)  # ground truth | reconstruction, 1 s at 25 fps
  # A second run with a larger budget resumes from step 2 instead of starting over.
  proc = _run(["train.py", "--workdir", str(wd), "--config", "configs/tiny_test.py",
               "--config.stages=('renderer',)", "--config.renderer.steps=3",
               "--config.renderer.sample_clips=0"], tfds_dir)
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert "resumed from step 2" in proc.stderr
  assert "3" in {p.name for p in (wd / "checkpoints" / "renderer").iterdir()}


def test_eval_reconstruction_mode(trained_workdir):
  wd, tfds_dir = trained_workdir
  proc = _run(["eval.py", "--workdir", str(wd), "--mode", "reconstruction", "--max_clips", "1"],
              tfds_dir)
  assert proc.returncode == 0, proc.stderr[-4000:]
  r = json.loads((wd / "eval" / "reconstruction.json").read_text())
  for method in ("renderer", "copy_source"):
    im = r[method]["image"]
    assert set(im) == {"l1", "psnr", "ssim", "lpips", "cpbd"}
    assert all(np.isfinite(v) for v in im.values())
    assert r[method]["meta"]["num_frames"] == 24  # frames 1..24 of one 25-frame clip
  keys = {f"{k}_{m}" for k in ("yaw", "pitch", "roll", "tx", "ty") for m in ("r", "amplitude")}
  keys |= {"yaw_pitch_skipped", "mouth_audio_r", "mouth_landmark_r"}
  for method in ("renderer", "copy_source", "real"):
    assert set(r[method]["motion_in_pixels"]) == keys
  # A repeated source frame shows no motion at all; the real clip moves.
  assert r["copy_source"]["motion_in_pixels"]["roll_amplitude"] < 1e-4
  assert r["real"]["motion_in_pixels"]["roll_amplitude"] > 0.3


def test_motion_and_expression_stages_train_from_train_py(trained_workdir):
  wd, _ = trained_workdir
  ck = wd / "checkpoints"
  assert "2" in {p.name for p in (ck / "motion").iterdir()}  # save_every=2, num_steps=3
  sigma = json.loads((ck / "motion" / "sigma.json").read_text())
  assert len(sigma["sigma"]) == 16 and all(v > 0 for v in sigma["sigma"])
  ev = json.loads((ck / "expression" / "eval.json").read_text())
  assert ev["step"] == 2 and ev["renderer_source"] == "checkpoint"  # stage A's checkpoint
  assert np.isfinite(ev["eval"]["landmark_l1_px"])


def test_clear_errors(tmp_path):
  proc = _run(["eval.py", "--workdir", str(tmp_path / "nowhere")], tmp_path)
  assert proc.returncode != 0 and "config.json" in proc.stderr and "train.py" in proc.stderr
  proc = _run(["train.py", "--workdir", str(tmp_path / "w"), "--config", "configs/tiny_test.py",
               "--config.stages=('data','nope')"], tmp_path)
  assert proc.returncode != 0 and "nope" in proc.stderr
  proc = _run(["train.py", "--workdir", str(tmp_path / "w"), "--config", "configs/tiny_test.py",
               "--config.batch_size=3", "--config.parallel=pmap",
               "--config.stages=('data','renderer')"], tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]  # 3 divides over 1 device
  proc = _run(["train.py", "--workdir", str(tmp_path / "w"), "--config", "configs/tiny_test.py",
               "--config.parallel=banana"], tmp_path)
  assert proc.returncode != 0 and "banana" in proc.stderr
