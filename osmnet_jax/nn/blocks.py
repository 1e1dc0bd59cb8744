"""FOMM building blocks in Flax linen, channels-last (NHWC).

Submodule names mirror the PyTorch attribute names of the public First Order Motion Model
(`conv`, `norm`, `conv1`, `norm2`, `down_blocks_0`, ...): a torch key `encoder.down_blocks.0.conv.
weight` is the Flax path `encoder/down_blocks_0/conv/kernel` (see `osmnet_jax.convert.fomm`).

Every conv uses explicit symmetric padding equal to torch's `padding=p` (Flax 'SAME' differs for
even kernels and when the torch module pads by less than k // 2, e.g. FOMM's padding-0 heads).

Mixed precision: `dtype` is the compute dtype of the convs and of the activations between blocks
(None = follow the inputs and the float32 params, i.e. plain float32; jnp.bfloat16 for bf16
compute). Parameters are always created in float32 (`param_dtype`), the master copy the optimizer
updates; BatchNorm keeps its statistics in float32 (see batch_norm.py).

Rematerialisation: `remat=True` wraps each Encoder/Decoder block in `nn.remat`, so the backward
pass recomputes the block's convs/norms from its input instead of keeping them in memory. The
lifted module keeps the name it is given, so the parameter tree is unchanged.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from osmnet_jax.nn.batch_norm import BatchNorm, closed_form_default
from osmnet_jax.nn.conv import Conv

# torch's default Conv2d init: kaiming_uniform(a=sqrt(5)) == U(+-1/sqrt(fan_in)).
torch_conv_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def conv(features: int, kernel: int, padding: int, name: str, **kw) -> Conv:
  """`nn.Conv2d(in, features, kernel, padding=padding)` as a Flax conv (`nn.Conv`'s params).

  `Conv` (nn/conv.py) takes XLA:CPU's fast path on small feature maps; same parameters.
  """
  return Conv(
      features,
      (kernel, kernel),
      padding=((padding, padding), (padding, padding)),
      kernel_init=torch_conv_init,
      name=name,
      **kw,
  )


def _bias_grad(train: bool) -> bool:
  """`bias_grad` of a conv whose output goes straight into BatchNorm.

  In train mode the norm subtracts the batch mean, which moves with the conv's bias, so the output
  and every loss are independent of that bias: its exact gradient is zero. Autodiff still reduces
  the whole map for it (sum(dx) of the norm: rounding noise around zero), a full-resolution
  reduction per block. On accelerator targets, where BatchNorm takes its closed-form gradient
  (nn/batch_norm.py), the bias is held out of the gradient instead: Adam then leaves it where it
  is, where PyTorch's Adam moves it by the normalised rounding noise, which changes neither the
  train-mode output nor, through the running mean that tracks it, the eval output. The CPU keeps
  autodiff, so the CPU programs and the FOMM parity tests are unchanged. Measured:
  BENCHMARKS.md "Conv biases ahead of BatchNorm, one-pass statistics, ..."."""
  return not (train and closed_form_default())


def upsample_nearest2x(x: jax.Array) -> jax.Array:
  """`F.interpolate(x, scale_factor=2)` (mode 'nearest'): [B,H,W,C] -> [B,2H,2W,C]."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def upsample_nearest2x_packed(x: jax.Array, f: int) -> jax.Array:
  """`upsample_nearest2x` with a width-packed result (f even, nn/conv.py): [B,h,w,C] ->
  [B,2h,2w/f,f*C]. Output pixel f*j + r reads input pixel (f/2)*j + r//2, so for f = 2 a packed
  column is its input pixel twice along the channel axis: no relayout of the wide map."""
  b, h, w, c = x.shape
  g = f // 2
  if f % 2 or w % g:
    raise ValueError(f"packed upsampling by f={f} needs an even f and width % (f/2) == 0, "
                     f"got width {w}")
  x = jnp.repeat(x, 2, axis=1).reshape(b, 2 * h, w // g, g * c)  # packed by f/2
  return jnp.concatenate([x[..., r * c:(r + 1) * c] for r in range(g) for _ in range(2)], -1)


def antialias_kernel(scale: float) -> tuple[np.ndarray, int, int, int]:
  """FOMM's AntiAliasInterpolation2d Gaussian kernel for a downscale factor `scale` (< 1).

  sigma = (1/scale - 1) / 2, kernel size 2 * round(4 sigma) + 1 (always odd in practice; the even
  case pads (ka, ka - 1) as FOMM does). Returns (kernel [k, k] float32 summing to 1, ka, kb,
  integer stride 1/scale).
  """
  sigma = (1.0 / scale - 1.0) / 2.0
  size = 2 * round(sigma * 4) + 1
  ka = size // 2
  kb = ka - 1 if size % 2 == 0 else ka
  # Computed in float32 like torch (meshgrid of float32 aranges).
  grid = np.arange(size, dtype=np.float32)
  mean = (size - 1) / 2
  g = np.exp(-((grid - mean) ** 2) / np.float32(2 * sigma**2)).astype(np.float32)
  kernel = (g[:, None] * g[None, :]).astype(np.float32)
  kernel = kernel / kernel.sum()
  return kernel.astype(np.float32), ka, kb, int(1.0 / scale)


def antialias_matrix(size: int, scale: float) -> np.ndarray:
  """One axis of AntiAliasInterpolation2d as a matrix: [size_out, size] (float32).

  FOMM's kernel is an outer product of one normalised 1-D Gaussian g with itself, so "zero-pad
  (ka, kb), convolve with g x g, keep every s-th pixel" is A_h @ X @ A_w^T with
  A[o, h] = g[h - o * s + ka] (0 <= h - o * s + ka < k).
  """
  kernel, ka, kb, stride = antialias_kernel(scale)
  # kernel = outer(g, g) / sum(g)^2, so each factor is g / sum(g); the row sums in float64 give it
  # to float32 round-off (max |outer(g1, g1) - kernel| ~ 1e-9).
  g = kernel.astype(np.float64).sum(axis=1)
  k = g.shape[0]
  out = (size + ka + kb - k) // stride + 1
  a = np.zeros((out, size), np.float32)
  for o in range(out):
    for t in range(k):
      h = o * stride - ka + t
      if 0 <= h < size:
        a[o, h] = g[t]
  return a


class AntiAliasInterpolation2d(nn.Module):
  """Gaussian blur then pick every (1/scale)-th pixel; no learned parameters.

  FOMM convolves at full resolution and then slices `[::s, ::s]`; only those outputs are
  computed here. The Gaussian is separable, so the blur-and-pick is two small matmuls with
  `antialias_matrix` (rows, then columns): XLA:CPU ran the depthwise 13x13 conv's transpose (the
  gradient of the prediction's image pyramid) as a slow lhs-dilated conv
  (benchmarks/profile_train_step.py); as matmuls both directions are cheap on every backend. (FOMM's
  nearest `F.interpolate` by `scale` variant picks the same pixels.) Torch stores the
  kernel as a buffer `down.weight` [C,1,k,k]; the converter checks it against
  `antialias_kernel` and drops it.
  """

  scale: float

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, H, W, C] -> [B, ~H*scale, ~W*scale, C]."""
    if self.scale == 1.0:
      return x
    ah = jnp.asarray(antialias_matrix(x.shape[1], self.scale), x.dtype)  # [Ho, H]
    aw = jnp.asarray(antialias_matrix(x.shape[2], self.scale), x.dtype)  # [Wo, W]
    hi = jax.lax.Precision.HIGHEST
    y = jnp.einsum("oh,bhwc->bowc", ah, x, precision=hi)
    return jnp.einsum("pw,bowc->bopc", aw, y, precision=hi)


class ResBlock2d(nn.Module):
  """Pre-activation residual block: BN-ReLU-conv-BN-ReLU-conv + identity."""

  kernel_size: int = 3
  padding: int = 1
  train: bool = False
  bn_axis_name: Any = None
  dtype: Any = None  # compute dtype (None: float32 as the params)

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]

    def bn(name):
      return BatchNorm(not self.train, axis_name=self.bn_axis_name, name=name)

    out = nn.relu(bn("norm1")(x))
    out = conv(c, self.kernel_size, self.padding, "conv1", dtype=self.dtype,
               bias_grad=_bias_grad(self.train))(out)  # norm2 follows
    out = nn.relu(bn("norm2")(out))
    out = conv(c, self.kernel_size, self.padding, "conv2", dtype=self.dtype)(out)
    return out + x


# Row (and column) taps of a 3x3 kernel seen by output phase a of a nearest-2x upsampling:
# output row 2i+a reads upsampled rows 2i+a-1 .. 2i+a+1 = input rows i-1, i, i (a = 0) or
# i, i, i+1 (a = 1). _PHASE_TAPS[a, new, old]: the 3x3 tap `old` lands on input offset new - 1.
_PHASE_TAPS = np.array([[[1, 0, 0], [0, 1, 1], [0, 0, 0]],
                        [[0, 0, 0], [1, 1, 0], [0, 0, 1]]], np.float32)


class SubpixelUpConv(nn.Module):
  """conv3x3(upsample_nearest2x(x)) computed on the low-resolution map, with `Conv`'s parameters.

  Each of the four output phases (a, b) (row and column parity) is a 3x3 conv of x whose taps are
  sums of the kernel's (`_PHASE_TAPS`); the four are one conv [3, 3, Cin, 4*Cout] followed by a
  depth-to-space. Same FLOPs as the upsample-then-conv, but the upsampled map is never written,
  the gradient needs no 4-to-1 reduction of it, and 4*Cout output lanes fill the MXU where Cout
  (64 at 256 px) fills half. `packed=2`: the result is width-packed by 2 ([B, 2h, w, 2*Cout],
  nn/conv.py), whose channel halves are exactly the column phases b."""

  features: int
  dtype: Any = None
  packed: int = 0
  bias_grad: bool = True
  # True: return the four phases side by side, [B, h, w, 4*Cout] with channel (a, b, c), and
  # leave the depth-to-space (`depth_to_space`) to the caller (UpBlock2d, below).
  phase_layout: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.packed not in (0, 2):
      raise ValueError(f"SubpixelUpConv packs by 2 or not at all, got packed={self.packed}")
    b, h, w, cin = x.shape
    c = self.features
    kernel = self.param("kernel", torch_conv_init, (3, 3, cin, c), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros_init(), (c,), jnp.float32)
    if not self.bias_grad:
      bias = jax.lax.stop_gradient(bias)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    taps = jnp.asarray(_PHASE_TAPS, kernel.dtype)
    phases = jnp.einsum("aph,bqw,hwio->pqioab", taps, taps, kernel)  # [3, 3, Cin, Cout, 2, 2]
    phases = jnp.moveaxis(phases, 3, 5).reshape(3, 3, cin, 4 * c)  # channel (a, b, c)
    y = jax.lax.conv_general_dilated(x, phases, (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if self.phase_layout:
      return y + jnp.tile(bias, 4)
    return depth_to_space(y + jnp.tile(bias, 4), self.packed)


def depth_to_space(y: jax.Array, packed: int) -> jax.Array:
  """`SubpixelUpConv`'s phases [B, h, w, 4*C] (channel (a, b, c)) -> the upsampled map
  [B, 2h, 2w, C], or width-packed by 2 ([B, 2h, w, 2*C], packed=2: the column phases b are the
  packed pixel pairs, so only the rows interleave)."""
  b, h, w, c4 = y.shape
  c = c4 // 4
  y = jnp.swapaxes(y.reshape(b, h, w, 2, 2 * c), 2, 3).reshape(b, 2 * h, w, 2 * c)
  return y if packed else y.reshape(b, 2 * h, 2 * w, c)


# The sub-pixel form pays in weights (a 4x wider kernel, and its gradient) what it saves on the
# upsampled map: it wins on large maps with few channels (the generator's up blocks at vox256),
# loses on the hourglasses' small maps with up to 1024 channels (BENCHMARKS.md "Conv biases
# ahead of BatchNorm, one-pass statistics, sub-pixel up blocks, ..."). Input maps of at least
# this many pixels take it: since the norm runs on the phases, the hourglasses' last up blocks
# (32 x 32 inputs) gain too (BENCHMARKS.md "BatchNorm, ReLU and pooling in one pass").
SUBPIXEL_MIN_PIXELS = 32 * 32


def _subpixel_default(kernel_size: int, padding: int, packed: int, pixels: int) -> bool:
  """UpBlock2d computes its upsample + conv as `SubpixelUpConv` on accelerator targets (3x3,
  padding 1, packed by 0 or 2, an input map of >= SUBPIXEL_MIN_PIXELS); the CPU keeps FOMM's
  formulation (the parity tests' program)."""
  return ((kernel_size, padding) == (3, 1) and packed in (0, 2)
          and pixels >= SUBPIXEL_MIN_PIXELS and closed_form_default())


class UpBlock2d(nn.Module):
  """Nearest x2 upsample -> conv -> BN -> ReLU. `packed=f`: the input is plain, the upsampled
  map and the output are width-packed by f ([B,2h,2w/f,f*C], nn/conv.py). `subpixel`: the
  upsample + conv as `SubpixelUpConv` (same parameters and function; None: on accelerator
  targets, `_subpixel_default`)."""

  features: int
  kernel_size: int = 3
  padding: int = 1
  train: bool = False
  bn_axis_name: Any = None
  dtype: Any = None
  packed: int = 0
  subpixel: bool | None = None

  @nn.compact
  def __call__(self, x):
    f = self.packed
    sub = self.subpixel
    if sub is None:
      sub = _subpixel_default(self.kernel_size, self.padding, f, x.shape[1] * x.shape[2])
    if sub:
      if (self.kernel_size, self.padding) != (3, 1):
        raise ValueError("UpBlock2d(subpixel=True) needs kernel_size 3 and padding 1")
      # BatchNorm and ReLU run on the phases (a BatchNorm over [B,h,w,4C] folds its 4C lanes to
      # C channels as on a map packed by 4: the same statistics), and the depth-to-space comes
      # last. Normalising after it made the gradient's space-to-depth a layout copy of the whole
      # map ahead of the conv's gradient (BENCHMARKS.md "BatchNorm, ReLU and pooling in one
      # pass").
      out = SubpixelUpConv(self.features, self.dtype, f, name="conv",
                           bias_grad=_bias_grad(self.train), phase_layout=True)(x)
      out = BatchNorm(not self.train, axis_name=self.bn_axis_name, packed=4, name="norm")(out)
      return depth_to_space(nn.relu(out), f)
    out = upsample_nearest2x_packed(x, f) if f else upsample_nearest2x(x)
    out = conv(self.features, self.kernel_size, self.padding, "conv", dtype=self.dtype,
               packed_input=f, bias_grad=_bias_grad(self.train))(out)
    out = BatchNorm(not self.train, axis_name=self.bn_axis_name, packed=f, name="norm")(out)
    return nn.relu(out)


class DownBlock2d(nn.Module):
  """conv -> BN -> ReLU -> 2x2 average pool. `packed=f`: the input is width-packed by f, the
  output by f/2 (f = 2: plain), see `nn/pool.avg_pool2x_packed`."""

  features: int
  kernel_size: int = 3
  padding: int = 1
  train: bool = False
  bn_axis_name: Any = None
  dtype: Any = None
  packed: int = 0

  @nn.compact
  def __call__(self, x):
    f = self.packed
    out = conv(self.features, self.kernel_size, self.padding, "conv", dtype=self.dtype,
               packed_input=f, bias_grad=_bias_grad(self.train))(x)
    # The norm returns pool(relu(norm(out))): on accelerators one fused pass (nn/batch_norm.py).
    return BatchNorm(not self.train, axis_name=self.bn_axis_name, packed=f, relu_pool=True,
                     name="norm")(out)


class SameBlock2d(nn.Module):
  """conv -> BN -> ReLU at constant resolution. `packed=f`: input and output width-packed by f."""

  features: int
  kernel_size: int = 3
  padding: int = 1
  train: bool = False
  bn_axis_name: Any = None
  dtype: Any = None
  packed: int = 0

  @nn.compact
  def __call__(self, x):
    out = conv(self.features, self.kernel_size, self.padding, "conv", dtype=self.dtype,
               packed_input=self.packed, bias_grad=_bias_grad(self.train))(x)
    out = BatchNorm(not self.train, axis_name=self.bn_axis_name, packed=self.packed,
                    name="norm")(out)
    return nn.relu(out)


def hourglass_channels(block_expansion: int, max_features: int, i: int) -> int:
  """min(max_features, block_expansion * 2**i): FOMM's channel rule."""
  return min(max_features, block_expansion * (2**i))


class Encoder(nn.Module):
  """num_blocks DownBlock2d; returns [input, d0, d1, ...] for the skip connections."""

  block_expansion: int
  num_blocks: int = 3
  max_features: int = 256
  train: bool = False
  bn_axis_name: Any = None
  dtype: Any = None
  remat: bool = False

  @nn.compact
  def __call__(self, x) -> list[jax.Array]:
    # nn.remat(cls) is a lifted class; name= keeps the path 'down_blocks_i/conv/kernel'.
    block = nn.remat(DownBlock2d) if self.remat else DownBlock2d
    outs = [x]
    for i in range(self.num_blocks):
      f = hourglass_channels(self.block_expansion, self.max_features, i + 1)
      outs.append(
          block(f, 3, 1, self.train, self.bn_axis_name, self.dtype, name=f"down_blocks_{i}")(
              outs[-1]
          )
      )
    return outs


class Decoder(nn.Module):
  """num_blocks UpBlock2d, each output concatenated (channels last) with the matching skip.

  Output channels: block_expansion + input channels of the encoder.
  """

  block_expansion: int
  num_blocks: int = 3
  max_features: int = 256
  train: bool = False
  bn_axis_name: Any = None
  dtype: Any = None
  remat: bool = False

  @nn.compact
  def __call__(self, feats: Sequence[jax.Array]) -> jax.Array:
    block = nn.remat(UpBlock2d) if self.remat else UpBlock2d
    feats = list(feats)
    out = feats.pop()
    for j, i in enumerate(reversed(range(self.num_blocks))):
      f = hourglass_channels(self.block_expansion, self.max_features, i)
      out = block(f, 3, 1, self.train, self.bn_axis_name, self.dtype, name=f"up_blocks_{j}")(out)
      skip = feats.pop()
      out = jnp.concatenate([out, skip], axis=-1)  # torch.cat([out, skip], dim=1)
    return out


class Hourglass(nn.Module):
  """U-Net style Encoder + Decoder ('encoder', 'decoder' as in FOMM)."""

  block_expansion: int
  num_blocks: int = 3
  max_features: int = 256
  train: bool = False
  bn_axis_name: Any = None
  dtype: Any = None
  remat: bool = False

  @nn.compact
  def __call__(self, x):
    if self.dtype is not None:
      # The input becomes the decoder's last skip: cast it so the concatenated output
      # [B,h,w,block_expansion+C] stays in the compute dtype instead of promoting to float32.
      x = x.astype(self.dtype)
    args = (self.block_expansion, self.num_blocks, self.max_features, self.train,
            self.bn_axis_name, self.dtype, self.remat)
    return Decoder(*args, name="decoder")(Encoder(*args, name="encoder")(x))
