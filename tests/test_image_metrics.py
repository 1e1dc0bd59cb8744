"""Image metrics against known answers and against scikit-image."""
import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from osmnet_jax.metrics import image


def _pair(seed=0):
  rng = np.random.default_rng(seed)
  a = rng.random((2, 40, 48, 3)).astype(np.float32)
  b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype(np.float32)
  return a, b


def test_identical_images():
  a, _ = _pair()
  assert np.all(np.isinf(np.asarray(image.psnr(a, a))))
  np.testing.assert_allclose(image.ssim(a, a), 1.0, atol=1e-5)
  np.testing.assert_allclose(image.l1(a, a), 0.0)


def test_matches_skimage():
  a, b = _pair()
  for i in range(2):
    want_ssim = structural_similarity(a[i], b[i], gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False, data_range=1.0, channel_axis=-1)
    np.testing.assert_allclose(float(image.ssim(a[i], b[i])), want_ssim, rtol=1e-4)
    want_psnr = peak_signal_noise_ratio(a[i], b[i], data_range=1.0)
    np.testing.assert_allclose(float(image.psnr(a[i], b[i])), want_psnr, rtol=1e-5)
  np.testing.assert_allclose(image.l1(a, b), np.abs(a - b).mean((1, 2, 3)), rtol=1e-5)


def test_more_noise_scores_worse():
  a, b = _pair()
  worse = np.clip(a + np.random.default_rng(1).normal(0, 0.3, a.shape), 0, 1).astype(np.float32)
  assert np.all(image.ssim(a, worse) < image.ssim(a, b))
  assert np.all(image.psnr(a, worse) < image.psnr(a, b))
