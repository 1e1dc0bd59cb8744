"""SyncNet port and LSE-C / LSE-D: torch mirror (random weights) -> state dict file ->
load_syncnet -> same embeddings; loader errors; the distance/offset protocol on embeddings with a
known answer; MFCC framing and values vs python_speech_features; the scorer end to end.
"""

import os
import sys

import numpy as np
import pytest
import torch

from osmnet_jax import convert
from osmnet_jax.metrics import syncnet_lse
from osmnet_jax.models import syncnet

sys.path.insert(0, os.path.dirname(__file__))
import torch_syncnet  # pylint: disable=g-import-not-at-top,wrong-import-position

TOL = 1e-4


@pytest.fixture(scope="module")
def mirror():
  torch.set_num_threads(2)
  return torch_syncnet.randomize_(torch_syncnet.SyncNetS(), seed=0)


@pytest.fixture(scope="module")
def weights_file(mirror, tmp_path_factory):
  path = tmp_path_factory.mktemp("syncnet") / "syncnet_v2.model"
  torch.save(mirror.state_dict(), path)
  return path


def test_embeddings_match_torch_mirror(mirror, weights_file):
  variables = syncnet.load_syncnet(weights_file)
  g = torch.Generator().manual_seed(1)
  mf = torch.randn(2, 1, 13, 20, generator=g) * 2.0
  im = torch.rand(2, 3, 5, 224, 224, generator=g) * 255.0
  with torch.no_grad():
    ta, tl = mirror.forward_aud(mf).numpy(), mirror.forward_lip(im).numpy()
  ja, jl = syncnet_lse._embed(  # pylint: disable=protected-access
      variables, mf.numpy().transpose(0, 2, 3, 1), im.numpy().transpose(0, 2, 3, 4, 1))
  assert ja.shape == jl.shape == (2, 1024)
  assert ta.std() > 1.0 and tl.std() > 1.0  # not a trivially small output
  assert np.abs(np.asarray(ja) - ta).max() <= TOL
  assert np.abs(np.asarray(jl) - tl).max() <= TOL
  # The BGR channel order matters: swapped channels give another embedding.
  _, jl_rgb = syncnet_lse._embed(  # pylint: disable=protected-access
      variables, mf.numpy().transpose(0, 2, 3, 1),
      im.numpy().transpose(0, 2, 3, 4, 1)[..., ::-1])
  assert np.abs(np.asarray(jl_rgb) - tl).max() > 1e-2


def _sd(mirror):
  return {k: v.numpy() for k, v in mirror.state_dict().items()}


def test_loader_names_bad_keys(mirror, tmp_path):
  sd = _sd(mirror)
  del sd["netcnnlip.4.weight"]
  sd["netcnnaud.9.running_var"] = np.ones(7, np.float32)
  sd["netfcaud.5.weight"] = np.ones((3, 3), np.float32)
  with pytest.raises(convert.CheckpointMismatchError) as e:
    syncnet.convert_state_dict(sd)
  msg = str(e.value)
  assert "missing keys (1):\n  netcnnlip.4.weight" in msg
  assert "unexpected keys (1):\n  netfcaud.5.weight" in msg
  assert "netcnnaud.9.running_var: checkpoint (7,) vs expected (384,)" in msg
  # Conv kernels are reported in torch's layout.
  sd = _sd(mirror)
  sd["netcnnlip.0.weight"] = np.zeros((96, 3, 5, 5, 5), np.float32)
  with pytest.raises(convert.CheckpointMismatchError, match=r"expected \(96, 3, 5, 7, 7\)"):
    syncnet.convert_state_dict(sd)
  # SyncNetInstance.state_dict() keys ('__S__.' prefix) load; num_batches_tracked is ignored.
  sd = {"__S__." + k: v for k, v in _sd(mirror).items()}
  v = syncnet.convert_state_dict(sd)
  np.testing.assert_array_equal(v["batch_stats"]["netfclip_1"]["var"],
                                sd["__S__.netfclip.1.running_var"])
  np.testing.assert_array_equal(v["params"]["netcnnaud_18"]["kernel"],
                                sd["__S__.netcnnaud.18.weight"].transpose(2, 3, 1, 0))


def test_loader_bad_path_names_file_and_source(tmp_path):
  missing = tmp_path / "nowhere" / "syncnet_v2.model"
  with pytest.raises(FileNotFoundError) as e:
    syncnet_lse.load(missing)
  assert str(missing) in str(e.value) and "syncnet_python" in str(e.value)


# ----------------------------------------------------------------------------------------------
# The distance / offset protocol (pure, no networks).


def _random_emb(n, d=32, seed=0):
  return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


@pytest.mark.parametrize("k", [0, 3, -5, 15])
def test_protocol_recovers_shift(k):
  n = 60
  base = _random_emb(n + 40, seed=1)
  audio = base[20:20 + n]
  video = base[20 - k:20 - k + n]  # video window i == audio window i - k
  out = syncnet_lse.sync_scores(video, audio, vshift=15)
  assert out["offset"] == k
  assert out["mean_dist"].shape == (31,)
  # Windows whose partner falls outside the clip meet zero padding: |k| of n windows.
  d = syncnet_lse.offset_distances(video, audio)[:, 15 - k]
  assert np.sum(d > 1e-3) == abs(k)
  if k == 0:
    assert out["lse_d"] < 1e-4
  assert out["lse_c"] > 3.0  # median over shifts is a random-pair distance (~sqrt(2*32)=8)


def test_protocol_unrelated_embeddings_low_confidence():
  video, audio = _random_emb(80, seed=2), _random_emb(80, seed=3)
  out = syncnet_lse.sync_scores(video, audio)
  synced = syncnet_lse.sync_scores(audio + 0.05 * video, audio)
  # Unrelated pairs are ~sqrt(2*32) = 8 apart but a zero-padded partner only ~sqrt(32) = 5.7, so
  # the protocol's padding pulls the minimum to an extreme shift: min ~ 8 - 15/80 * 2.3 = 7.56,
  # median (|shift| = 8) ~ 8 - 8/80 * 2.3 = 7.77 -> LSE-C ~ 0.2, against ~7.4 when in sync.
  assert out["lse_c"] < 0.5 and abs(out["offset"]) >= 13
  assert synced["lse_c"] > 5.0 and synced["offset"] == 0
  assert out["lse_d"] > 7.0 and synced["lse_d"] < 1.0


def test_protocol_matches_loop_definition():
  """The vectorised calc_pdist against a literal per-window loop with torch's pairwise_distance."""
  video, audio = _random_emb(12, 8, seed=4), _random_emb(12, 8, seed=5)
  vshift = 4
  fp = torch.nn.functional.pad(torch.from_numpy(audio), (0, 0, vshift, vshift))
  ref = np.stack([torch.nn.functional.pairwise_distance(
      torch.from_numpy(video)[[i], :].repeat(2 * vshift + 1, 1), fp[i:i + 2 * vshift + 1]).numpy()
                  for i in range(12)])
  got = syncnet_lse.offset_distances(video, audio, vshift)
  np.testing.assert_allclose(got, ref, atol=1e-5)
  mdist = ref.mean(0)
  out = syncnet_lse.sync_scores(video, audio, vshift)
  assert out["offset"] == vshift - int(np.argmin(mdist))
  assert out["lse_d"] == pytest.approx(mdist.min(), abs=1e-5)
  assert out["lse_c"] == pytest.approx(float(torch.median(torch.from_numpy(mdist))) - mdist.min(),
                                       abs=1e-5)


# ----------------------------------------------------------------------------------------------
# MFCC and windows.


def _speechlike(seconds, seed=0):
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * 16000)) / 16000
  env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
  x = env * (0.3 * np.sin(2 * np.pi * 180 * t) + 0.1 * rng.normal(size=t.shape))
  return x.astype(np.float32)


def test_mfcc_framing_four_per_video_frame():
  t = 10
  audio = _speechlike(t / 25)
  assert len(audio) == 640 * t
  m = syncnet_lse.mfcc(audio)
  assert m.shape == (4 * t - 1, 13)
  n = syncnet_lse.num_windows(t, len(audio))
  assert n == t - 5
  w = syncnet_lse.audio_windows(m, n)
  assert w.shape == (n, 13, 20, 1)
  np.testing.assert_array_equal(w[2, :, :, 0], m[8:28].T.astype(np.float32))
  # int16 input is used as is; float input is scaled by 32768 and rounded to int16 values.
  i16 = np.round(audio * 32768).astype(np.int16)
  np.testing.assert_array_equal(syncnet_lse.mfcc(i16), m)
  assert not np.allclose(syncnet_lse.psf.mfcc(audio.astype(np.float64)), m, atol=1e-2)


def test_mfcc_matches_python_speech_features():
  psf = pytest.importorskip(
      "python_speech_features",
      reason="python_speech_features (the reference syncnet_python uses) is not installed; "
      "pip install python_speech_features (in the dev extra)")
  audio = _speechlike(1.3, seed=3)
  pcm = np.round(audio * 32768).astype(np.int16)  # what wavfile.read gives syncnet_python
  ref = psf.mfcc(pcm, 16000)
  got = syncnet_lse.mfcc(audio)
  assert got.shape == ref.shape
  np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------------------------
# The scorer end to end (converted mirror weights).


def test_scorer_end_to_end_matches_protocol(mirror, weights_file):
  scorer = syncnet_lse.load(weights_file, batch_size=4)
  rng = np.random.default_rng(0)
  t = 11  # -> 6 windows: one full batch of 4 and one padded batch
  frames = rng.integers(0, 256, size=(t, 48, 40, 3), dtype=np.uint8)
  audio = _speechlike(t / 25 + 0.1, seed=1)  # longer audio: min_length follows the video
  out = scorer(frames, audio)
  assert set(out) == {"lse_d", "lse_c", "offset"}
  assert isinstance(out["offset"], int) and -15 <= out["offset"] <= 15
  # Reference: the torch mirror on the same windows (cv2-resized BGR frames, MFCC windows).
  img = syncnet_lse.prepare_frames(frames)
  n = 6
  lip = np.stack([img[i:i + 5] for i in range(n)]).transpose(0, 4, 1, 2, 3)
  mf = syncnet_lse.audio_windows(syncnet_lse.mfcc(audio), n).transpose(0, 3, 1, 2)
  with torch.no_grad():
    tv = mirror.forward_lip(torch.from_numpy(np.ascontiguousarray(lip))).numpy()
    ta = mirror.forward_aud(torch.from_numpy(mf)).numpy()
  vid, aud = scorer.embeddings(frames, audio)
  assert vid.shape == aud.shape == (n, 1024)
  # Real MFCCs (c0 = log energy ~ 20-30) make these random-weight audio embeddings O(50): float32
  # accumulation-order noise then exceeds 1e-4 absolute, so the bound scales with the largest
  # entry (float32 epsilon ~1.2e-7; the noise grows with the magnitudes summed, not per entry).
  for got, ref in ((vid, tv), (aud, ta)):
    assert np.abs(got - ref).max() <= TOL + 1e-5 * np.abs(ref).max()
  ref = syncnet_lse.sync_scores(tv, ta)
  assert out["offset"] == ref["offset"]
  assert out["lse_d"] == pytest.approx(ref["lse_d"], rel=1e-5)
  assert out["lse_c"] == pytest.approx(ref["lse_c"], rel=1e-4, abs=1e-4)
  with pytest.raises(ValueError, match="at least 6 frames"):
    scorer(frames[:5], audio)
  with pytest.raises(ValueError, match="16 kHz"):
    scorer(frames, audio, sample_rate=22050)
