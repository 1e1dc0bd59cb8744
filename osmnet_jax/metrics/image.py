"""Image-quality metrics in JAX: L1, PSNR, SSIM.

Images are float [..., H, W, C] in [0, 1].
SSIM follows Wang et al. 2004 as skimage computes it with ``gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1`` (11x11 Gaussian window, K1 0.01, K2 0.03), averaged
over the "valid" interior (skimage crops (win-1)/2 pixels at each border) and over channels.
PSNR of identical images is +inf.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def l1(a, b):
  return jnp.mean(jnp.abs(a - b), axis=(-3, -2, -1))


def psnr(a, b, data_range: float = 1.0):
  mse = jnp.mean((a - b) ** 2, axis=(-3, -2, -1))
  return 10.0 * jnp.log10(data_range ** 2 / mse)


def _gaussian_window(sigma: float = 1.5, truncate: float = 3.5) -> np.ndarray:
  radius = int(truncate * sigma + 0.5)  # skimage: 11x11 for sigma 1.5
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  g = np.exp(-(x ** 2) / (2 * sigma ** 2))
  return (g / g.sum()).astype(np.float32)


def _filter(x, win):
  # Separable valid Gaussian filter over H and W of [N, H, W, C].
  k = win.shape[0]
  c = x.shape[-1]
  kh = jnp.asarray(win).reshape(k, 1, 1, 1) * jnp.ones((1, 1, 1, c))
  kw = jnp.asarray(win).reshape(1, k, 1, 1) * jnp.ones((1, 1, 1, c))
  dn = ("NHWC", "HWIO", "NHWC")
  conv = lambda y, k: jax.lax.conv_general_dilated(y, k, (1, 1), "VALID", dimension_numbers=dn,
                                                   feature_group_count=c)
  return conv(conv(x, kh), kw)


def ssim(a, b, data_range: float = 1.0, sigma: float = 1.5):
  """Mean SSIM per image: [..., H, W, C] x2 -> [...]."""
  lead = a.shape[:-3]
  a = a.reshape((-1,) + a.shape[-3:]).astype(jnp.float32)
  b = b.reshape((-1,) + b.shape[-3:]).astype(jnp.float32)
  win = _gaussian_window(sigma)
  c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
  mu_a, mu_b = _filter(a, win), _filter(b, win)
  aa = _filter(a * a, win) - mu_a ** 2
  bb = _filter(b * b, win) - mu_b ** 2
  ab = _filter(a * b, win) - mu_a * mu_b
  s = ((2 * mu_a * mu_b + c1) * (2 * ab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (aa + bb + c2))
  return s.mean(axis=(1, 2, 3)).reshape(lead)
