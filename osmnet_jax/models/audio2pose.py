"""Audio2Head's audio-to-head-pose regressor (`audio2poseLSTM`), channels-last, for import.

Mirrors the public PyTorch module `modules/audio2pose.py::audio2poseLSTM` of Audio2Head so its
`audio2pose` state dict converts by renaming (see `osmnet_jax.convert.audio2head`):

  img [B,256,256,3] -> ResNet-34 ('em_img/resnet') -> e0 [B,256]; pose_0 = Linear(e0) ('output')
  audio [B,T,4,41] -> per frame [B*T,4,41,1] -> ResNet-34 with a 1-channel stem ('em_audio/resnet')
    -> a [B,T,256]
  2-layer LSTM(512 -> 256) ('lstm'), zero initial state; step t input = concat(a_t, h_{t-1}) where
    h_{-1} = e0 and h_t is the top layer's output; pose_{t+1} = Linear(h_t)
  -> poses [B,T+1,6] in [-1,1]-normalised units (`denormalize_pose` maps them to Audio2Head's
     rotation vector (3, radians) and translation (3, camera units)).

The ResNet is torchvision's ResNet-34 layout (`conv1` 7x7/2 no bias, `bn1`, 3x3/2 max pool,
`layer1..4` of BasicBlocks with `downsample_0/1` 1x1 projections, global average pool, `fc`).
Depth (`layers`) and `widths` are configurable for tests; defaults are the published ones.
Inference only: BatchNorm uses running statistics (torch `.eval()`).
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from osmnet_jax.nn.batch_norm import BatchNorm
from osmnet_jax.nn.blocks import torch_conv_init

# Audio2Head's `get_pose_from_audio` range: pose = (p + 1) / 2 * (max - min) + min.
POSE_MIN = np.array([-0.639, -0.501, -0.47, -102.6, -32.5, 184.6], np.float32)
POSE_MAX = np.array([0.411, 0.547, 0.433, 159.1, 116.5, 376.5], np.float32)

torch_linear_init = torch_conv_init  # U(+-1/sqrt(fan_in)) for Linear weights too


def _conv(features: int, kernel: int, stride: int, padding: int, name: str) -> nn.Conv:
  """`nn.Conv2d(in, features, kernel, stride, padding, bias=False)`."""
  return nn.Conv(
      features, (kernel, kernel), strides=(stride, stride),
      padding=((padding, padding), (padding, padding)), use_bias=False,
      kernel_init=torch_conv_init, name=name,
  )


class BasicBlock(nn.Module):
  """conv3x3(stride)-BN-ReLU-conv3x3-BN + identity (or 1x1 conv + BN projection), ReLU."""

  features: int
  stride: int = 1

  @nn.compact
  def __call__(self, x):
    out = nn.relu(BatchNorm(name="bn1")(_conv(self.features, 3, self.stride, 1, "conv1")(x)))
    out = BatchNorm(name="bn2")(_conv(self.features, 3, 1, 1, "conv2")(out))
    if self.stride != 1 or x.shape[-1] != self.features:
      x = _conv(self.features, 1, self.stride, 0, "downsample_0")(x)
      x = BatchNorm(name="downsample_1")(x)
    return nn.relu(out + x)


class ResNet(nn.Module):
  """torchvision-layout ResNet with BasicBlocks: [N,H,W,C] -> [N,num_classes]."""

  num_classes: int = 256
  layers: Sequence[int] = (3, 4, 6, 3)
  widths: Sequence[int] = (64, 128, 256, 512)

  @nn.compact
  def __call__(self, x):
    x = nn.relu(BatchNorm(name="bn1")(_conv(self.widths[0], 7, 2, 3, "conv1")(x)))
    # nn.MaxPool2d(3, 2, 1): implicit -inf padding, floor mode.
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for li, (n, w) in enumerate(zip(self.layers, self.widths)):
      for bi in range(n):
        stride = 2 if (bi == 0 and li > 0) else 1
        x = BasicBlock(w, stride, name=f"layer{li + 1}_{bi}")(x)
    x = jnp.mean(x, axis=(1, 2))  # AdaptiveAvgPool2d(1) + flatten
    return nn.Dense(self.num_classes, kernel_init=torch_linear_init, name="fc")(x)


class MyResNet34(nn.Module):
  """Audio2Head's wrapper: the ResNet lives under the attribute 'resnet'."""

  embedding_dim: int = 256
  layers: Sequence[int] = (3, 4, 6, 3)
  widths: Sequence[int] = (64, 128, 256, 512)

  @nn.compact
  def __call__(self, x):
    return ResNet(self.embedding_dim, self.layers, self.widths, name="resnet")(x)


class FeedbackLSTM(nn.Module):
  """Multi-layer `nn.LSTM` (torch gate order i, f, g, o; two biases per layer) run over T steps
  with Audio2Head's feedback: step t's input is concat(x_t, h_{t-1}), h the top layer's output.

  Parameters per layer l: `kernel_ih_l{l}` [in,4H], `kernel_hh_l{l}` [H,4H] (torch
  `weight_ih_l{l}` / `weight_hh_l{l}` transposed), `bias_ih_l{l}`, `bias_hh_l{l}` [4H].
  """

  hidden: int = 256
  num_layers: int = 2

  @nn.compact
  def __call__(self, xs: jax.Array, h_init: jax.Array) -> jax.Array:
    """xs [B,T,D], h_init [B,H] (fed back as h_{-1}); zero (h, c) state -> outputs [B,T,H]."""
    bound = 1.0 / self.hidden**0.5
    init = lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -bound, bound)
    params = []
    in_dim = xs.shape[-1] + self.hidden
    for l in range(self.num_layers):
      params.append((
          self.param(f"kernel_ih_l{l}", init, (in_dim, 4 * self.hidden)),
          self.param(f"kernel_hh_l{l}", init, (self.hidden, 4 * self.hidden)),
          self.param(f"bias_ih_l{l}", init, (4 * self.hidden,)),
          self.param(f"bias_hh_l{l}", init, (4 * self.hidden,)),
      ))
      in_dim = self.hidden

    def step(carry, x_t):
      h_top, hs, cs = carry
      inp = jnp.concatenate([x_t, h_top], axis=-1)
      new_h, new_c = [], []
      for l, (wi, wh, bi, bh) in enumerate(params):
        gates = inp @ wi + bi + hs[l] @ wh + bh
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        c = jax.nn.sigmoid(f) * cs[l] + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        new_h.append(h)
        new_c.append(c)
        inp = h
      return (inp, tuple(new_h), tuple(new_c)), inp

    zeros = tuple(jnp.zeros_like(h_init) for _ in range(self.num_layers))
    _, out = jax.lax.scan(step, (h_init, zeros, zeros), jnp.swapaxes(xs, 0, 1))
    return jnp.swapaxes(out, 0, 1)


class Audio2PoseLSTM(nn.Module):
  """Audio2Head `audio2pose`: (img [B,H,W,3] in [0,1], audio [B,T,4,41]) -> poses [B,T+1,6]."""

  embedding_dim: int = 256
  layers: Sequence[int] = (3, 4, 6, 3)
  widths: Sequence[int] = (64, 128, 256, 512)
  num_lstm_layers: int = 2
  pose_dim: int = 6

  @nn.compact
  def __call__(self, img: jax.Array, audio: jax.Array) -> jax.Array:
    d = self.embedding_dim
    img_em = MyResNet34(d, self.layers, self.widths, name="em_img")(img)  # [B,d]
    b, t, rows, dims = audio.shape
    audio_em = MyResNet34(d, self.layers, self.widths, name="em_audio")(
        audio.reshape(b * t, rows, dims, 1)
    ).reshape(b, t, d)
    hs = FeedbackLSTM(d, self.num_lstm_layers, name="lstm")(audio_em, img_em)  # [B,T,d]
    output = nn.Dense(self.pose_dim, kernel_init=torch_linear_init, name="output")
    return jnp.concatenate([output(img_em)[:, None], output(hs)], axis=1)  # [B,T+1,6]


def from_config(cfg) -> Audio2PoseLSTM:
  return Audio2PoseLSTM(
      embedding_dim=int(cfg["embedding_dim"]),
      layers=tuple(int(v) for v in cfg["layers"]),
      widths=tuple(int(v) for v in cfg["widths"]),
      num_lstm_layers=int(cfg["num_lstm_layers"]),
      pose_dim=int(cfg["pose_dim"]),
  )


def denormalize_pose(poses) -> tuple[np.ndarray, np.ndarray]:
  """Model output [..., 6] in [-1,1] units -> (rotation vectors [...,3], translations [...,3]),
  as Audio2Head's `get_pose_from_audio`."""
  p = (np.asarray(poses, np.float32) + 1) / 2 * (POSE_MAX - POSE_MIN) + POSE_MIN
  return p[..., :3].copy(), p[..., 3:].copy()
