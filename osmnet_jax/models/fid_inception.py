"""InceptionV3 as used by pytorch-fid (pool3, 2048-d), in Flax linen, with its weights loader.

    variables = load_fid_inception("pt_inception-2015-12-05-6726825d.pth")
    feats = FIDInceptionV3().apply(variables, preprocess(images_uint8))   # [N, 2048]

The weights are pytorch-fid's release (the TF `inception-2015-12-05` graph ported to PyTorch by
mseitzer; https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/
pt_inception-2015-12-05-6726825d.pth). Nothing here ships or downloads them: the user gives the
path. The network is torchvision's `Inception3` up to the global average pool, patched the way
pytorch-fid patches it:
  * BasicConv2d = conv (no bias) -> BatchNorm(eps=0.001) -> ReLU; eval mode (running stats);
  * Mixed_5b/5c/5d (FIDInceptionA), Mixed_6b..6e (FIDInceptionC) and Mixed_7b (FIDInceptionE_1)
    average-pool their pool branch with count_include_pad=False (TF semantics: padded zeros are
    not counted);
  * Mixed_7c (FIDInceptionE_2) max-pools its pool branch (3x3, stride 1, pad 1) instead;
  * Mixed_6a (InceptionB) and Mixed_7a (InceptionD) are torchvision's unchanged.
Flax submodule names are the PyTorch state-dict names (`Mixed_5b/branch1x1/conv/kernel` <->
`Mixed_5b.branch1x1.conv.weight`), so conversion is `convert.torch_state.convert_state_dict`'s
rename plus an OIHW -> HWIO transpose.

Parity traps (checked against a PyTorch mirror in tests/test_fid.py):
  1. Resize: pytorch-fid calls `F.interpolate(x, (299, 299), mode='bilinear',
     align_corners=False)` on [0, 1] images, *then* scales to [-1, 1]. That is half-pixel centres,
     source positions below 0 clamped to 0, and no anti-aliasing. `jax.image.resize(...,
     'bilinear')` also uses half-pixel centres and agrees when upscaling (its renormalised edge
     taps equal torch's clamping), but when downscaling it widens the triangle kernel by the
     scale factor (anti-aliasing, like torch's antialias=True), so it does NOT match for inputs
     larger than 299. `nn.grid_sample.resize_bilinear` (a gather of the torch formula) is used
     for both directions. An input already 299x299 passes through unchanged, as in torch.
  2. Pooling: `avg_pool(count_include_pad=False)` in the A/C/E_1 pool branches; max pooling pads
     with -inf (Flax's `max_pool` does, torch's implicit padding does too); the stride-2 max pools
     and stride-2 convs use floor (VALID) output sizes: 299 -> 149 -> 147 -> 73 -> 71 -> 35 ->
     17 -> 8.
  3. Asymmetric kernels (1x7 / 7x1 / 1x3 / 3x1) keep torch's per-axis explicit padding
     ((0, 3) / (3, 0) ...); Flax 'SAME' would be identical only for the odd stride-1 kernels and
     is avoided everywhere for clarity.
  4. Concatenation order of branches is the torch `cat(dim=1)` order on the NHWC channel axis:
     A: [1x1, 5x5, 3x3dbl, pool]; B: [3x3, 3x3dbl, pool]; C: [1x1, 7x7, 7x7dbl, pool];
     D: [3x3, 7x7x3, pool]; E: [1x1, 3x3_2a, 3x3_2b, 3x3dbl_3a, 3x3dbl_3b, pool].
  5. The release state dict also holds the 1008-way classifier `fc.weight` / `fc.bias` (unused
     for pool3 features; ignored explicitly) and, when re-saved by newer torch, BatchNorm
     `num_batches_tracked` counters (ignored). Anything else unexpected is an error.
"""
from __future__ import annotations

import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp

from osmnet_jax.convert import torch_state
from osmnet_jax.nn.grid_sample import resize_bilinear

FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   + FID_WEIGHTS_NAME)
INPUT_SIZE = 299
FEATURE_DIM = 2048


# ----------------------------------------------------------------------------------------------
# Network.


class BasicConv2d(nn.Module):
  """conv (no bias, explicit torch padding) -> BatchNorm(eps 1e-3, running stats) -> ReLU."""
  features: int
  kernel_size: tuple[int, int]
  stride: int = 1
  padding: tuple[int, int] = (0, 0)  # torch (pad_h, pad_w), symmetric per axis

  @nn.compact
  def __call__(self, x):
    ph, pw = self.padding
    x = nn.Conv(self.features, self.kernel_size, strides=(self.stride, self.stride),
                padding=((ph, ph), (pw, pw)), use_bias=False, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _conv(name, features, k, stride=1, pad=0):
  k = (k, k) if isinstance(k, int) else k
  pad = (pad, pad) if isinstance(pad, int) else pad
  return BasicConv2d(features, k, stride, pad, name=name)


def _avg_pool_3x3_s1(x):
  # FID patch: TF's average pool does not count the zero padding.
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=False)


def _max_pool_3x3_s2(x):
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class FIDInceptionA(nn.Module):
  """Mixed_5b/5c/5d: [N,35,35,C] -> [N,35,35,224 + pool_features]."""
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = _conv("branch1x1", 64, 1)(x)
    b5 = _conv("branch5x5_1", 48, 1)(x)
    b5 = _conv("branch5x5_2", 64, 5, pad=2)(b5)
    b3 = _conv("branch3x3dbl_1", 64, 1)(x)
    b3 = _conv("branch3x3dbl_2", 96, 3, pad=1)(b3)
    b3 = _conv("branch3x3dbl_3", 96, 3, pad=1)(b3)
    bp = _conv("branch_pool", self.pool_features, 1)(_avg_pool_3x3_s1(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Mixed_6a (torchvision's, unpatched): [N,35,35,288] -> [N,17,17,768]."""

  @nn.compact
  def __call__(self, x):
    b3 = _conv("branch3x3", 384, 3, stride=2)(x)
    bd = _conv("branch3x3dbl_1", 64, 1)(x)
    bd = _conv("branch3x3dbl_2", 96, 3, pad=1)(bd)
    bd = _conv("branch3x3dbl_3", 96, 3, stride=2)(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class FIDInceptionC(nn.Module):
  """Mixed_6b..6e: [N,17,17,768] -> [N,17,17,768]."""
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    b1 = _conv("branch1x1", 192, 1)(x)
    b7 = _conv("branch7x7_1", c7, 1)(x)
    b7 = _conv("branch7x7_2", c7, (1, 7), pad=(0, 3))(b7)
    b7 = _conv("branch7x7_3", 192, (7, 1), pad=(3, 0))(b7)
    bd = _conv("branch7x7dbl_1", c7, 1)(x)
    bd = _conv("branch7x7dbl_2", c7, (7, 1), pad=(3, 0))(bd)
    bd = _conv("branch7x7dbl_3", c7, (1, 7), pad=(0, 3))(bd)
    bd = _conv("branch7x7dbl_4", c7, (7, 1), pad=(3, 0))(bd)
    bd = _conv("branch7x7dbl_5", 192, (1, 7), pad=(0, 3))(bd)
    bp = _conv("branch_pool", 192, 1)(_avg_pool_3x3_s1(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Mixed_7a (torchvision's, unpatched): [N,17,17,768] -> [N,8,8,1280]."""

  @nn.compact
  def __call__(self, x):
    b3 = _conv("branch3x3_1", 192, 1)(x)
    b3 = _conv("branch3x3_2", 320, 3, stride=2)(b3)
    b7 = _conv("branch7x7x3_1", 192, 1)(x)
    b7 = _conv("branch7x7x3_2", 192, (1, 7), pad=(0, 3))(b7)
    b7 = _conv("branch7x7x3_3", 192, (7, 1), pad=(3, 0))(b7)
    b7 = _conv("branch7x7x3_4", 192, 3, stride=2)(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class FIDInceptionE(nn.Module):
  """Mixed_7b (pool='avg', FIDInceptionE_1) / Mixed_7c (pool='max', FIDInceptionE_2):
  [N,8,8,C] -> [N,8,8,2048]."""
  pool: str

  @nn.compact
  def __call__(self, x):
    b1 = _conv("branch1x1", 320, 1)(x)
    b3 = _conv("branch3x3_1", 384, 1)(x)
    b3 = [_conv("branch3x3_2a", 384, (1, 3), pad=(0, 1))(b3),
          _conv("branch3x3_2b", 384, (3, 1), pad=(1, 0))(b3)]
    bd = _conv("branch3x3dbl_1", 448, 1)(x)
    bd = _conv("branch3x3dbl_2", 384, 3, pad=1)(bd)
    bd = [_conv("branch3x3dbl_3a", 384, (1, 3), pad=(0, 1))(bd),
          _conv("branch3x3dbl_3b", 384, (3, 1), pad=(1, 0))(bd)]
    if self.pool == "avg":
      pooled = _avg_pool_3x3_s1(x)
    elif self.pool == "max":
      # FID patch (likely a bug in the TF graph, kept for comparability): max, not average.
      pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
    else:
      raise ValueError(f"pool must be 'avg' or 'max', got {self.pool!r}")
    bp = _conv("branch_pool", 192, 1)(pooled)
    return jnp.concatenate([b1, *b3, *bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
  """[N,H,W,3] in [-1, 1] (H = W = 299 for FID; any H, W >= 75 runs) -> pool3 [N, 2048]."""

  @nn.compact
  def __call__(self, x):
    x = _conv("Conv2d_1a_3x3", 32, 3, stride=2)(x)  # [N,149,149,32]
    x = _conv("Conv2d_2a_3x3", 32, 3)(x)  # [N,147,147,32]
    x = _conv("Conv2d_2b_3x3", 64, 3, pad=1)(x)  # [N,147,147,64]
    x = _max_pool_3x3_s2(x)  # [N,73,73,64]
    x = _conv("Conv2d_3b_1x1", 80, 1)(x)  # [N,73,73,80]
    x = _conv("Conv2d_4a_3x3", 192, 3)(x)  # [N,71,71,192]
    x = _max_pool_3x3_s2(x)  # [N,35,35,192]
    x = FIDInceptionA(32, name="Mixed_5b")(x)  # [N,35,35,256]
    x = FIDInceptionA(64, name="Mixed_5c")(x)  # [N,35,35,288]
    x = FIDInceptionA(64, name="Mixed_5d")(x)  # [N,35,35,288]
    x = InceptionB(name="Mixed_6a")(x)  # [N,17,17,768]
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = FIDInceptionC(c7, name=name)(x)  # [N,17,17,768]
    x = InceptionD(name="Mixed_7a")(x)  # [N,8,8,1280]
    x = FIDInceptionE("avg", name="Mixed_7b")(x)  # [N,8,8,2048]
    x = FIDInceptionE("max", name="Mixed_7c")(x)  # [N,8,8,2048]
    return jnp.mean(x, axis=(1, 2))  # AdaptiveAvgPool2d(1) + flatten: [N, 2048]


def preprocess(images: jax.Array) -> jax.Array:
  """uint8 [N,H,W,3] -> float32 [N,299,299,3] in [-1, 1], in pytorch-fid's order: /255
  (ToTensor), bilinear resize without anti-aliasing (trap 1), then 2x - 1."""
  x = images.astype(jnp.float32) / 255.0
  x = resize_bilinear(x, (INPUT_SIZE, INPUT_SIZE))
  return 2.0 * x - 1.0


# ----------------------------------------------------------------------------------------------
# Loader.

# Keys of the release file that pool3 features do not use (the 1008-way ImageNet classifier).
IGNORED_KEYS = frozenset({"fc.weight", "fc.bias"})


@functools.lru_cache(maxsize=1)
def expected_shapes() -> dict:
  """{'params', 'batch_stats'} of FIDInceptionV3 as ShapeDtypeStructs (shapes only, no compile)."""
  # Parameter shapes do not depend on the spatial size; 75 is the smallest input that runs.
  return jax.eval_shape(FIDInceptionV3().init, jax.random.PRNGKey(0),
                        jax.ShapeDtypeStruct((1, 75, 75, 3), jnp.float32))


def convert_state_dict(sd) -> dict:
  """pytorch-fid Inception state dict ({name: tensor or array}) -> {'params', 'batch_stats'}.

  Raises convert.CheckpointMismatchError naming every missing, unexpected or mis-shaped key.
  """
  # Module names such as `branch7x7_1` are attribute names, not list indices: no index split.
  name_fn = functools.partial(torch_state.torch_key, split_indices=False)
  return torch_state.convert_state_dict(sd, expected_shapes(),
                                        header="FID Inception weights do not match",
                                        name_fn=name_fn, skip=IGNORED_KEYS)


def load_fid_inception(path: str) -> dict:
  """Reads pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` into Flax variables."""
  if not path or not os.path.isfile(path):
    raise FileNotFoundError(
        f"FID Inception weights not found at {path!r}. Download {FID_WEIGHTS_NAME} (pytorch-fid's "
        f"release, {FID_WEIGHTS_URL}) and pass its path.")
  sd = torch_state.read_torch_checkpoint(path)
  if not isinstance(sd, dict):
    raise torch_state.CheckpointMismatchError(
        f"{path}: expected a state dict (name -> tensor) as in {FID_WEIGHTS_NAME}, "
        f"got {type(sd).__name__}")
  return convert_state_dict(sd)
