"""Audio2Head's audio-to-keypoint model (`AudioModel3D`), channels-last, for checkpoint import.

Audio2Head (Wang et al., IJCAI 2021) drives a FOMM renderer with keypoints predicted from audio.
This port mirrors the public PyTorch module `modules/audio2kp.py::AudioModel3D` so that its
`audio2kp` state dict converts by renaming (see `osmnet_jax.convert.audio2head`):

  audio [B,T,4,41] (4 feature rows of 41 dims per video frame; `audio2head_features`)
    -> per frame: ConvTranspose2d(1->8, (29,14), pad (0,11)) -> BN -> ReLU -> Conv2d(8->2, 13x13)
       -> [B*T,32,32,2] -> nearest x2 -> [B,T,64,64,2]                      ('embedding_0/1/3')
  id image [B,256,256,3] -> anti-aliased x1/4 -> [B,64,64,3], repeated over T  ('down_id')
  pose box images [B,T,256,256] -> anti-aliased x1/4 -> [B,T,64,64,1]          ('down_pose')
  concat channels (audio 2, id 3, pose 1) -> [B,T,64,64,6]
    -> Hourglass3D (3-D convs over time and space; residual down/up blocks)  ('predictor')
    -> [B,T,64,64,block_expansion+6]
    -> Conv3d 7x7x7, padding (3,0,0) -> [B,T,58,58,K] -> per-frame spatial softmax / 0.1
       -> keypoints [B,T,K,2] (expectation of the [-1,1] grid)                ('kp')
    -> per frame Conv2d 7x7, padding 0 -> [B*T,58,58,4K] -> heatmap-weighted Jacobians
       [B,T,K,2,2]                                                             ('jacobian')

The audio embedding always produces 32x32 maps (kernel sizes fixed for 4x41 inputs), so the id and
pose images must be 256x256 (64x64 after the x1/4 anti-aliased downsampling). Published sizes
(`config/parameters.yaml`): block_expansion 32, max_features 512, num_blocks 5, num_kp 10,
seq_len 64, estimate_jacobian true. T (= seq_len) must survive num_blocks 2x average pools.
Inference only: BatchNorm uses running statistics (torch `.eval()`).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from osmnet_jax.nn import keypoints as kp_lib
from osmnet_jax.nn.batch_norm import BatchNorm
from osmnet_jax.nn.blocks import AntiAliasInterpolation2d, hourglass_channels, torch_conv_init

# Fixed by the published architecture: 4 feature rows x 41 dims per video frame.
AUDIO_ROWS = 4
AUDIO_DIMS = 41
EMBED_SIZE = 32  # the transposed conv + 13x13 conv output (before the nearest x2)


def conv3d(features: int, kernel, padding, name: str) -> nn.Conv:
  """`nn.Conv3d(in, features, kernel, padding=padding)` on [B,T,H,W,C]."""
  kernel = (kernel,) * 3 if isinstance(kernel, int) else tuple(kernel)
  padding = (padding,) * 3 if isinstance(padding, int) else tuple(padding)
  return nn.Conv(
      features, kernel, padding=tuple((p, p) for p in padding), kernel_init=torch_conv_init,
      name=name
  )


def upsample_nearest2x_3d(x: jax.Array) -> jax.Array:
  """`F.interpolate(x, scale_factor=2)` on a 5-D tensor: [B,T,H,W,C] -> [B,2T,2H,2W,C]."""
  for ax in (1, 2, 3):
    x = jnp.repeat(x, 2, axis=ax)
  return x


def avg_pool2x_3d(x: jax.Array) -> jax.Array:
  """`nn.AvgPool3d(2)`: floors odd sizes like torch."""
  return nn.avg_pool(x, (2, 2, 2), strides=(2, 2, 2), padding="VALID")


class ConvTranspose2d(nn.Module):
  """`nn.ConvTranspose2d(in, features, kernel, stride=1, padding=p)` on [N,H,W,C].

  A stride-1 transposed convolution is a correlation with the spatially flipped kernel and padding
  k - 1 - p per side (output size (H - 1) - 2p + k). `kernel` holds torch's weight [I,O,kh,kw]
  transposed to [kh,kw,I,O] *without* flipping; the flip happens here.
  """

  features: int
  kernel_size: tuple[int, int]
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    cin = x.shape[-1]
    # torch inits ConvTranspose2d with fan_in computed from weight.size(1) * kh * kw (= out ch).
    bound_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_out", "uniform")
    kernel = self.param("kernel", bound_init, (kh, kw, cin, self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    ph, pw = kh - 1 - self.padding[0], kw - 1 - self.padding[1]
    if ph < 0 or pw < 0:
      raise ValueError("padding larger than kernel_size - 1 is not supported")
    y = jax.lax.conv_general_dilated(
        x,
        kernel[::-1, ::-1].astype(x.dtype),
        window_strides=(1, 1),
        padding=((ph, ph), (pw, pw)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return y + bias.astype(x.dtype)


class ResBlock3d(nn.Module):
  """Pre-activation 3-D residual block: BN-ReLU-conv-BN-ReLU-conv + identity."""

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    out = conv3d(c, 3, 1, "conv1")(nn.relu(BatchNorm(name="norm1")(x)))
    out = conv3d(c, 3, 1, "conv2")(nn.relu(BatchNorm(name="norm2")(out)))
    return out + x


class DownBlock3d(nn.Module):
  """res -> BN -> ReLU -> conv -> BN -> ReLU -> 2x2x2 average pool ('res', 'norm_res', 'conv',
  'norm')."""

  features: int

  @nn.compact
  def __call__(self, x):
    out = ResBlock3d(name="res")(x)
    out = nn.relu(BatchNorm(name="norm_res")(out))
    out = conv3d(self.features, 3, 1, "conv")(out)
    out = nn.relu(BatchNorm(name="norm")(out))
    return avg_pool2x_3d(out)


class UpBlock3d(nn.Module):
  """nearest x2 -> conv -> BN -> ReLU -> res -> BN -> ReLU ('conv', 'norm', 'res', 'norm2')."""

  features: int

  @nn.compact
  def __call__(self, x):
    out = upsample_nearest2x_3d(x)
    out = nn.relu(BatchNorm(name="norm")(conv3d(self.features, 3, 1, "conv")(out)))
    out = ResBlock3d(name="res")(out)
    return nn.relu(BatchNorm(name="norm2")(out))


class Encoder3D(nn.Module):
  """num_blocks DownBlock3d ('down_blocks_i'); returns [input, d0, d1, ...] for the skips.
  Level i has hourglass_channels(i) channels (level 0 = the input) at 1/2**i size."""

  block_expansion: int
  num_blocks: int = 5
  max_features: int = 512

  @nn.compact
  def __call__(self, x) -> list[jax.Array]:
    outs = [x]
    for i in range(self.num_blocks):
      f = hourglass_channels(self.block_expansion, self.max_features, i + 1)
      outs.append(DownBlock3d(f, name=f"down_blocks_{i}")(outs[-1]))
    return outs


class Decoder3D(nn.Module):
  """Per level an UpBlock3d ('up_blocks_j') on the running features, concatenated (channels
  last) with the matching skip after its own ResBlock3d -> BN -> ReLU (torch's Sequential
  'res_blocks.j.0' / '.j.1' -> 'res_blocks_j_0' / 'res_blocks_j_1').
  Output channels: block_expansion + channels of the encoder input."""

  block_expansion: int
  num_blocks: int = 5
  max_features: int = 512

  @nn.compact
  def __call__(self, feats) -> jax.Array:
    feats = list(feats)
    out = feats.pop()
    for j, i in enumerate(reversed(range(self.num_blocks))):
      f = hourglass_channels(self.block_expansion, self.max_features, i)
      out = UpBlock3d(f, name=f"up_blocks_{j}")(out)
      skip = ResBlock3d(name=f"res_blocks_{j}_0")(feats.pop())
      skip = nn.relu(BatchNorm(name=f"res_blocks_{j}_1")(skip))
      out = jnp.concatenate([out, skip], axis=-1)  # torch.cat([out, res_bl(skip)], dim=1)
    return out


class Hourglass3D(nn.Module):
  """3-D U-Net: 'encoder' (Encoder3D) + 'decoder' (Decoder3D), as Audio2Head's Hourglass3D."""

  block_expansion: int
  num_blocks: int = 5
  max_features: int = 512

  @nn.compact
  def __call__(self, x):
    args = (self.block_expansion, self.num_blocks, self.max_features)
    return Decoder3D(*args, name="decoder")(Encoder3D(*args, name="encoder")(x))


class AudioModel3D(nn.Module):
  """Audio2Head `audio2kp`. Call with audio [B,T,4,41], id_img [B,256,256,3] in [0,1] and pose
  [B,T,256,256] (rendered head-pose boxes, 0..255 as in Audio2Head's inference)."""

  block_expansion: int = 32
  max_features: int = 512
  num_blocks: int = 5
  num_kp: int = 10
  seq_len: int = 64
  estimate_jacobian: bool = True
  temperature: float = 0.1

  @nn.compact
  def __call__(self, audio: jax.Array, id_img: jax.Array, pose: jax.Array) -> dict[str, jax.Array]:
    b, t = audio.shape[:2]
    if t != self.seq_len:
      raise ValueError(f"audio has {t} frames, the model was built for seq_len={self.seq_len}")
    # Audio embedding, per frame: [B*T,4,41,1] -> [B*T,32,32,8] -> [B*T,32,32,2] -> [B,T,64,64,2].
    a = audio.reshape(b * t, audio.shape[2], audio.shape[3], 1)
    a = ConvTranspose2d(8, (29, 14), (0, 11), name="embedding_0")(a)
    a = nn.relu(BatchNorm(name="embedding_1")(a))
    a = nn.Conv(2, (13, 13), padding=((6, 6), (6, 6)), kernel_init=torch_conv_init,
                name="embedding_3")(a)
    a = jnp.repeat(jnp.repeat(a, 2, axis=1), 2, axis=2)
    a = a.reshape(b, t, *a.shape[1:])

    # Identity [B,256,256,3] -> [B,64,64,3] -> [B,T,64,64,3].
    idf = AntiAliasInterpolation2d(0.25, name="down_id")(id_img)
    idf = jnp.broadcast_to(idf[:, None], (b, t) + idf.shape[1:])
    # Pose boxes: torch filters the T frames as T channels of one image; per-frame here.
    h, w = pose.shape[2:]
    pf = AntiAliasInterpolation2d(0.25, name="down_pose")(pose.reshape(b * t, h, w, 1))
    pf = pf.reshape(b, t, *pf.shape[1:])
    if a.shape[2:4] != idf.shape[2:4] or a.shape[2:4] != pf.shape[2:4]:
      raise ValueError(
          f"id/pose images must be {4 * a.shape[2]}x{4 * a.shape[3]} px (features "
          f"{a.shape[2:4]} vs id {idf.shape[2:4]} / pose {pf.shape[2:4]})"
      )
    x = jnp.concatenate([a, idf.astype(a.dtype), pf.astype(a.dtype)], axis=-1)  # [B,T,64,64,6]

    fmap = Hourglass3D(self.block_expansion, self.num_blocks, self.max_features,
                       name="predictor")(x)  # [B,T,64,64,be+6]
    pred = conv3d(self.num_kp, 7, (3, 0, 0), "kp")(fmap)  # [B,T,58,58,K]
    _, _, hh, ww, k = pred.shape
    heat = kp_lib.spatial_softmax(pred.reshape(b * t, hh, ww, k), self.temperature)
    out = {"value": kp_lib.heatmap_expectation(heat).reshape(b, t, k, 2)}
    if self.estimate_jacobian:
      f2 = fmap.reshape(b * t, *fmap.shape[2:])
      jac_map = nn.Conv(4 * k, (7, 7), padding=((0, 0), (0, 0)), kernel_init=torch_conv_init,
                        name="jacobian")(f2)  # [B*T,58,58,4K]; torch channel 4 k + j
      jac_map = jac_map.reshape(b * t, hh, ww, k, 4)
      jac = jnp.sum(heat[..., None] * jac_map, axis=(1, 2))  # [B*T,K,4]
      out["jacobian"] = jac.reshape(b, t, k, 2, 2)
    return out


def from_config(cfg) -> AudioModel3D:
  """AudioModel3D from a ConfigDict/dict with the `parameters.yaml` fields."""
  return AudioModel3D(
      block_expansion=int(cfg["block_expansion"]),
      max_features=int(cfg["max_features"]),
      num_blocks=int(cfg["num_blocks"]),
      num_kp=int(cfg["num_kp"]),
      seq_len=int(cfg["seq_len"]),
      estimate_jacobian=bool(cfg["estimate_jacobian"]),
  )
