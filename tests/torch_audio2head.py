"""A PyTorch mirror of Audio2Head's `audio2kp` and `audio2pose` modules, for cross-framework tests.

Written from the public description of Audio2Head (Wang et al., IJCAI 2021; repository
wangsuzhen/Audio2Head, `modules/audio2kp.py`, `modules/audio2pose.py`, `modules/util.py`,
`modules/resnet.py`) with the same attribute names, so `state_dict()` keys equal those of the
published `audio2head.pth.tar` (`embedding.0.weight`, `predictor.encoder.down_blocks.0.res.conv1.
weight`, `predictor.decoder.res_blocks.0.1.running_var`, `kp.weight`, `down_pose.weight`,
`em_audio.resnet.layer2.0.downsample.1.weight`, `lstm.weight_hh_l1`, `output.bias`, ...).
Sizes are configurable so tests can run tiny versions; defaults are the published ones.
NCDHW / NCHW throughout, as the original. Its renderer parts are FOMM's (tests/torch_fomm.py).
"""

import torch
import torch.nn.functional as F
from torch import nn

import torch_fomm  # pylint: disable=import-error  (tests/ is on sys.path in the tests)

_ch = torch_fomm._ch  # pylint: disable=protected-access  (hourglass channel rule, shared)


class AntiAliasNearest(torch_fomm.AntiAliasInterpolation2d):
  """Audio2Head's variant: Gaussian blur then nearest `F.interpolate(scale_factor=s)`."""

  def __init__(self, channels, scale):
    super().__init__(channels, scale)
    self.scale = scale

  def forward(self, x):
    out = F.pad(x, (self.ka, self.kb, self.ka, self.kb))
    out = F.conv2d(out, self.weight, groups=self.groups)
    return F.interpolate(out, scale_factor=(self.scale, self.scale))


class ResBlock3d(nn.Module):
  def __init__(self, c):
    super().__init__()
    self.conv1 = nn.Conv3d(c, c, 3, padding=1)
    self.conv2 = nn.Conv3d(c, c, 3, padding=1)
    self.norm1 = nn.BatchNorm3d(c, affine=True)
    self.norm2 = nn.BatchNorm3d(c, affine=True)

  def forward(self, x):
    out = self.conv1(F.relu(self.norm1(x)))
    out = self.conv2(F.relu(self.norm2(out)))
    return out + x


class DownBlock3d(nn.Module):
  def __init__(self, cin, cout):
    super().__init__()
    self.res = ResBlock3d(cin)
    self.norm_res = nn.BatchNorm3d(cin, affine=True)
    self.conv = nn.Conv3d(cin, cout, 3, padding=1)
    self.norm = nn.BatchNorm3d(cout, affine=True)
    self.pool = nn.AvgPool3d(kernel_size=(2, 2, 2))

  def forward(self, x):
    out = F.relu(self.norm_res(self.res(x)))
    return self.pool(F.relu(self.norm(self.conv(out))))


class UpBlock3d(nn.Module):
  def __init__(self, cin, cout):
    super().__init__()
    self.conv = nn.Conv3d(cin, cout, 3, padding=1)
    self.norm = nn.BatchNorm3d(cout, affine=True)
    self.res = ResBlock3d(cout)
    self.norm2 = nn.BatchNorm3d(cout, affine=True)

  def forward(self, x):
    out = F.relu(self.norm(self.conv(F.interpolate(x, scale_factor=2))))
    return F.relu(self.norm2(self.res(out)))


class Encoder3D(nn.Module):
  def __init__(self, be, cin, nb, mf):
    super().__init__()
    self.down_blocks = nn.ModuleList(
        [DownBlock3d(cin if i == 0 else _ch(be, mf, i), _ch(be, mf, i + 1)) for i in range(nb)]
    )

  def forward(self, x):
    outs = [x]
    for blk in self.down_blocks:
      outs.append(blk(outs[-1]))
    return outs


class Decoder3D(nn.Module):
  def __init__(self, be, cin, nb, mf):
    super().__init__()
    ups, res = [], []
    for i in reversed(range(nb)):
      fin = (1 if i == nb - 1 else 2) * _ch(be, mf, i + 1)
      fout = _ch(be, mf, i)
      ups.append(UpBlock3d(fin, fout))
      c = fout if i > 0 else cin
      res.append(nn.Sequential(ResBlock3d(c), nn.BatchNorm3d(c), nn.ReLU()))
    self.up_blocks = nn.ModuleList(ups)
    self.res_blocks = nn.ModuleList(res)
    self.out_filters = be + cin

  def forward(self, xs):
    xs = list(xs)
    out = xs.pop()
    for up, rb in zip(self.up_blocks, self.res_blocks):
      out = up(out)
      out = torch.cat([out, rb(xs.pop())], dim=1)
    return out


class Hourglass3D(nn.Module):
  def __init__(self, be, cin, nb, mf):
    super().__init__()
    self.encoder = Encoder3D(be, cin, nb, mf)
    self.decoder = Decoder3D(be, cin, nb, mf)
    self.out_filters = self.decoder.out_filters

  def forward(self, x):
    return self.decoder(self.encoder(x))


class AudioModel3D(nn.Module):
  def __init__(self, block_expansion=32, max_features=512, num_blocks=5, num_kp=10, seq_len=64,
               estimate_jacobian=True):
    super().__init__()
    self.seq_len = seq_len
    self.num_kp = num_kp
    self.down_id = AntiAliasNearest(3, 0.25)
    self.down_pose = AntiAliasNearest(seq_len, 0.25)
    self.embedding = nn.Sequential(
        nn.ConvTranspose2d(1, 8, (29, 14), stride=(1, 1), padding=(0, 11)),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 2, (13, 13), stride=(1, 1), padding=(6, 6)),
    )
    self.predictor = Hourglass3D(block_expansion, 6, num_blocks, max_features)
    self.kp = nn.Conv3d(self.predictor.out_filters, num_kp, (7, 7, 7), padding=(3, 0, 0))
    self.jacobian = (nn.Conv2d(self.predictor.out_filters, 4 * num_kp, (7, 7), padding=(0, 0))
                     if estimate_jacobian else None)
    self.temperature = 0.1

  def forward(self, x):
    bs, t, rows, dims = x["audio"].shape
    emb = self.embedding(x["audio"].reshape(-1, 1, rows, dims))
    emb = F.interpolate(emb, scale_factor=2)
    emb = emb.reshape(bs, t, 2, emb.shape[2], emb.shape[3]).permute(0, 2, 1, 3, 4)
    idf = self.down_id(x["id_img"]).unsqueeze(2).repeat(1, 1, t, 1, 1)
    posef = self.down_pose(x["pose"]).unsqueeze(1)
    fmap = self.predictor(torch.cat([emb, idf, posef], dim=1))  # [B,C,T,H,W]
    c = fmap.shape[1]
    pred = self.kp(fmap).permute(0, 2, 1, 3, 4)  # [B,T,K,h,w]
    pred = pred.reshape(-1, *pred.shape[2:])
    n, k, h, w = pred.shape
    heat = F.softmax(pred.view(n, k, -1) / self.temperature, dim=2).view(n, k, h, w)
    grid = torch_fomm.make_coordinate_grid(h, w).view(1, 1, h, w, 2)
    out = {"value": (heat.unsqueeze(-1) * grid).sum(dim=(2, 3)).reshape(bs, t, k, 2)}
    if self.jacobian is not None:
      f2 = fmap.permute(0, 2, 1, 3, 4).reshape(-1, c, fmap.shape[3], fmap.shape[4])
      jm = self.jacobian(f2).reshape(n, k, 4, h, w)
      jac = (heat.unsqueeze(2) * jm).view(n, k, 4, -1).sum(-1)
      out["jacobian"] = jac.view(bs, t, k, 2, 2)
    return out


# ------------------------------------------------------------------------------------------------
# audio2pose: ResNet-34 encoders (torchvision layout under `resnet.`) + 2-layer LSTM.


class BasicBlock(nn.Module):
  def __init__(self, cin, cout, stride=1):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.downsample = None
    if stride != 1 or cin != cout:
      self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    idt = x if self.downsample is None else self.downsample(x)
    return F.relu(out + idt)


class ResNet(nn.Module):
  def __init__(self, num_classes, input_channel, layers=(3, 4, 6, 3), widths=(64, 128, 256, 512)):
    super().__init__()
    self.conv1 = nn.Conv2d(input_channel, widths[0], 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(widths[0])
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    cin = widths[0]
    for li, (n, w) in enumerate(zip(layers, widths)):
      blocks = []
      for bi in range(n):
        blocks.append(BasicBlock(cin, w, 2 if (bi == 0 and li > 0) else 1))
        cin = w
      setattr(self, f"layer{li + 1}", nn.Sequential(*blocks))
    self.fc = nn.Linear(cin, num_classes)

  def forward(self, x):
    x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
    for li in range(4):
      x = getattr(self, f"layer{li + 1}")(x)
    return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class MyResNet34(nn.Module):
  def __init__(self, embedding_dim, input_channel, layers=(3, 4, 6, 3), widths=(64, 128, 256, 512)):
    super().__init__()
    self.resnet = ResNet(embedding_dim, input_channel, layers, widths)

  def forward(self, x):
    return self.resnet(x)


class Audio2PoseLSTM(nn.Module):
  def __init__(self, embedding_dim=256, layers=(3, 4, 6, 3), widths=(64, 128, 256, 512),
               num_lstm_layers=2, pose_dim=6):
    super().__init__()
    self.dim = embedding_dim
    self.num_lstm_layers = num_lstm_layers
    self.em_audio = MyResNet34(embedding_dim, 1, layers, widths)
    self.em_img = MyResNet34(embedding_dim, 3, layers, widths)
    self.lstm = nn.LSTM(2 * embedding_dim, embedding_dim, num_layers=num_lstm_layers, bias=True,
                        batch_first=True)
    self.output = nn.Linear(embedding_dim, pose_dim)

  def forward(self, x):
    img_em = self.em_img(x["img"])
    result = [self.output(img_em).unsqueeze(1)]
    bs, t, rows, dims = x["audio"].shape
    zero = torch.zeros((self.num_lstm_layers, bs, self.dim))
    state = (zero, zero)
    audio_em = self.em_audio(x["audio"].reshape(-1, 1, rows, dims)).reshape(bs, t, self.dim)
    for i in range(t):
      img_em, state = self.lstm(torch.cat((audio_em[:, i:i + 1], img_em.unsqueeze(1)), dim=2), state)  # noqa: E501
      img_em = img_em.reshape(-1, self.dim)
      result.append(self.output(img_em).unsqueeze(1))
    return torch.cat(result, dim=1)


def randomize_(module, seed=0):
  """Random weights and BatchNorm running stats in place (eval-mode BN is exercised)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, m in module.named_modules():
      if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
        m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
        m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
        m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        m.num_batches_tracked.fill_(100)
      elif isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)):
        bound = 1.0 / m.weight[0].numel() ** 0.5  # torch's default U(+-1/sqrt(fan_in)) scale
        m.weight.copy_((torch.rand(m.weight.shape, generator=g) * 2 - 1) * bound)
        if m.bias is not None:
          m.bias.copy_((torch.rand(m.bias.shape, generator=g) * 2 - 1) * bound)
        if name == "jacobian":  # near the identity init, as trained Jacobian heads are
          m.weight.mul_(0.1)
          m.bias.add_(torch.tensor([1.0, 0, 0, 1]).repeat(m.bias.numel() // 4))
      elif isinstance(m, nn.LSTM):
        for p in m.parameters():
          bound = 1.0 / m.hidden_size**0.5
          p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)
  return module
