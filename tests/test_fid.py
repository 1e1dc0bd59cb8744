"""FID: pytorch-fid Inception parity (random weights through the converter), loader errors,
the Frechet distance against closed forms, and the torch-matching resize."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # pylint: disable=g-import-not-at-top  # noqa: E402

from osmnet_jax import convert  # pylint: disable=g-import-not-at-top  # noqa: E402
from osmnet_jax.metrics import fid  # noqa: E402
from osmnet_jax.models import fid_inception  # noqa: E402
from osmnet_jax.nn.grid_sample import resize_bilinear  # noqa: E402
from tests.torch_fid_inception import FidInception, randomize_  # noqa: E402


@pytest.fixture(scope="module")
def mirror():
  """(torch mirror in eval mode with random weights, its state dict as numpy)."""
  torch.manual_seed(0)
  model = randomize_(FidInception(), seed=0)
  sd = {k: v.numpy().copy() for k, v in model.state_dict().items()}
  return model, sd


# ----------------------------------------------------------------------------------------------
# (a) Feature parity through torch.save -> fid.load.


def test_features_match_torch_mirror(mirror, tmp_path):
  model, _ = mirror
  path = tmp_path / fid_inception.FID_WEIGHTS_NAME
  torch.save(model.state_dict(), path)  # has fc.* and num_batches_tracked, like the release
  feature_fn = fid.load(str(path), batch_size=2)
  rng = np.random.default_rng(0)
  # 3 images with batch 2: two chunks, the second padded; 40x52 -> 299 is an upscale.
  images = rng.integers(0, 256, size=(3, 40, 52, 3), dtype=np.uint8)
  got = feature_fn(images)
  with torch.no_grad():
    ref = model(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0).numpy()
  assert got.shape == (3, 2048) and got.dtype == np.float64
  # The random weights keep features O(1) (mean |f| ~1.4, max ~12), so 1e-4 is ~1e-5 relative.
  assert np.abs(ref).mean() > 0.3
  np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)
  # A different image changes the features (the padding rows never leak into real ones).
  assert np.abs(got[0] - got[1]).max() > 1e-2
  with pytest.raises(ValueError, match="uint8"):
    feature_fn(images.astype(np.float32))


# ----------------------------------------------------------------------------------------------
# (b) Loader errors.


def test_loader_names_missing_extra_and_misshaped_keys(mirror):
  _, sd = mirror
  variables = fid_inception.convert_state_dict(sd)
  assert variables["params"]["Mixed_7c"]["branch_pool"]["conv"]["kernel"].shape == (1, 1, 2048,
                                                                                     192)
  np.testing.assert_array_equal(variables["batch_stats"]["Conv2d_1a_3x3"]["bn"]["var"],
                                sd["Conv2d_1a_3x3.bn.running_var"])
  np.testing.assert_array_equal(variables["params"]["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"],
                                np.transpose(sd["Mixed_6b.branch7x7_2.conv.weight"], (2, 3, 1, 0)))

  missing = {k: v for k, v in sd.items() if k != "Mixed_6c.branch7x7dbl_3.conv.weight"}
  with pytest.raises(convert.CheckpointMismatchError,
                     match=r"missing keys \(1\):\n  Mixed_6c\.branch7x7dbl_3\.conv\.weight"):
    fid_inception.convert_state_dict(missing)

  extra = dict(sd, **{"AuxLogits.conv0.conv.weight": np.zeros((128, 768, 1, 1), np.float32)})
  with pytest.raises(convert.CheckpointMismatchError,
                     match=r"unexpected keys \(1\):\n  AuxLogits\.conv0\.conv\.weight"):
    fid_inception.convert_state_dict(extra)

  bad = dict(sd, **{"Mixed_5b.branch_pool.bn.running_mean": np.zeros(64, np.float32)})
  with pytest.raises(convert.CheckpointMismatchError) as err:
    fid_inception.convert_state_dict(bad)
  msg = str(err.value)
  assert "mis-shaped keys (1):\n  Mixed_5b.branch_pool.bn.running_mean: checkpoint (64,)" in msg
  assert "expected (32,)" in msg and "missing keys" not in msg


def test_loader_bad_path_says_where_to_get_the_file(tmp_path):
  with pytest.raises(FileNotFoundError) as err:
    fid.load(str(tmp_path / "nope.pth"))
  assert "nope.pth" in str(err.value) and "pt_inception-2015-12-05-6726825d.pth" in str(err.value)
  assert "github.com/mseitzer/pytorch-fid/releases" in str(err.value)


# ----------------------------------------------------------------------------------------------
# (c) Frechet distance.


def _with_moments(rng, n, mu, cov):
  """n samples whose empirical mean and unbiased covariance are exactly mu and cov."""
  z = rng.standard_normal((n, len(mu)))
  z -= z.mean(0)
  z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # cov(z) = I
  return z @ np.linalg.cholesky(cov).T + mu


def test_frechet_identical_sets_is_zero():
  feats = np.random.default_rng(0).standard_normal((300, 16))
  assert abs(fid.frechet_distance(feats, feats)) < 1e-9


def test_frechet_diagonal_gaussians_closed_form():
  rng = np.random.default_rng(1)
  d = 6
  mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
  a, b = rng.uniform(0.2, 3.0, d), rng.uniform(0.2, 3.0, d)
  # FID(N(mu1, diag a), N(mu2, diag b)) = |mu1 - mu2|^2 + sum (sqrt a - sqrt b)^2.
  expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  got = fid.frechet_from_stats(mu1, np.diag(a), mu2, np.diag(b))
  assert abs(got - expected) < 1e-10 * max(1.0, expected)
  assert abs(fid.frechet_from_stats(mu2, np.diag(b), mu1, np.diag(a)) - expected) < 1e-9
  # The same through features whose sample moments are exactly those (tolerance 1e-8).
  fa = _with_moments(rng, 500, mu1, np.diag(a))
  fb = _with_moments(rng, 700, mu2, np.diag(b))
  assert abs(fid.frechet_distance(fa, fb) - expected) < 1e-8


def test_frechet_full_covariances_match_symmetric_form():
  # tr sqrt(S1 S2) = tr sqrt(S1^1/2 S2 S1^1/2), the latter from eigendecompositions only.
  rng = np.random.default_rng(2)
  d = 5
  m1, m2 = rng.standard_normal((d, d)), rng.standard_normal((d, d))
  s1, s2 = m1 @ m1.T + 0.1 * np.eye(d), m2 @ m2.T + 0.1 * np.eye(d)

  def psd_sqrt(s):
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

  r1 = psd_sqrt(s1)
  expected = 4.0 + np.trace(s1) + np.trace(s2) - 2 * np.trace(psd_sqrt(r1 @ s2 @ r1))
  got = fid.frechet_from_stats(np.zeros(d), s1, np.full(d, 2.0 / np.sqrt(d)), s2)
  assert abs(got - expected) < 1e-9 * expected


def test_frechet_rank_deficient_and_imaginary():
  rng = np.random.default_rng(3)
  # Fewer samples than dimensions: singular covariances; the value stays finite and equals the
  # eps-regularised distance up to the regulariser's effect.
  fa, fb = rng.standard_normal((6, 20)), rng.standard_normal((6, 20)) + 0.5
  got = fid.frechet_distance(fa, fb)
  (mu1, s1), (mu2, s2) = fid.stats(fa), fid.stats(fb)
  reg = fid.frechet_from_stats(mu1, s1 + 1e-6 * np.eye(20), mu2, s2 + 1e-6 * np.eye(20))
  assert np.isfinite(got) and abs(got - reg) < 1e-3 * reg
  # A non-PSD "covariance" has a square root with an imaginary diagonal: an error, not a number.
  with pytest.raises(ValueError, match="imaginary"):
    fid.frechet_from_stats(np.zeros(3), np.eye(3), np.zeros(3), -np.eye(3))
  with pytest.raises(ValueError, match="N>=2"):
    fid.frechet_distance(fa[:1], fb)


# ----------------------------------------------------------------------------------------------
# (d) Resize = F.interpolate(bilinear, align_corners=False, no antialias).


@pytest.mark.parametrize("hw", [(20, 27), (400, 350)], ids=["up", "down"])
def test_resize_matches_torch_interpolate(hw):
  x = np.random.default_rng(4).uniform(size=(2, *hw, 3)).astype(np.float32)
  ref = F.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=(299, 299), mode="bilinear",
                      align_corners=False).permute(0, 2, 3, 1).numpy()
  got = np.asarray(resize_bilinear(jnp.asarray(x), (299, 299)))
  np.testing.assert_allclose(got, ref, rtol=0, atol=2e-6)
  # The trap: jax.image.resize agrees when upscaling but anti-aliases when downscaling.
  jax_err = np.abs(np.asarray(jax.image.resize(x, (2, 299, 299, 3), "bilinear")) - ref).max()
  assert (jax_err < 1e-5) if hw[0] < 299 else (jax_err > 1e-2)
  # Full preprocessing of uint8 frames: /255, resize, 2x - 1, as pytorch-fid.
  u8 = (x * 255).astype(np.uint8)
  pre = F.interpolate(torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255.0, size=(299, 299),
                      mode="bilinear", align_corners=False) * 2 - 1
  np.testing.assert_allclose(np.asarray(fid_inception.preprocess(jnp.asarray(u8))),
                             pre.permute(0, 2, 3, 1).numpy(), rtol=0, atol=4e-6)


def test_299_input_passes_through_unchanged():
  x = np.random.default_rng(5).integers(0, 256, (1, 299, 299, 3), dtype=np.uint8)
  np.testing.assert_allclose(np.asarray(fid_inception.preprocess(jnp.asarray(x))),
                             2.0 * (x.astype(np.float32) / 255.0) - 1.0, rtol=0, atol=1e-6)
