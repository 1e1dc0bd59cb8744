"""CPBD: cumulative probability of blur detection (Narvekar & Karam, IEEE TIP 2011). Own code.

No-reference sharpness in [0, 1] (higher = sharper), as used by talking-head papers:
  1. edges: Canny on the grey image; edge widths measured along the row (vertical edges, as in
     the paper): distance between the local intensity extrema on both sides of the edge pixel;
  2. 64x64 blocks with more than 0.2 % edge pixels are edge blocks; their contrast sets the
     "just noticeable blur" width: 5 px for contrast <= 50 (0-255 scale), else 3 px;
  3. per edge pixel P_blur = 1 - exp(-(w / w_JNB) ** 3.6);
  4. CPBD = fraction of edge pixels with P_blur <= 0.63.
Images are float in [0, 1] or uint8, [H, W, 3] or [H, W].

Edge detection (skimage Canny, sigma 1) differs from the reference MATLAB code, so absolute
values are lower than published ones (scikit-image's astronaut scores ~0.19 here); compare
methods side by side on the same frames, not against numbers from papers.
"""
from __future__ import annotations

import numpy as np

BETA = 3.6
P_JNB = 0.63
BLOCK = 64
EDGE_FRACTION = 0.002


def _grey(img) -> np.ndarray:
  x = np.asarray(img, np.float64)
  if x.dtype != np.uint8 and x.max() <= 1.0 + 1e-6:
    x = x * 255.0
  if x.ndim == 3:
    x = x[..., :3] @ np.array([0.299, 0.587, 0.114])
  return x


def _edge_widths(grey: np.ndarray, edges: np.ndarray) -> np.ndarray:
  """Width of each vertical edge pixel: [H, W] -> [H, W] (0 where no edge)."""
  h, w = grey.shape
  widths = np.zeros_like(grey)
  gx = np.zeros_like(grey)
  gx[:, 1:-1] = grey[:, 2:] - grey[:, :-2]
  for r, c in zip(*np.nonzero(edges)):
    row = grey[r]
    rising = gx[r, c] >= 0
    # Walk left and right until the intensity stops changing in the edge's direction.
    left = c
    while left > 0 and ((row[left - 1] < row[left]) if rising else (row[left - 1] > row[left])):
      left -= 1
    right = c
    while right < w - 1 and (
        (row[right + 1] > row[right]) if rising else (row[right + 1] < row[right])):
      right += 1
    widths[r, c] = right - left
  return widths


def cpbd(img) -> float:
  from skimage.feature import canny

  grey = _grey(img)
  edges = canny(grey / 255.0)
  # Keep mostly-vertical edges (the width is measured along rows).
  gy = np.zeros_like(grey)
  gy[1:-1] = grey[2:] - grey[:-2]
  gx = np.zeros_like(grey)
  gx[:, 1:-1] = grey[:, 2:] - grey[:, :-2]
  edges &= np.abs(gx) >= np.abs(gy)
  widths = _edge_widths(grey, edges)
  probs = []
  h, w = grey.shape
  bs = min(BLOCK, h, w)
  for r0 in range(0, h - bs + 1, bs):
    for c0 in range(0, w - bs + 1, bs):
      e = edges[r0:r0 + bs, c0:c0 + bs]
      if e.sum() <= EDGE_FRACTION * bs * bs:
        continue
      blk = grey[r0:r0 + bs, c0:c0 + bs]
      w_jnb = 5.0 if blk.max() - blk.min() <= 50 else 3.0
      ww = widths[r0:r0 + bs, c0:c0 + bs][e]
      probs.append(1.0 - np.exp(-np.abs(ww / w_jnb) ** BETA))
  if not probs:
    return 0.0  # no edges at all: a flat (maximally blurred) image
  p = np.concatenate(probs)
  return float(np.mean(p <= P_JNB))
