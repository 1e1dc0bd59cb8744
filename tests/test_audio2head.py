"""Audio2Head checkpoint import: PyTorch mirror (random weights) -> .pth.tar -> convert -> JAX.

audio2kp (3-D hourglass) and audio2pose (ResNet-34 + LSTM) outputs vs the torch mirror in eval
mode, float32, tiny sizes plus audio2pose at the published sizes and the published audio2kp
checkpoint layout (shapes); the CLI round trip; loud failures on broken files; the 41-dim audio
features vs a loop-by-loop python_speech_features-style reference written here.
"""

import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch

from osmnet_jax import convert, renderer
from osmnet_jax.audio2head import features as feats
from osmnet_jax.audio2head import inference as a2h_inference
from osmnet_jax.convert import audio2head as convert_audio2head
from osmnet_jax.convert import torch_state
from osmnet_jax.models import audio2pose as a2p

sys.path.insert(0, os.path.dirname(__file__))
import torch_audio2head  # pylint: disable=g-import-not-at-top,wrong-import-position
import torch_fomm  # pylint: disable=g-import-not-at-top,wrong-import-position

TOL = 1e-4
# num_kp equals the tiny renderer's K.
TINY_KP = dict(block_expansion=4, max_features=16, num_blocks=3, num_kp=10, seq_len=8)
TINY_POSE = dict(embedding_dim=16, layers=(1, 2, 1, 1), widths=(8, 16, 16, 32))


def _inputs(b, t, seed=1, size=256):
  g = torch.Generator().manual_seed(seed)
  audio = torch.randn(b, t, 4, 41, generator=g)
  img = torch.rand(b, 3, size, size, generator=g)
  pose = (torch.rand(b, t, size, size, generator=g) > 0.95).float() * 255.0
  return audio, img, pose


def _nhwc(t):
  return t.numpy().transpose(0, 2, 3, 1)


def _tiny_modules(seed=0):
  kp = torch_audio2head.randomize_(torch_audio2head.AudioModel3D(**TINY_KP), seed).eval()
  pose = torch_audio2head.randomize_(torch_audio2head.Audio2PoseLSTM(**TINY_POSE), seed + 1).eval()
  return kp, pose


def _save_tiny_audio2head(path, seed=0):
  kp_t, gen_t = torch_fomm.build(renderer.tiny_config())
  torch_fomm.randomize_(kp_t, seed)
  torch_fomm.randomize_(gen_t, seed + 1)
  a2k_t, a2p_t = _tiny_modules(seed + 2)
  ckpt = {"kp_detector": kp_t.state_dict(), "generator": gen_t.state_dict(),
          "audio2kp": a2k_t.state_dict(), "audio2pose": a2p_t.state_dict()}
  torch.save(ckpt, path)
  return ckpt, a2k_t, a2p_t


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
  """A tiny Audio2Head file (tiny renderer + tiny audio2kp/audio2pose), its torch modules and
  its direct conversion, shared by the tests below."""
  path = str(tmp_path_factory.mktemp("a2h") / "audio2head.pth.tar")
  _, a2k_t, a2p_t = _save_tiny_audio2head(path, seed=0)
  variables, cfg = convert.load_audio2head(path)
  return path, a2k_t, a2p_t, variables, cfg


def test_audio2kp_and_audio2pose_parity_tiny(tiny_ckpt):
  _, a2k_t, a2p_t, variables, cfg = tiny_ckpt
  assert sorted(variables) == ["audio2kp", "audio2pose", "generator", "kp_detector"]
  assert dict(cfg.audio2kp) == dict(TINY_KP, estimate_jacobian=True)
  assert cfg.audio2pose.layers == TINY_POSE["layers"]
  assert cfg.audio2pose.widths == TINY_POSE["widths"]
  assert cfg.num_kp == 10 and cfg.kp_detector.block_expansion == 8

  # Batch 1 and 256 px: the shapes test_animate_pipeline_tiny compiles too.
  audio, img, pose = _inputs(1, TINY_KP["seq_len"])
  with torch.no_grad():
    kp_ref = a2k_t({"audio": audio, "id_img": img, "pose": pose})
    pose_ref = a2p_t({"img": img, "audio": audio})
  kp_j = a2h_inference.predict_keypoints(variables, cfg, audio.numpy(), _nhwc(img), pose.numpy())
  pose_j = a2h_inference.predict_poses(variables, cfg, _nhwc(img), audio.numpy())
  errs = {
      "audio2kp.value": np.abs(np.asarray(kp_j["value"]) - kp_ref["value"].numpy()).max(),
      "audio2kp.jacobian": np.abs(np.asarray(kp_j["jacobian"]) - kp_ref["jacobian"].numpy()).max(),
      "audio2pose": np.abs(np.asarray(pose_j) - pose_ref.numpy()).max(),
  }
  print("\nparity tiny:", {k: f"{v:.2e}" for k, v in errs.items()})
  assert pose_j.shape == (1, TINY_KP["seq_len"] + 1, 6)
  # Non-trivial outputs (keypoints spread out and move over time; poses vary over time).
  assert np.asarray(kp_j["value"]).std() > 0.05
  assert np.abs(np.diff(np.asarray(kp_j["value"]), axis=1)).max() > 1e-3
  assert np.asarray(pose_j).std(axis=1).min() > 1e-3
  for k, v in errs.items():
    assert v <= TOL, (k, v)


def test_audio2pose_parity_published_sizes():
  model_t = torch_audio2head.randomize_(torch_audio2head.Audio2PoseLSTM(), 3).eval()
  sd = torch_state.numpy_state_dict(model_t.state_dict())
  cfg = convert_audio2head.audio2pose_config(sd)
  assert dict(cfg) == convert_audio2head.AUDIO2POSE_DEFAULTS
  variables = convert_audio2head.convert_part(
      sd, convert_audio2head.expected_audio2pose(cfg), "audio2pose.")
  audio, img, _ = _inputs(1, 3, seed=4, size=64)  # weights do not depend on the image size
  with torch.no_grad():
    ref = model_t({"img": img, "audio": audio}).numpy()
  out = np.asarray(a2h_inference.predict_poses({"audio2pose": variables},
                                                    {"audio2pose": cfg}, _nhwc(img), audio.numpy()))
  err = np.abs(out - ref).max()
  print(f"\naudio2pose published sizes: max abs err {err:.2e}")
  assert out.std(axis=1).min() > 1e-4
  assert err <= TOL
  rot, trans = a2p.denormalize_pose(out[0])
  assert rot.shape == (4, 3) and trans.shape == (4, 3)


def test_audio2kp_published_layout():
  """The published audio2kp topology (~parameters.yaml) converts key-for-key; shapes only (a
  forward pass at 64 frames x 64 x 64 of 3-D convs is too slow for CPU tests)."""
  with torch.device("meta"):
    model_t = torch_audio2head.AudioModel3D()
  sd = {k: np.broadcast_to(np.float32(0), tuple(v.shape)) for k, v in model_t.state_dict().items()}
  for name in ("down_id", "down_pose"):
    aa = torch_audio2head.AntiAliasNearest(sd[f"{name}.weight"].shape[0], 0.25)
    sd[f"{name}.weight"] = aa.weight.numpy()
  cfg = convert_audio2head.audio2kp_config(sd)
  assert dict(cfg) == convert_audio2head.AUDIO2KP_DEFAULTS
  expected = convert_audio2head.expected_audio2kp(cfg)
  n_flax = sum(x.size for x in jax.tree.leaves(expected))
  n_torch = sum(v.size for k, v in sd.items()
                if not k.endswith("num_batches_tracked") and not k.startswith("down_"))
  assert n_flax == n_torch
  # Every torch key maps to an expected Flax leaf of the right shape (no arrays materialised).
  want = {}
  for col in ("params", "batch_stats"):
    for p, v in torch_state.flat_variables(expected[col]).items():
      want[torch_state.torch_key(col, p)] = (p[-1], v.shape)
  for k, v in sd.items():
    if k.endswith("num_batches_tracked") or k.startswith("down_"):
      continue
    leaf, shape = want.pop(k)
    assert torch_state.torch_shape(
        shape, leaf, k.startswith(convert_audio2head.TRANSPOSED_CONVS)) == v.shape, k
  assert not want


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("OSMNET_AUDIO2KP_FULL"),
                    reason="~1 min on 2 CPU cores; set OSMNET_AUDIO2KP_FULL=1 to run")
def test_audio2kp_parity_published_sizes():
  """Full forward at the published sizes (64 frames, 5 blocks, 85M parameters)."""
  model_t = torch_audio2head.randomize_(torch_audio2head.AudioModel3D(), 11).eval()
  sd = torch_state.numpy_state_dict(model_t.state_dict())
  cfg = convert_audio2head.audio2kp_config(sd)
  variables = convert_audio2head.convert_part(
      sd, convert_audio2head.expected_audio2kp(cfg), "audio2kp.",
      convert_audio2head.ANTIALIAS_BUFFERS)
  audio, img, pose = _inputs(1, 64, seed=5)
  with torch.no_grad():
    ref = model_t({"audio": audio, "id_img": img, "pose": pose})
  out = a2h_inference.predict_keypoints({"audio2kp": variables}, {"audio2kp": cfg},
                                             audio.numpy(), _nhwc(img), pose.numpy())
  for k in ("value", "jacobian"):
    err = np.abs(np.asarray(out[k]) - ref[k].numpy()).max()
    print(f"\naudio2kp published sizes {k}: max abs err {err:.2e}")
    assert err <= TOL, (k, err)


def test_cli_roundtrip_and_load_fomm(tiny_ckpt, tmp_path):
  path, _, _, direct, cfg_d = tiny_ckpt
  out = tmp_path / "W"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  subprocess.run(
      [sys.executable, "-m", "osmnet_jax.convert", "--from", "audio2head", path, "--out", str(out)],
      check=True, env=env, cwd=os.path.dirname(os.path.dirname(__file__)),
  )
  restored, cfg_r = convert.load_converted(str(out))
  assert cfg_r.to_json(sort_keys=True) == cfg_d.to_json(sort_keys=True)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               restored, direct)
  audio, img, pose = _inputs(1, TINY_KP["seq_len"], seed=2)
  kp = a2h_inference.predict_keypoints(restored, cfg_r, audio.numpy(), _nhwc(img), pose.numpy())
  assert kp["value"].shape == (1, 8, 10, 2) and kp["jacobian"].shape == (1, 8, 10, 2, 2)
  # load_fomm reads the same file and returns its renderer parts.
  fomm_vars, fomm_cfg = convert.load_fomm(path)
  assert sorted(fomm_vars) == ["generator", "kp_detector"]
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               fomm_vars, {k: direct[k] for k in fomm_vars})
  assert fomm_cfg.num_kp == cfg_d.num_kp


def test_broken_checkpoints_name_the_keys():
  kp_t, gen_t = torch_fomm.build(renderer.tiny_config())
  a2k_t, a2p_t = _tiny_modules()
  ckpt = {"kp_detector": kp_t.state_dict(), "generator": gen_t.state_dict(),
          "audio2kp": a2k_t.state_dict(), "audio2pose": a2p_t.state_dict()}
  del ckpt["audio2kp"]["predictor.decoder.res_blocks.1.0.conv2.weight"]
  ckpt["audio2pose"]["output.extra"] = torch.zeros(3)
  ckpt["audio2pose"]["em_audio.resnet.conv1.weight"] = torch.zeros(8, 3, 7, 7)
  del ckpt["generator"]["final.bias"]
  with pytest.raises(convert.CheckpointMismatchError) as e:
    convert_audio2head.convert_audio2head(ckpt)
  msg = str(e.value)
  assert "audio2kp.predictor.decoder.res_blocks.1.0.conv2.weight" in msg
  assert "audio2pose.output.extra" in msg
  assert ("audio2pose.em_audio.resnet.conv1.weight: checkpoint (8, 3, 7, 7) vs expected "
          "(8, 1, 7, 7)") in msg
  assert "generator.final.bias" in msg
  assert "missing keys" in msg and "unexpected keys" in msg and "mis-shaped keys" in msg

  bad = {k: v for k, v in ckpt.items() if k != "audio2pose"}
  with pytest.raises(convert.CheckpointMismatchError, match="no \\['audio2pose'\\] entry"):
    convert_audio2head.convert_audio2head(bad)
  other = dict(ckpt, generator=gen_t.state_dict(), audio2pose=a2p_t.state_dict(),
               audio2kp=torch_audio2head.AudioModel3D(**dict(TINY_KP, num_kp=3)).state_dict())
  with pytest.raises(convert.CheckpointMismatchError, match="audio2kp predicts 3 keypoints"):
    convert_audio2head.convert_audio2head(other)
  sd = dict(a2k_t.state_dict())
  sd["down_pose.weight"] = sd["down_pose.weight"] * 2
  with pytest.raises(convert.CheckpointMismatchError, match="audio2kp.down_pose.weight"):
    convert_audio2head.audio2kp_config(torch_state.numpy_state_dict(sd))


# ------------------------------------------------------------------------------------------------
# Audio features.


def _reference_psf(x, sr=16000):
  """python_speech_features' mfcc / logfbank written out loop by loop (default arguments)."""
  x = np.asarray(x, np.float64)
  y = np.empty_like(x)
  y[0] = x[0]
  for n in range(1, len(x)):
    y[n] = x[n] - 0.97 * x[n - 1]
  flen, step, nfft = 400, 160, 512
  num = 1 if len(y) <= flen else 1 + math.ceil((len(y) - flen) / step)
  y = np.concatenate([y, np.zeros((num - 1) * step + flen - len(y))])

  def mel(f):
    return 2595 * math.log10(1 + f / 700.0)

  def imel(m):
    return 700 * (10 ** (m / 2595.0) - 1)

  pts = [mel(0) + (mel(sr / 2) - mel(0)) * i / 27 for i in range(28)]
  edges = [math.floor((nfft + 1) * imel(m) / sr) for m in pts]
  fb = np.zeros((26, nfft // 2 + 1))
  for j in range(26):
    for i in range(edges[j], edges[j + 1]):
      fb[j, i] = (i - edges[j]) / (edges[j + 1] - edges[j])
    for i in range(edges[j + 1], edges[j + 2]):
      fb[j, i] = (edges[j + 2] - i) / (edges[j + 2] - edges[j + 1])
  k = np.arange(nfft // 2 + 1)
  n = np.arange(flen)
  basis = np.exp(-2j * np.pi * np.outer(n, k) / nfft)  # DFT of the zero-padded frame
  logfb, cep = [], []
  for f in range(num):
    frame = y[f * step: f * step + flen]
    p = np.abs(frame @ basis) ** 2 / nfft
    energy = p.sum() or np.finfo(float).eps
    e = fb @ p
    e[e == 0] = np.finfo(float).eps
    le = np.log(e)
    logfb.append(le)
    c = np.array([
        sum(le[m] * math.cos(math.pi * q * (2 * m + 1) / 52) for m in range(26))
        * math.sqrt((1 if q else 0.5) * 2 / 26) for q in range(13)
    ])
    c *= 1 + 11 * np.sin(np.pi * np.arange(13) / 22)
    c[0] = math.log(energy)
    cep.append(c)
  return np.array(cep), np.array(logfb)


def _reference_inter_pitch(y):
  """Audio2Head's inter_pitch semantics, step by step."""
  y = np.array(y, np.float64)
  voiced = [i for i in range(len(y)) if y[i] != 0]
  if not voiced:
    return y
  y[: voiced[0]] = y[voiced[0]]
  y[voiced[-1] + 1:] = y[voiced[-1]]
  for a, b in zip(voiced[:-1], voiced[1:]):
    for i in range(a + 1, b):
      y[i] = y[a] + (i - a) / (b - a) * (y[b] - y[a])
  return y


def test_features_match_reference():
  rng = np.random.RandomState(0)
  t = np.arange(5000) / 16000
  wave = (np.sin(2 * np.pi * 180 * t) * (t < 0.2) + 0.1 * rng.randn(len(t)))
  wave = np.round(wave / np.abs(wave).max() * 20000).astype(np.int16)
  x = feats.normalize_waveform(wave)
  assert abs(x.mean()) < 1e-12 and np.isclose(np.abs(x).max(), 1.0)
  ref_cep, ref_fb = _reference_psf(x)
  np.testing.assert_allclose(feats.mfcc(x), ref_cep, rtol=1e-7, atol=1e-7)
  np.testing.assert_allclose(feats.logfbank(x), ref_fb, rtol=1e-7, atol=1e-7)
  assert feats.mfcc(x).shape == (1 + math.ceil((5000 - 400) / 160), 13)

  f0 = np.array([0, 0, 100.0, 0, 0, 0, 130.0, 120.0, 0, 0, 110.0, 0])
  filled, flag = feats.fill_unvoiced(f0)
  np.testing.assert_allclose(filled, _reference_inter_pitch(f0))
  np.testing.assert_array_equal(flag, (f0 != 0).astype(int))
  np.testing.assert_array_equal(feats.fill_unvoiced(np.zeros(4))[0], np.zeros(4))

  # Full 41-dim rows with a stub F0 tracker (harvest's frame count: 1 + N // 160).

  def stub(sig, sr):
    del sr
    return np.where(np.arange(1 + len(sig) // 160) % 3 == 0, 0.0, 150.0)

  out = feats.audio_features(wave, 16000, f0_fn=stub)
  assert out.shape == (30, 41) and out.dtype == np.float32
  np.testing.assert_allclose(out[:, :13], ref_cep[:30], rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(out[:, 13:39], ref_fb[:30], rtol=1e-5, atol=1e-4)
  assert np.all(out[:, 39] == 150.0) and set(out[:, 40]) == {0.0, 1.0}
  frames = feats.per_video_frame(out)
  assert frames.shape == (7, 4, 41)
  np.testing.assert_array_equal(frames[1], out[4:8])
  win, starts = feats.sequence_windows(frames, 4)
  assert win.shape == (4, 4, 4, 41) and list(starts) == [0, 2, 4, 6]
  np.testing.assert_array_equal(win[3, 0], frames[6])
  assert not win[3, 1:].any()


def test_default_f0_tracker_on_a_tone():
  """pyworld.harvest when installed, else librosa.pyin: a 150 Hz tone then silence."""
  n = 8000
  t = np.arange(n) / 16000
  wave = np.sin(2 * np.pi * 150 * t) * (t < 0.3) + 1e-3 * np.random.RandomState(1).randn(n)
  out = feats.audio_features((wave * 8000).astype(np.int16))
  assert out.shape == (1 + math.ceil((n - 400) / 160), 41)
  f0, voiced = out[:, 39], out[:, 40]
  assert voiced[5:25].all() and not voiced[-8:].any()
  np.testing.assert_allclose(f0[5:25], 150.0, rtol=0.03)
  # Trailing unvoiced rows hold the last voiced value.
  assert f0[-1] == f0[np.flatnonzero(voiced)[-1]]


def test_animate_pipeline_tiny(tiny_ckpt):
  from osmnet_jax.audio2head import inference as inf  # pylint: disable=g-import-not-at-top

  box = inf.draw_pose_box([0.1, -0.2, 0.05], [0.0, 0.0, 280.0])
  assert box.shape == (256, 256) and set(np.unique(box)) == {0.0, 255.0}
  *_, variables, cfg = tiny_ckpt
  rng = np.random.RandomState(0)
  wave = (rng.randn(5520) * 3000).astype(np.int16)  # 33 feature rows -> 8 video frames
  image = (rng.rand(200, 180, 3) * 255).astype(np.uint8)

  def stub(sig, sr):
    del sr
    return np.where(np.arange(1 + len(sig) // 160) % 4 == 0, 0.0, 120.0)

  out = inf.animate(variables, cfg, image, wave, f0_fn=stub, render_batch=6)
  assert out["frames"].shape == (8, 256, 256, 3) and out["frames"].dtype == np.uint8
  assert out["rotation"].shape == (9, 3) and out["frames"].std() > 1.0
  # Frame 7 comes from the window starting at frame 4 (seq_len 8, step 4), local index 3.
  img = inf.prepare_image(image)
  frames = feats.per_video_frame(feats.audio_features(wave, 16000, stub))
  rows = [4, 5, 6, 7, 8, 8, 8, 8]  # past the end: the last pose row (T = 8)
  boxes = np.stack([inf.draw_pose_box(out["rotation"][r], out["translation"][r]) for r in rows])
  win = np.zeros((1, 8, 4, 41), np.float32)
  win[0, :4] = frames[4:8]
  kp = a2h_inference.predict_keypoints(variables, cfg, win, img[None], boxes[None])
  np.testing.assert_allclose(out["keypoints"][7], np.asarray(kp["value"][0, 3]), atol=1e-6)
  kp_src = {k: np.repeat(np.asarray(v), 6, axis=0)
            for k, v in renderer.detect_keypoints(variables, cfg, img[None]).items()}
  drv = {k: np.repeat(np.asarray(v[:, 3]), 6, axis=0) for k, v in kp.items()}
  pred = renderer.render(variables, cfg, np.repeat(img[None], 6, axis=0), kp_src, drv)["prediction"]
  assert np.abs(out["frames"][7].astype(int) - (np.asarray(pred[0]) * 255).astype(int)).max() <= 1
