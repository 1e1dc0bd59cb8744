"""SyncNet (Chung & Zisserman 2016, "Out of time") in Flax, loadable from the public weights.

Port of the `S` model of joonson/syncnet_python (`SyncNetModel.py`), the network behind the
LSE-C / LSE-D lip-sync metrics (osmnet_jax/metrics/syncnet_lse.py):
  * `netcnnaud` + `netfcaud`: MFCC window [13 coefficients x 20 frames] (0.2 s) -> 1024-d;
  * `netcnnlip` + `netfclip`: 5 RGB frames 224x224 (BGR order, 0..255, no normalisation, as
    syncnet_python feeds cv2 images) -> 1024-d.
BatchNorm always uses the running statistics (the metric runs the net in `.eval()` mode).

Naming: every layer with weights is a Flax submodule named after its torch key with the
Sequential index joined by '_' (`netcnnaud.0.weight` -> params/netcnnaud_0/kernel,
`netcnnlip.1.running_mean` -> batch_stats/netcnnlip_1/mean), so `load_syncnet` is
`convert.torch_state.convert_state_dict`'s rename plus transposes: conv [O,I,*k] -> kernel
[*k,I,O] (2-D and 3-D), linear [O,I] -> [I,O].

Layout: NHWC for the audio branch (H = 13 MFCC coefficients, W = 20 time steps, C = 1);
NDHWC for the lip branch ([N, 5, 224, 224, 3]). Every lip conv after the first has temporal
kernel 1 (the first one collapses the 5 frames to 1), so the 3-D convs run as 2-D convs on
kernels of the torch shape: the first one with the 5 frames folded into channels (frame-major,
kernel [5,7,7,3,O] -> [7,7,15,O]), the others on kernel[0]. Mathematically identical, and XLA's
CPU 2-D convolution is faster than its 3-D one. Max pools pad with -inf like torch's.
"""
from __future__ import annotations

import os

import flax.linen as nn
import jax
import jax.numpy as jnp

from osmnet_jax.convert import torch_state

EMBED_DIM = 1024
NUM_MFCC = 13
AUDIO_WINDOW = 20  # MFCC frames per window (0.2 s at 100 frames/s)
LIP_FRAMES = 5  # video frames per window (0.2 s at 25 fps)
LIP_SIZE = 224
WEIGHTS_HINT = (
    "SyncNet weights are the public syncnet_v2.model of joonson/syncnet_python (fetched by its "
    "download_model.sh from the VGG lip-sync page, www.robots.ox.ac.uk/~vgg/software/lipsync/); "
    "download it yourself and pass its path"
)

# Layer lists of SyncNetModel.S as (kind, torch Sequential index, args). conv args:
# (out_features, kernel, stride, padding); pool args: (window, stride, padding). BatchNorm follows
# every conv/linear except the last linear; ReLU after every BatchNorm.
_AUD = (
    ("conv", 0, (64, (3, 3), (1, 1), (1, 1))), ("bn", 1), ("relu", 2),
    ("pool", 3, ((1, 1), (1, 1), (0, 0))),
    ("conv", 4, (192, (3, 3), (1, 1), (1, 1))), ("bn", 5), ("relu", 6),
    ("pool", 7, ((3, 3), (1, 2), (0, 0))),
    ("conv", 8, (384, (3, 3), (1, 1), (1, 1))), ("bn", 9), ("relu", 10),
    ("conv", 11, (256, (3, 3), (1, 1), (1, 1))), ("bn", 12), ("relu", 13),
    ("conv", 14, (256, (3, 3), (1, 1), (1, 1))), ("bn", 15), ("relu", 16),
    ("pool", 17, ((3, 3), (2, 2), (0, 0))),
    ("conv", 18, (512, (5, 4), (1, 1), (0, 0))), ("bn", 19), ("relu", 20),
)
# Lip convs are 3-D in torch; kernels here keep the temporal size (5 for the first, else 1) and
# strides/paddings/pools list only (H, W) since their temporal stride is 1 and padding 0.
_LIP = (
    ("conv", 0, (96, (5, 7, 7), (2, 2), (0, 0))), ("bn", 1), ("relu", 2),
    ("pool", 3, ((3, 3), (2, 2), (0, 0))),
    ("conv", 4, (256, (1, 5, 5), (2, 2), (1, 1))), ("bn", 5), ("relu", 6),
    ("pool", 7, ((3, 3), (2, 2), (1, 1))),
    ("conv", 8, (256, (1, 3, 3), (1, 1), (1, 1))), ("bn", 9), ("relu", 10),
    ("conv", 11, (256, (1, 3, 3), (1, 1), (1, 1))), ("bn", 12), ("relu", 13),
    ("conv", 14, (256, (1, 3, 3), (1, 1), (1, 1))), ("bn", 15), ("relu", 16),
    ("pool", 17, ((3, 3), (2, 2), (0, 0))),
    ("conv", 18, (512, (1, 6, 6), (1, 1), (0, 0))), ("bn", 19), ("relu", 20),
)
# netfcaud / netfclip: Linear(512,512) 0, BatchNorm1d 1, ReLU 2, Linear(512, EMBED_DIM) 3.


class TorchConv(nn.Module):
  """Convolution holding a torch-shaped kernel [*k, I, O] (k = (kh,kw) or (kd,kh,kw)).

  Input NHWC. A 3-D kernel with kd > 1 expects x [N, kd, H, W, I] (the whole temporal extent,
  valid padding in time, output depth 1) and folds the frames into channels; kd == 1 runs the
  2-D conv with kernel[0] on x [N, H, W, I].
  """
  features: int
  kernel_size: tuple[int, ...]
  strides: tuple[int, int]
  padding: tuple[int, int]

  @nn.compact
  def __call__(self, x):
    in_features = x.shape[-1]
    kernel = self.param(
        "kernel", nn.initializers.lecun_normal(),
        tuple(self.kernel_size) + (in_features, self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    if kernel.ndim == 5:
      kd = kernel.shape[0]
      if kd == 1:
        kernel = kernel[0]
      else:
        if x.ndim != 5 or x.shape[1] != kd:
          raise ValueError(f"expected input [N, {kd}, H, W, C], got {x.shape}")
        n, _, h, w, c = x.shape
        # [N,D,H,W,C] -> [N,H,W,D*C]; kernel [D,kh,kw,C,O] -> [kh,kw,D*C,O], both frame-major.
        x = jnp.transpose(x, (0, 2, 3, 1, 4)).reshape(n, h, w, kd * c)
        kernel = jnp.transpose(kernel, (1, 2, 0, 3, 4)).reshape(
            kernel.shape[1], kernel.shape[2], kd * c, self.features)
    y = jax.lax.conv_general_dilated(
        x, kernel, window_strides=self.strides,
        padding=[(p, p) for p in self.padding],
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST)
    return y + bias


def _bn(name: str) -> nn.BatchNorm:
  # torch BatchNorm eps 1e-5; eval mode (running statistics) only.
  return nn.BatchNorm(use_running_average=True, epsilon=1e-5, name=name)


def _run_cnn(layers, prefix: str, x):
  for kind, idx, *args in layers:
    name = f"{prefix}_{idx}"
    if kind == "conv":
      out, kernel, stride, pad = args[0]
      x = TorchConv(out, kernel, stride, pad, name=name)(x)
    elif kind == "bn":
      x = _bn(name)(x)
    elif kind == "relu":
      x = nn.relu(x)
    else:
      window, stride, pad = args[0]
      x = nn.max_pool(x, window, stride, padding=[(p, p) for p in pad])
  return x


def _run_fc(prefix: str, x, embed_dim: int):
  x = nn.Dense(512, name=f"{prefix}_0", precision=jax.lax.Precision.HIGHEST)(x)
  x = nn.relu(_bn(f"{prefix}_1")(x))
  return nn.Dense(embed_dim, name=f"{prefix}_3", precision=jax.lax.Precision.HIGHEST)(x)


class SyncNet(nn.Module):
  """SyncNetModel.S. Call with `mfcc` and/or `frames`; returns (audio_emb, lip_emb) (None for a
  branch whose input is None).

  mfcc: float32 [N, 13, 20, 1] (syncnet_python's [N,1,13,20] in NHWC).
  frames: float32 [N, 5, 224, 224, 3], BGR, 0..255.
  Embeddings: [N, embed_dim].
  """
  embed_dim: int = EMBED_DIM

  @nn.compact
  def __call__(self, mfcc=None, frames=None):
    aud = lip = None
    if mfcc is not None:
      h = _run_cnn(_AUD, "netcnnaud", mfcc)  # [N, 1, 1, 512]
      aud = _run_fc("netfcaud", h.reshape(h.shape[0], -1), self.embed_dim)
    if frames is not None:
      h = _run_cnn(_LIP, "netcnnlip", frames)  # [N, 1, 1, 512]
      lip = _run_fc("netfclip", h.reshape(h.shape[0], -1), self.embed_dim)
    return aud, lip


def expected_shapes(embed_dim: int = EMBED_DIM) -> dict:
  """Variables of SyncNet as ShapeDtypeStructs (no compute)."""
  mfcc = jax.ShapeDtypeStruct((1, NUM_MFCC, AUDIO_WINDOW, 1), jnp.float32)
  frames = jax.ShapeDtypeStruct((1, LIP_FRAMES, LIP_SIZE, LIP_SIZE, 3), jnp.float32)
  return jax.eval_shape(
      lambda m, f: SyncNet(embed_dim).init(jax.random.PRNGKey(0), m, f), mfcc, frames)


# ----------------------------------------------------------------------------------------------
# Loading the released state dict.

_PREFIX = "__S__."  # keys of SyncNetInstance.state_dict(); the release itself has none


def convert_state_dict(sd: dict, embed_dim: int = EMBED_DIM) -> dict:
  """syncnet_python state dict (tensors or numpy) -> {'params', 'batch_stats'} for SyncNet.

  Raises convert.CheckpointMismatchError naming every missing, unexpected or mis-shaped key.
  """
  if sd and all(k.startswith(_PREFIX) for k in sd):
    sd = {k[len(_PREFIX):]: v for k, v in sd.items()}
  return torch_state.convert_state_dict(sd, expected_shapes(embed_dim),
                                        header="SyncNet state dict does not match")


def load_syncnet(path: str, embed_dim: int = EMBED_DIM) -> dict:
  """Reads syncnet_python's released weights (e.g. syncnet_v2.model) -> SyncNet variables.

  The file is a torch state dict with keys like `netcnnaud.0.weight` (an optional `__S__.`
  prefix, as in SyncNetInstance.state_dict(), is stripped), read with
  `convert.read_torch_checkpoint` (tensors only, never code). Fails loudly on a missing file and
  on missing / unexpected / mis-shaped keys.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"SyncNet weights not found: {path!r}. {WEIGHTS_HINT}.")
  sd = torch_state.read_torch_checkpoint(path)
  if not isinstance(sd, dict):
    raise torch_state.CheckpointMismatchError(
        f"{path}: expected a SyncNet state dict, got {type(sd).__name__}. {WEIGHTS_HINT}.")
  return convert_state_dict(sd, embed_dim)
