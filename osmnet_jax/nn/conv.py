"""`Conv`: a drop-in for `flax.linen.Conv` (stride 1, explicit padding) that avoids XLA:CPU's
slow paths on small feature maps.

Why (profile of the renderer train step, `benchmarks/profile_train_step.py`, 64 px, batch 8): the
perceptual pyramid's deep VGG convs run on 2x2 and 4x4 maps (VGG level 4-5 of the 1/4 and 1/2
scale images). A 3x3 'same' conv whose window covers the whole input is rewritten by XLA's
simplifier into a swapped-operand convolution (`dim_labels=01fb_o01i->f01b`) that XLA:CPU runs
far slower than the equivalent matmul, and those convs dominated the step (BENCHMARKS.md). As
an explicit im2col (9 shifted views concatenated on the
channel axis, [B*H*W, kh*kw*Cin] @ [kh*kw*Cin, Cout]) the same conv is a plain matmul, and its
gradients (dx: matmul + the transpose of the concatenation; dw: one matmul) are plain too.

On large maps XLA's own convolution is faster in the forward pass (the im2col copy is
kh*kw times the input), so the matmul path is taken only where H*W <= IM2COL_MAX_PIXELS
(64, i.e. up to 8x8: the crossover lies between 8x8 and 16x16, BENCHMARKS.md), and only
on the CPU backend by default: GPU/TPU convolution libraries have no such cliff.

On TPU the opposite problem: the MXU is 128 x 128 and activations are stored with the channel
axis in 128 lanes, so FOMM's 64-channel full-resolution layers fill half of each and its
3-channel ends (`first` 7x7 3->64, `final` 7x7 64->3, VGG's conv0) 3 of 128. There the narrow
convs run on *width-packed* maps: f adjacent pixels of a row folded into the channel axis
([B, H, W, C] -> [B, H, W/f, f*C], a reshape) and the kernel rearranged to match
([kh, kw', f*Cin, f*Cout], mostly zeros; `width_packed_conv`). The same function, with more
MXU work but far fuller tiles. The TPU compiler's cycle estimates for one conv, forward and both
gradients, 8 x 256 x 256 on v5e (benchmarks/tpu_conv_packing.py): 7x7 64->3 3.8x faster at f=4,
7x7 3->64 2.5x, 3x3 3->64 1.5x, 3x3 64->64 1.5x at f=2; 3x3 64->128 1.03x and 128->64 0.8x,
so the rule (`pack_factor`) packs only convs whose input and output both have <= 64 channels.
A single packed conv pays a relayout in and out; chains of layers that stay packed end to end
(`chain_pack_factor`: VGG's first block, the generator's full-resolution ends) do not, and win
even where a single conv would lose (forward-only programs: `chains_only()`).

Parameters are `kernel` [kh, kw, Cin, Cout] and `bias` [Cout] exactly as in `nn.Conv`, so
parameter trees, checkpoints and converters are unchanged; both paths compute the same function
(summation order differs: float32 round-off, checked in tests/test_conv.py).
"""

import contextlib
import contextvars
import os
from typing import Any, Callable, Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# Largest H*W for which the im2col path is taken ("auto" mode, CPU backend).
IM2COL_MAX_PIXELS = 64
# Output channels up to which a conv on a 65-128-channel input packs by 2 on TPU (`pack_factor`).
HEAD_MAX_COUT = 16

# The backend "auto" decides for. Normally the default backend; the AOT path (osmnet_jax.aot)
# traces on a CPU host for a TPU/GPU target and sets the target here, so the compiled program
# is the one that target would run.
_TARGET_BACKEND: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "conv_target_backend", default=None)


# What 'auto' may pack: "all" (default), "chains" (`chains_only()`: packed chains only, no
# single packed convs) or "none" (`no_packing()`: the AOT report lowers the plain program once to
# count the model's own FLOPs, as a packed kernel's zeros are MXU work, not model FLOPs).
_PACKING: contextvars.ContextVar[str] = contextvars.ContextVar("conv_packing", default="all")


_PACKING_ORDER = ("none", "chains", "all")


@contextlib.contextmanager
def _packing(mode: str) -> Iterator[None]:
  """Restricts 'auto' packing to `mode` inside the block; nested blocks keep the stricter one
  (a render call's `chains_only()` inside the AOT report's `no_packing()` packs nothing)."""
  token = _PACKING.set(min(mode, _PACKING.get(), key=_PACKING_ORDER.index))
  try:
    yield
  finally:
    _PACKING.reset(token)


def no_packing() -> contextlib.AbstractContextManager:
  """Trace every conv unpacked inside the block (`pack_factor` 'auto' returns 0)."""
  return _packing("none")


def chains_only() -> contextlib.AbstractContextManager:
  """Inside the block 'auto' packs only the chains kept packed end to end (`chain_pack_factor`),
  no single conv with a relayout in and out: the better program when nothing is differentiated
  (BENCHMARKS.md, "Width-packed narrow convolutions on TPU")."""
  return _packing("chains")


def traced_backend() -> str:
  """The platform traced for: `target_backend`'s, else the default backend."""
  return _TARGET_BACKEND.get() or jax.default_backend()


@contextlib.contextmanager
def target_backend(platform: str) -> Iterator[None]:
  """Trace as for `platform` ('cpu', 'tpu', 'cuda', 'gpu') inside the block: the conv packing
  and im2col choices here, the generator's packed chains, and the accelerator-only BatchNorm
  gradient (nn/batch_norm.py) and pools (losses/vgg.py).

  JAX's trace caches (jit, make_jaxpr) do not key on this context variable, so a function traced
  for the host would be reused inside the block (and a target trace after it): entering and
  leaving a block that changes the platform clears them (`jax.clear_caches`; later calls
  re-trace and recompile once)."""
  changed = platform != traced_backend()
  token = _TARGET_BACKEND.set(platform)
  if changed:
    jax.clear_caches()
  try:
    yield
  finally:
    _TARGET_BACKEND.reset(token)
    if changed:
      jax.clear_caches()


def im2col_conv(x: jax.Array, kernel: jax.Array, padding: Sequence[tuple[int, int]]) -> jax.Array:
  """Stride-1 cross-correlation as one matmul.

  Args:
    x: [B, H, W, Cin].
    kernel: [kh, kw, Cin, Cout].
    padding: ((top, bottom), (left, right)) zero padding.

  Returns:
    [B, Ho, Wo, Cout] with Ho = H + top + bottom - kh + 1 (and likewise Wo).
  """
  kh, kw, cin, cout = kernel.shape
  (pt, pb), (pl, pr) = padding
  xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  b, hp, wp, _ = xp.shape
  ho, wo = hp - kh + 1, wp - kw + 1
  # Channel order (i, j, c) matches kernel.reshape(kh * kw * cin, cout).
  cols = jnp.concatenate([xp[:, i:i + ho, j:j + wo] for i in range(kh) for j in range(kw)], -1)
  out = cols.reshape(b * ho * wo, kh * kw * cin) @ kernel.reshape(kh * kw * cin, cout)
  return out.reshape(b, ho, wo, cout)


def width_packed_conv(x: jax.Array, kernel: jax.Array, padding: Sequence[tuple[int, int]],
                      f: int) -> jax.Array:
  """Stride-1 'same-width' cross-correlation on maps with f pixels per packed column.

  x [B, H, W, Cin] -> [B, H, W/f, f*Cin] (pixel f*j + r of a row -> column j, channels
  r*Cin .. r*Cin + Cin - 1). Output pixel f*j + p reads input pixel f*j + p + t - left for tap t,
  i.e. packed column j + q at sub-pixel r with q = floor((p + t - left) / f), r = its remainder;
  the packed kernel [kh, qmax - qmin + 1, f*Cin, f*Cout] holds kernel[:, t] at (q - qmin, r, p)
  and zeros elsewhere (a constant 0/1 selection contracted with the kernel, so gradients flow to
  the real kernel). Needs W % f == 0 and left + right <= kw - 1. A padding that narrows the map
  (FOMM's padding-0 keypoint heads) is computed at the same width, the right side padded up to
  kw - 1 - left, and its extra columns cropped. Returns [B, Ho, Wo, Cout].
  """
  kh, kw, cin, cout = kernel.shape
  b, h, w, _ = x.shape
  (pl, pr) = padding[1]
  if w % f or pl + pr > kw - 1:
    raise ValueError(f"width packing by {f} needs W % f == 0 and a padding that does not widen "
                     f"the map; got W={w}, kernel width {kw}, padding {tuple(padding[1])}")
  wo = w + pl + pr - kw + 1
  same = (tuple(padding[0]), (pl, kw - 1 - pl))
  y = packed_conv(x.reshape(b, h, w // f, f * cin), kernel, same, f)
  return y.reshape(y.shape[0], y.shape[1], w, cout)[:, :, :wo]


def packed_conv(xp: jax.Array, kernel: jax.Array, padding: Sequence[tuple[int, int]],
                f: int) -> jax.Array:
  """`width_packed_conv` on maps that are already packed: [B, H, W/f, f*Cin] ->
  [B, Ho, W/f, f*Cout] (a chain of packed convs pays no reshape between them)."""
  kh, kw, cin, cout = kernel.shape
  (pt, pb), (pl, pr) = padding
  if pl + pr != kw - 1:
    raise ValueError(f"width packing needs a same-width padding; got {(pl, pr)} for width {kw}")
  qmin, qmax = (-pl) // f, (f - 1 + kw - 1 - pl) // f
  sel = np.zeros((kw, qmax - qmin + 1, f, f), np.float32)  # [tap t, packed tap q, r, p]
  for p in range(f):
    for t in range(kw):
      sel[t, (p + t - pl) // f - qmin, (p + t - pl) % f, p] = 1.0
  packed = jnp.einsum("tqrp,htio->hqripo", jnp.asarray(sel, kernel.dtype), kernel)
  packed = packed.reshape(kh, qmax - qmin + 1, f * cin, f * cout)
  return jax.lax.conv_general_dilated(xp, packed, (1, 1), ((pt, pb), (-qmin, qmax)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _auto_packs(chain: bool) -> bool:
  """'auto' packs on a TPU target, outside `no_packing()`, unless OSMNET_TPU_CONV_PACKING=0;
  a conv outside a packed chain not inside `chains_only()` or with =chains."""
  env, mode = os.environ.get("OSMNET_TPU_CONV_PACKING", "1"), _PACKING.get()
  if traced_backend() != "tpu" or mode == "none" or env == "0":
    return False
  return chain or (mode == "all" and env != "chains")


def pack_factor(impl: str, cin: int, cout: int, width: int, kw: int,
                padding: Sequence[tuple[int, int]], chain: bool = False) -> int:
  """Pixels per packed column for `width_packed_conv`, or 0 for the plain conv.

  'auto': on a TPU target only, for convs with <= 64 input and output channels: 4 when one side
  has <= 16 channels (the 3-channel ends), else 2 (64 -> 64); and by 2 for heads with at most
  `HEAD_MAX_COUT` outputs on up to 128 input channels (the dense-motion mask and occlusion heads,
  7x7 108 -> 11 and -> 1: the MXU passes one 128-row block per tap either way, so halving the
  rows halves the work); never when W is not a multiple, the padding widens the map, or it
  narrows it by more than W/8. 'packed' applies the same rule on any backend (tests).
  `chain`: the caller keeps the maps packed across several layers (VGG's first block).
  OSMNET_TPU_CONV_PACKING=0 in the environment, or a `no_packing()` block, turns 'auto'
  packing off (A/B comparisons; the AOT report's model-FLOP count); =chains keeps only the
  packed chains."""
  head = cout <= HEAD_MAX_COUT and cin <= 2 * 64  # a narrow-output head on a wider input
  if impl not in ("auto", "packed") or (max(cin, cout) > 64 and not head):
    return 0
  if impl == "auto" and not _auto_packs(chain):
    return 0
  f = 2 if cin > 64 else (4 if min(cin, cout) <= 16 else 2)
  (_, _), (pl, pr) = padding
  # A narrowing padding computes kw - 1 - pl - pr columns more and crops them: at most 1/8 of
  # the width (FOMM's 7x7 padding-0 keypoint heads at 64 px, not at the tiny configs' 16 px).
  extra = kw - 1 - pl - pr
  return f if width % f == 0 and 0 <= extra and 8 * extra <= width else 0


def chain_pack_factor(pack: str, width: int, channels: int = 64) -> int:
  """Pixels per packed column for a chain of layers kept width-packed end to end (0: unpacked).

  A chain (VGG's first block; the generator's full-resolution ends) packs once at its input and
  unpacks at a pooling or its output, so no relayout sits between its layers. Always f = 2:
  `channels` (the chain's narrow layers, <= 64) then fill up to 128 lanes. 'auto': on a TPU
  target, by `pack_factor`'s rule (OSMNET_TPU_CONV_PACKING=chains keeps chains);
  'on': on any backend (tests); 'off': never. Needs an even width and channels <= 64."""
  if pack not in ("auto", "on", "off"):
    raise ValueError(f"pack={pack!r}: use 'auto', 'on' or 'off'")
  if pack == "off" or width % 2 or channels > 64:
    return 0
  return 2 if pack == "on" or _auto_packs(chain=True) else 0


def use_im2col(impl: str, height: int, width: int) -> bool:
  """The path rule: 'xla' | 'im2col' force one; 'auto' = im2col for small maps on CPU."""
  if impl == "xla":
    return False
  if impl == "im2col":
    return True
  if impl == "packed":
    return False
  if impl != "auto":
    raise ValueError(f"conv impl must be 'auto', 'xla', 'im2col' or 'packed', got {impl!r}")
  return height * width <= IM2COL_MAX_PIXELS and traced_backend() == "cpu"


class Conv(nn.Module):
  """Stride-1, ungrouped 2-D conv with `nn.Conv`'s parameters; see the module docstring."""

  features: int
  kernel_size: Sequence[int]
  padding: Sequence[tuple[int, int]]
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros_init()
  impl: str = "auto"  # 'auto' | 'xla' | 'im2col' | 'packed'
  # > 0: x and the result are width-packed by this factor ([B, H, W/f, f*C], `packed_conv`);
  # the parameters are still the unpacked [kh, kw, Cin, Cout] kernel and [Cout] bias.
  packed_input: int = 0
  # False: the bias takes no gradient (stop_gradient). For a conv whose output feeds a
  # train-mode BatchNorm, where the bias cancels exactly (nn/blocks.py `_bias_grad`).
  bias_grad: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kh, kw = self.kernel_size
    if not (isinstance(self.padding, (tuple, list)) and len(self.padding) == 2):
      raise ValueError(f"Conv needs explicit ((top, bottom), (left, right)) padding, "
                       f"got {self.padding!r}")
    padding = tuple((int(a), int(b)) for a, b in self.padding)
    fin = max(self.packed_input, 1)
    kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1] // fin, self.features),
                        self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    if bias is not None and not self.bias_grad:
      bias = jax.lax.stop_gradient(bias)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    if self.packed_input:
      y = packed_conv(x, kernel, padding, fin)
      return y if bias is None else y + jnp.tile(bias, fin)  # channel r*Cout + c: bias[c]
    f = pack_factor(self.impl, x.shape[-1], self.features, x.shape[2], kw, padding)
    if use_im2col(self.impl, x.shape[1], x.shape[2]):
      y = im2col_conv(x, kernel, padding)
    elif f:
      y = width_packed_conv(x, kernel, padding, f)
    else:
      y = jax.lax.conv_general_dilated(x, kernel, (1, 1), padding,
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if bias is not None:
      y = y + bias
    return y
