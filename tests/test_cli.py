"""train.py / eval.py end to end on the tiny config (subprocesses, like a user runs them)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, tfds_dir, timeout=600):
  env = {**os.environ, "TFDS_DATA_DIR": str(tfds_dir), "PYTHONPATH": REPO}
  return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                        env=env, timeout=timeout)


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
  root = tmp_path_factory.mktemp("cli")
  wd = root / "w"
  proc = _run(["train.py", "--workdir", str(wd), "--config", "configs/tiny_test.py"], root / "tfds")
  assert proc.returncode == 0, proc.stderr[-4000:]
  return wd, root / "tfds"


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


def test_eval_writes_copy_source_metrics_and_reasons(trained_workdir):
  wd, tfds_dir = trained_workdir
  proc = _run(["eval.py", "--workdir", str(wd)], tfds_dir)
  assert proc.returncode == 0, proc.stderr[-4000:]
  m = json.loads((wd / "eval" / "metrics.json").read_text())
  cs = m["copy_source"]
  assert 0 < cs["image"]["l1"] < 0.5
  assert 10 < cs["image"]["psnr"] < 60
  assert 0 < cs["image"]["ssim"] < 1
  assert 0 < cs["image"]["lpips"] < 1 and 0 <= cs["image"]["cpbd"] <= 1
  assert "identity" in cs["meta"]["skipped"]
  assert cs["meta"]["num_clips"] == 4  # the tiny test split, no clip dropped
  assert m["osmnet"]["image"] is None and m["osmnet"]["meta"]["skipped"]
  assert "copy_source" in proc.stdout


def test_clear_errors(tmp_path):
  proc = _run(["eval.py", "--workdir", str(tmp_path / "nowhere")], tmp_path)
  assert proc.returncode != 0 and "config.json" in proc.stderr and "train.py" in proc.stderr
  proc = _run(["train.py", "--workdir", str(tmp_path / "w"), "--config", "configs/tiny_test.py",
               "--config.stages=('data','nope')"], tmp_path)
  assert proc.returncode != 0 and "nope" in proc.stderr
  proc = _run(["train.py", "--workdir", str(tmp_path / "w"), "--config", "configs/tiny_test.py",
               "--config.batch_size=3", "--config.parallel=pmap"], tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]  # 3 divides over 1 device
  proc = _run(["train.py", "--workdir", str(tmp_path / "w"), "--config", "configs/tiny_test.py",
               "--config.parallel=banana"], tmp_path)
  assert proc.returncode != 0 and "banana" in proc.stderr
