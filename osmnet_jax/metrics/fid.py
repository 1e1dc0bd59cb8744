"""Frechet Inception Distance with pytorch-fid's Inception (weights by path; nothing downloads).

    feature_fn = fid.load("pt_inception-2015-12-05-6726825d.pth")
    fid_value = fid.frechet_distance(feature_fn(real_uint8), feature_fn(fake_uint8))

`feature_fn` takes uint8 [N,H,W,3] frames of any size and returns float64 [N,2048] pool3 features
(pytorch-fid's preprocessing: /255, bilinear resize to 299 without anti-aliasing, 2x - 1; see
osmnet_jax/models/fid_inception.py for the network and its parity traps). The Frechet distance
follows pytorch-fid's `calculate_frechet_distance`: mu = mean, sigma = np.cov(rowvar=False)
(unbiased), sqrtm of sigma1 @ sigma2 with an eps * I offset on both covariances when the product
is singular (non-finite sqrtm), and an error when the diagonal of the square root has an imaginary
part above 1e-3. FID from few samples is biased upwards (the covariance is estimated from N
features of dimension 2048); compare values only at equal N.
"""
from __future__ import annotations

import warnings
from typing import Callable

import jax
import numpy as np
from scipy import linalg

from osmnet_jax.models import fid_inception


def load(path: str, batch_size: int = 16) -> Callable[[np.ndarray], np.ndarray]:
  """Returns feature_fn(uint8 [N,H,W,3]) -> float64 [N,2048], using the weights at `path`.

  The network is jitted once for [batch_size, 299, 299, 3]: inputs are cut into chunks of
  `batch_size`, the last padded with zero images (their features are dropped). The resize runs
  in a separate small jit, compiled once per input (H, W).
  """
  variables = fid_inception.load_fid_inception(path)
  model = fid_inception.FIDInceptionV3()
  net = jax.jit(model.apply)
  prep = jax.jit(fid_inception.preprocess)

  def feature_fn(images) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"FID expects uint8 images [N,H,W,3], got {images.dtype} "
                       f"{images.shape}")
    n = images.shape[0]
    out = np.zeros((n, fid_inception.FEATURE_DIM), np.float64)
    for start in range(0, n, batch_size):
      chunk = images[start:start + batch_size]
      m = chunk.shape[0]
      if m < batch_size:  # pad to the one compiled batch shape
        pad = np.zeros((batch_size - m,) + chunk.shape[1:], np.uint8)
        chunk = np.concatenate([chunk, pad])
      feats = net(variables, prep(chunk))  # [batch_size, 2048] float32
      out[start:start + m] = np.asarray(feats[:m], np.float64)
    return out

  return feature_fn


def frechet_from_stats(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
  """||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2)) for Gaussians [D], [D,D]."""
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
    raise ValueError(f"mismatched statistics: mu {mu1.shape} / {mu2.shape}, sigma "
                     f"{sigma1.shape} / {sigma2.shape}")
  diff = mu1 - mu2
  with warnings.catch_warnings():  # scipy warns on singular input; handled just below
    warnings.simplefilter("ignore")
    covmean = linalg.sqrtm(sigma1 @ sigma2)
  if not np.isfinite(covmean).all():
    # Singular product (e.g. fewer samples than dimensions): regularise both covariances.
    offset = np.eye(sigma1.shape[0]) * eps
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if np.iscomplexobj(covmean):
    imag = np.abs(np.diagonal(covmean).imag).max()
    if imag > 1e-3:
      raise ValueError(f"sqrtm(sigma1 @ sigma2) has an imaginary component {imag:.3g}")
    covmean = covmean.real
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def stats(feats) -> tuple[np.ndarray, np.ndarray]:
  """[N,D] features -> (mean [D], unbiased covariance [D,D]) in float64."""
  feats = np.asarray(feats, np.float64)
  if feats.ndim != 2 or feats.shape[0] < 2:
    raise ValueError(f"need features [N>=2, D] for a covariance, got {feats.shape}")
  return feats.mean(axis=0), np.cov(feats, rowvar=False)


def frechet_distance(feats_a, feats_b) -> float:
  """FID between two feature sets [Na,D] and [Nb,D]."""
  return frechet_from_stats(*stats(feats_a), *stats(feats_b))
