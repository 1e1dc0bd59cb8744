"""FOMM occlusion-aware generator, channels-last.

source [B,H,W,C] -> 'first' 7x7 SameBlock -> down blocks -> warp features by the dense flow
(bilinearly resized to the feature size if needed) -> multiply by the occlusion map (bilinearly
resized if needed, as torch `F.interpolate(..., mode='bilinear')`, align_corners=False) ->
'bottleneck' residual blocks -> up blocks -> 'final' 7x7 conv -> sigmoid.

``output_blend="occlusion"`` ([ours], off in the FOMM configs): the prediction becomes
occ * deformed + (1 - occ) * decoded, with the occlusion map resized to the image and the source
warped at full resolution by ``deform_pixels`` (identity flow = identity warp). FOMM has no
skip path from the warped source pixels to the output, so a small or briefly trained decoder
returns a blurred face; the blend lets visible regions come straight from the warped source and
leaves the decoder the occluded ones. It adds no parameters (FOMM checkpoints load unchanged).

On a TPU target (``pack="auto"``) the two full-resolution ends run width-packed end to end
(nn/conv.py): the image is folded to [B,H,W/2,2C] once; 'first' (conv, BatchNorm, ReLU) and
down_blocks_0's conv reads and writes packed maps, and its BatchNorm, ReLU and pooling (one
fused pass on accelerators, nn/batch_norm.py) add the packed pixel pairs, which unpacks; on the
way up, the last up block writes a map packed by 2: as a sub-pixel conv (input maps of at
least nn/blocks.SUBPIXEL_MIN_PIXELS, nn/blocks.SubpixelUpConv) its phases' column pairs are
packed pixel pairs and, after its BatchNorm and ReLU, the rows interleave; otherwise its nearest
upsampling writes each pixel twice along the channel axis and its conv, BatchNorm and ReLU run
packed. 'final' (4
pixels per column) stays packed until the logits are unfolded to [B,H,W,C]. Then FOMM's
64-channel maps fill the TPU's 128 lanes, with no relayout between layers. The same function
with the same parameters; CPU and GPU programs are unchanged (tests/test_conv.py checks the
packed generator against the plain one).
"""

from typing import Any

import flax.linen as nn
import jax

from osmnet_jax.models.dense_motion import DenseMotionNetwork
from osmnet_jax.nn import conv as conv_lib
from osmnet_jax.nn.blocks import DownBlock2d, ResBlock2d, SameBlock2d, UpBlock2d, conv
from osmnet_jax.nn.grid_sample import grid_sample, pixel_centre_grid, resize_bilinear
from osmnet_jax.nn.keypoints import make_coordinate_grid


def deform_input(x: jax.Array, deformation: jax.Array) -> jax.Array:
  """Warps x [B,H,W,C] with a flow [B,h,w,2] resized bilinearly to (H, W) when needed."""
  _, h, w, _ = x.shape
  if deformation.shape[1:3] != (h, w):
    deformation = resize_bilinear(deformation, (h, w))
  return grid_sample(x, deformation)


def deform_pixels(x: jax.Array, deformation: jax.Array) -> jax.Array:
  """Warps x [B,H,W,C] with a low-resolution flow [B,h,w,2] by upsampling its displacement.

  FOMM's flow holds absolute coordinates on its own (h, w) grid, x = 2 j / (w - 1) - 1; resized
  to (H, W) and sampled with align_corners=False, even the identity flow shrinks the image by
  about 1/h per side (6 % at h = 16) and blackens its border. Here the displacement (flow minus
  that grid) is upsampled and added to the (H, W) pixel-centre grid, so the identity flow is the
  identity warp. Used by output_blend only: FOMM's own warps stay as they are (parity).
  """
  _, h, w, _ = x.shape
  dh, dw = deformation.shape[1:3]
  disp = deformation - make_coordinate_grid(dh, dw, deformation.dtype)[None]
  if (dh, dw) != (h, w):
    disp = resize_bilinear(disp, (h, w))
  return grid_sample(x, pixel_centre_grid(h, w, disp.dtype)[None] + disp)


class Bottleneck(nn.Module):
  """torch.nn.Sequential of ResBlock2d named 'r0', 'r1', ..."""

  num_blocks: int
  train: bool = False
  bn_axis_name: Any = None
  dtype: Any = None

  @nn.compact
  def __call__(self, x):
    for i in range(self.num_blocks):
      x = ResBlock2d(3, 1, self.train, self.bn_axis_name, self.dtype, name=f"r{i}")(x)
    return x


class OcclusionAwareGenerator(nn.Module):
  """Submodules 'dense_motion_network', 'first', 'down_blocks_i', 'bottleneck', 'up_blocks_i',
  'final' (FOMM attribute names)."""

  num_channels: int = 3
  num_kp: int = 10
  block_expansion: int = 64
  max_features: int = 512
  num_down_blocks: int = 2
  num_bottleneck_blocks: int = 6
  estimate_occlusion_map: bool = True
  output_blend: str = "none"  # "none" (FOMM) | "occlusion" (see the module docstring)
  dense_motion_params: Any = None  # dict(block_expansion, num_blocks, max_features, scale_factor)
  train: bool = False
  bn_axis_name: Any = None
  # Mixed precision: the blocks compute in `dtype` (None: float32); the warps (grid_sample
  # coordinates), the 'final' conv and the sigmoid stay float32 so the prediction that the
  # losses see is float32. `remat` applies to the dense motion network's hourglass.
  dtype: Any = None
  remat: bool = False
  # 'auto' | 'on' | 'off': the full-resolution ends width-packed (module docstring). 'auto'
  # packs on a TPU target only; 'on' on any backend (tests).
  pack: str = "auto"

  @nn.nowrap
  def full_resolution_pack(self, shape: tuple[int, ...]) -> int:
    """Pixels per packed column of the full-resolution ends for a source of `shape` (0: plain).
    Needs a down block (its pooling unpacks) and an even height; `chain_pack_factor` checks the
    width and the channels there (block_expansion <= 64)."""
    _, h, w, _ = shape
    if self.num_down_blocks < 1 or h % 2:
      return 0
    return conv_lib.chain_pack_factor(self.pack, w, self.block_expansion)

  @nn.nowrap  # a plain helper: callable on an unbound generator (no scope needed)
  def dense_motion_module(self) -> DenseMotionNetwork:
    """The 'dense_motion_network' submodule with this generator's settings. Inside __call__ it
    binds as the submodule; on an unbound generator it is a standalone module that applies to
    params['dense_motion_network'] (stages/renderer_step.py's second mask pass)."""
    return DenseMotionNetwork(
        num_kp=self.num_kp,
        estimate_occlusion_map=self.estimate_occlusion_map,
        train=self.train,
        bn_axis_name=self.bn_axis_name,
        dtype=self.dtype,
        remat=self.remat,
        name="dense_motion_network",
        **dict(self.dense_motion_params),
    )

  @nn.compact
  def __call__(self, source: jax.Array, kp_drv: dict, kp_src: dict) -> dict[str, jax.Array]:
    """Returns prediction [B,H,W,C] and, with dense motion: mask, sparse_deformed,
    occlusion_map, deformation (at dense-motion resolution) and deformed (source warped)."""
    ax, dt = self.bn_axis_name, self.dtype
    b, h, w, c = source.shape
    pk = self.full_resolution_pack(source.shape)
    x = source.reshape(b, h, w // pk, pk * c) if pk else source  # [B,H,W/pk,pk*C]
    out = SameBlock2d(self.block_expansion, 7, 3, self.train, ax, dt, pk, name="first")(x)
    for i in range(self.num_down_blocks):
      f = min(self.max_features, self.block_expansion * (2 ** (i + 1)))
      out = DownBlock2d(f, 3, 1, self.train, ax, dt, pk if i == 0 else 0,  # pooling unpacks
                        name=f"down_blocks_{i}")(out)

    output = {}
    if self.dense_motion_params is not None:
      dense = self.dense_motion_module()(source, kp_drv, kp_src)
      output["mask"] = dense["mask"]
      output["sparse_deformed"] = dense["sparse_deformed"]
      deformation = dense["deformation"]
      output["deformation"] = deformation
      out = deform_input(out, deformation)
      if "occlusion_map" in dense:
        occ = dense["occlusion_map"]
        output["occlusion_map"] = occ
        if occ.shape[1:3] != out.shape[1:3]:
          occ = resize_bilinear(occ, out.shape[1:3])
        out = out * occ.astype(out.dtype)  # float32 map; keep bf16 features bf16
      output["deformed"] = deform_input(source, deformation)

    out = Bottleneck(self.num_bottleneck_blocks, self.train, ax, dt, name="bottleneck")(out)
    for i in range(self.num_down_blocks):
      f = min(self.max_features, self.block_expansion * (2 ** (self.num_down_blocks - i - 1)))
      last = i == self.num_down_blocks - 1  # upsamples to full resolution: packs (pk > 0)
      out = UpBlock2d(f, 3, 1, self.train, ax, dt, pk if last else 0, name=f"up_blocks_{i}")(out)
    # 'final' (7x7 64 -> 3) reads 4 pixels per column where the width allows: folding two
    # packed columns into one is a plain reshape of [B,H,W/2,128] and measured 1.7 ms faster
    # on v5e than f = 2 (generator train step, batch 8 at 256 px: 46.1 -> 44.3 ms).
    pf = 4 if pk and w % 4 == 0 else pk
    if pf != pk:
      out = out.reshape(b, h, w // pf, pf * out.shape[-1] // pk)
    # No dtype: float32 logits [B,H,W,C] ([B,H,W/pf,pf*C] packed, unfolded below).
    out = conv(self.num_channels, 7, 3, "final", packed_input=pf)(out)
    out = out.reshape(b, h, w, self.num_channels) if pf else out
    pred = jax.nn.sigmoid(out)
    if self.output_blend not in ("none", "occlusion"):
      raise ValueError(f"output_blend={self.output_blend!r}: use 'none' or 'occlusion'")
    if self.output_blend == "occlusion":
      if "occlusion_map" not in output:
        raise ValueError("output_blend='occlusion' needs estimate_occlusion_map=True and "
                         "dense_motion_params")
      occ = resize_bilinear(output["occlusion_map"], pred.shape[1:3])  # [B,H,W,1]
      warped = deform_pixels(source, output["deformation"])
      output["deformed_pixels"] = warped
      output["decoded"] = pred  # the decoder's own image, before the blend
      pred = occ * warped + (1.0 - occ) * pred
    output["prediction"] = pred
    return output

