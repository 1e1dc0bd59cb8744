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

Parameters are `kernel` [kh, kw, Cin, Cout] and `bias` [Cout] exactly as in `nn.Conv`, so
parameter trees, checkpoints and converters are unchanged; both paths compute the same function
(summation order differs: float32 round-off, checked in tests/test_conv.py).
"""

import contextlib
import contextvars
from typing import Any, Callable, Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# Largest H*W for which the im2col path is taken ("auto" mode, CPU backend).
IM2COL_MAX_PIXELS = 64

# The backend "auto" decides for. Normally the default backend; the AOT path (osmnet_jax.aot)
# traces on a CPU host for a TPU/GPU target and sets the target here, so the compiled program
# is the one that target would run.
_TARGET_BACKEND: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "conv_target_backend", default=None)


@contextlib.contextmanager
def target_backend(platform: str) -> Iterator[None]:
  """Trace convs as for `platform` ('cpu', 'tpu', 'cuda', 'gpu') inside the block."""
  token = _TARGET_BACKEND.set(platform)
  try:
    yield
  finally:
    _TARGET_BACKEND.reset(token)


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


def use_im2col(impl: str, height: int, width: int) -> bool:
  """The path rule: 'xla' | 'im2col' force one; 'auto' = im2col for small maps on CPU."""
  if impl == "xla":
    return False
  if impl == "im2col":
    return True
  if impl != "auto":
    raise ValueError(f"conv impl must be 'auto', 'xla' or 'im2col', got {impl!r}")
  backend = _TARGET_BACKEND.get() or jax.default_backend()
  return height * width <= IM2COL_MAX_PIXELS and backend == "cpu"


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
  impl: str = "auto"  # 'auto' | 'xla' | 'im2col'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kh, kw = self.kernel_size
    if not (isinstance(self.padding, (tuple, list)) and len(self.padding) == 2):
      raise ValueError(f"Conv needs explicit ((top, bottom), (left, right)) padding, "
                       f"got {self.padding!r}")
    padding = tuple((int(a), int(b)) for a, b in self.padding)
    kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features),
                        self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    if use_im2col(self.impl, x.shape[1], x.shape[2]):
      y = im2col_conv(x, kernel, padding)
    else:
      y = jax.lax.conv_general_dilated(x, kernel, (1, 1), padding,
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if bias is not None:
      y = y + bias
    return y
