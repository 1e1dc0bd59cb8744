"""A PyTorch mirror of SyncNet (joonson/syncnet_python `SyncNetModel.S`), for cross-framework tests.

Written from the public description of the model (Chung & Zisserman, "Out of time", ACCV 2016
workshops; the layer list of the syncnet_python release) with the same Sequential attributes and
indices, so `state_dict()` keys equal those of the released `syncnet_v2.model`
(`netcnnaud.0.weight`, `netcnnlip.1.running_var`, `netfcaud.3.bias`, ...). NCHW / NCDHW, as the
original. `randomize_` gives BatchNorm non-trivial running statistics and affine parameters so an
eval-mode comparison exercises them.
"""

import torch
from torch import nn


def _conv_block(conv, channels, bn):
  return [conv, bn(channels), nn.ReLU()]


def _audio_cnn():
  c2, bn = nn.Conv2d, nn.BatchNorm2d
  layers = []
  # Per block: (in, out, kernel, padding, pool after as (kernel, stride) or None).
  spec = [(1, 64, 3, 1, ((1, 1), (1, 1))), (64, 192, 3, 1, ((3, 3), (1, 2))),
          (192, 384, 3, 1, None), (384, 256, 3, 1, None), (256, 256, 3, 1, ((3, 3), (2, 2))),
          (256, 512, (5, 4), 0, None)]
  for cin, cout, k, p, pool in spec:
    layers += _conv_block(c2(cin, cout, kernel_size=k, padding=p), cout, bn)
    if pool is not None:
      layers.append(nn.MaxPool2d(kernel_size=pool[0], stride=pool[1]))
  return nn.Sequential(*layers)


def _lip_cnn():
  c3, bn = nn.Conv3d, nn.BatchNorm3d
  layers = _conv_block(c3(3, 96, kernel_size=(5, 7, 7), stride=(1, 2, 2)), 96, bn)
  layers.append(nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)))
  layers += _conv_block(c3(96, 256, kernel_size=(1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),
                        256, bn)
  layers.append(nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)))
  for _ in range(3):
    layers += _conv_block(c3(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)), 256, bn)
  layers.append(nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)))
  layers += _conv_block(c3(256, 512, kernel_size=(1, 6, 6)), 512, bn)
  return nn.Sequential(*layers)


def _fc(embed_dim):
  return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(),
                       nn.Linear(512, embed_dim))


class SyncNetS(nn.Module):
  """forward_aud: [N,1,13,20] MFCC -> [N,E]; forward_lip: [N,3,5,224,224] (BGR 0..255) -> [N,E]."""

  def __init__(self, embed_dim=1024):
    super().__init__()
    self.netcnnaud = _audio_cnn()
    self.netfcaud = _fc(embed_dim)
    self.netfclip = _fc(embed_dim)
    self.netcnnlip = _lip_cnn()

  def forward_aud(self, x):
    h = self.netcnnaud(x)
    return self.netfcaud(h.reshape(h.shape[0], -1))

  def forward_lip(self, x):
    h = self.netcnnlip(x)
    return self.netfclip(h.reshape(h.shape[0], -1))


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
  """Random BatchNorm statistics/affines (defaults are identity-like) and small conv/linear
  weights scaled so activations stay O(1) through the 0..255 lip input."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
        n = m.num_features
        m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
        m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
        m.weight.copy_(torch.rand(n, generator=g) + 0.5)
        m.bias.copy_(torch.randn(n, generator=g) * 0.2)
      elif isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear)):
        fan_in = m.weight[0].numel()
        m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
        m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    model.netcnnlip[0].weight.mul_(1.0 / 128)  # the lip input is 0..255, not O(1)
  return model.eval()
