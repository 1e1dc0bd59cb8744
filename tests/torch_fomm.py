"""A PyTorch mirror of the First Order Motion Model renderer, for cross-framework tests.

Written from the public description of FOMM (Siarohin et al., NeurIPS 2019, vox-256 config) with
the same module attribute names, so `state_dict()` keys equal those of a real FOMM checkpoint
(`predictor.encoder.down_blocks.0.conv.weight`, `kp.weight`, `jacobian.bias`,
`dense_motion_network.hourglass...`, `first.norm.running_mean`, `bottleneck.r0.conv1.weight`,
`final.weight`, `down.weight` buffers, ...). NCHW throughout, as FOMM.
"""

import torch
import torch.nn.functional as F
from torch import nn


def make_coordinate_grid(h, w, dtype=torch.float32):
  x = torch.arange(w, dtype=dtype)
  y = torch.arange(h, dtype=dtype)
  x = 2 * (x / (w - 1)) - 1
  y = 2 * (y / (h - 1)) - 1
  yy = y.view(-1, 1).repeat(1, w)
  xx = x.view(1, -1).repeat(h, 1)
  return torch.stack([xx, yy], dim=2)  # [h, w, 2]


def kp2gaussian(value, spatial_size, kp_variance):
  h, w = spatial_size
  grid = make_coordinate_grid(h, w, value.dtype).view(1, 1, h, w, 2)
  diff = grid - value.view(*value.shape[:2], 1, 1, 2)
  return torch.exp(-0.5 * (diff**2).sum(-1) / kp_variance)  # [B, K, h, w]


class ResBlock2d(nn.Module):
  def __init__(self, c, kernel_size=3, padding=1):
    super().__init__()
    self.conv1 = nn.Conv2d(c, c, kernel_size, padding=padding)
    self.conv2 = nn.Conv2d(c, c, kernel_size, padding=padding)
    self.norm1 = nn.BatchNorm2d(c, affine=True)
    self.norm2 = nn.BatchNorm2d(c, affine=True)

  def forward(self, x):
    out = self.conv1(F.relu(self.norm1(x)))
    out = self.conv2(F.relu(self.norm2(out)))
    return out + x


class UpBlock2d(nn.Module):
  def __init__(self, cin, cout, kernel_size=3, padding=1):
    super().__init__()
    self.conv = nn.Conv2d(cin, cout, kernel_size, padding=padding)
    self.norm = nn.BatchNorm2d(cout, affine=True)

  def forward(self, x):
    return F.relu(self.norm(self.conv(F.interpolate(x, scale_factor=2))))


class DownBlock2d(nn.Module):
  def __init__(self, cin, cout, kernel_size=3, padding=1):
    super().__init__()
    self.conv = nn.Conv2d(cin, cout, kernel_size, padding=padding)
    self.norm = nn.BatchNorm2d(cout, affine=True)
    self.pool = nn.AvgPool2d(kernel_size=(2, 2))

  def forward(self, x):
    return self.pool(F.relu(self.norm(self.conv(x))))


class SameBlock2d(nn.Module):
  def __init__(self, cin, cout, kernel_size=3, padding=1):
    super().__init__()
    self.conv = nn.Conv2d(cin, cout, kernel_size, padding=padding)
    self.norm = nn.BatchNorm2d(cout, affine=True)

  def forward(self, x):
    return F.relu(self.norm(self.conv(x)))


def _ch(be, mf, i):
  return min(mf, be * 2**i)


class Encoder(nn.Module):
  def __init__(self, be, cin, num_blocks, mf):
    super().__init__()
    self.down_blocks = nn.ModuleList(
        [DownBlock2d(cin if i == 0 else _ch(be, mf, i), _ch(be, mf, i + 1)) for i in range(num_blocks)]  # noqa: E501
    )

  def forward(self, x):
    outs = [x]
    for b in self.down_blocks:
      outs.append(b(outs[-1]))
    return outs


class Decoder(nn.Module):
  def __init__(self, be, cin, num_blocks, mf):
    super().__init__()
    blocks = []
    for i in reversed(range(num_blocks)):
      fin = (1 if i == num_blocks - 1 else 2) * _ch(be, mf, i + 1)
      blocks.append(UpBlock2d(fin, _ch(be, mf, i)))
    self.up_blocks = nn.ModuleList(blocks)
    self.out_filters = be + cin

  def forward(self, xs):
    xs = list(xs)
    out = xs.pop()
    for b in self.up_blocks:
      out = torch.cat([b(out), xs.pop()], dim=1)
    return out


class Hourglass(nn.Module):
  def __init__(self, be, cin, num_blocks, mf):
    super().__init__()
    self.encoder = Encoder(be, cin, num_blocks, mf)
    self.decoder = Decoder(be, cin, num_blocks, mf)
    self.out_filters = self.decoder.out_filters

  def forward(self, x):
    return self.decoder(self.encoder(x))


class AntiAliasInterpolation2d(nn.Module):
  def __init__(self, channels, scale):
    super().__init__()
    sigma = (1 / scale - 1) / 2
    size = 2 * round(sigma * 4) + 1
    self.ka = size // 2
    self.kb = self.ka - 1 if size % 2 == 0 else self.ka
    g = torch.arange(size, dtype=torch.float32)
    g = torch.exp(-((g - (size - 1) / 2) ** 2) / (2 * sigma**2))
    kernel = g[:, None] * g[None, :]
    kernel = kernel / kernel.sum()
    self.register_buffer("weight", kernel.view(1, 1, size, size).repeat(channels, 1, 1, 1))
    self.groups = channels
    self.stride = int(1 / scale)

  def forward(self, x):
    out = F.pad(x, (self.ka, self.kb, self.ka, self.kb))
    out = F.conv2d(out, self.weight, groups=self.groups)
    return out[:, :, :: self.stride, :: self.stride]


class KPDetector(nn.Module):
  def __init__(self, block_expansion, num_kp, num_channels, max_features, num_blocks,
               temperature, estimate_jacobian=True, scale_factor=1, pad=0):
    super().__init__()
    self.predictor = Hourglass(block_expansion, num_channels, num_blocks, max_features)
    self.kp = nn.Conv2d(self.predictor.out_filters, num_kp, 7, padding=pad)
    self.num_kp = num_kp
    if estimate_jacobian:
      self.jacobian = nn.Conv2d(self.predictor.out_filters, 4 * num_kp, 7, padding=pad)
      self.jacobian.weight.data.zero_()
      self.jacobian.bias.data.copy_(torch.tensor([1.0, 0, 0, 1] * num_kp))
    else:
      self.jacobian = None
    self.temperature = temperature
    self.scale_factor = scale_factor
    if scale_factor != 1:
      self.down = AntiAliasInterpolation2d(num_channels, scale_factor)

  def forward(self, x):
    if self.scale_factor != 1:
      x = self.down(x)
    fmap = self.predictor(x)
    pred = self.kp(fmap)
    b, k, h, w = pred.shape
    heat = F.softmax(pred.view(b, k, -1) / self.temperature, dim=2).view(b, k, h, w)
    grid = make_coordinate_grid(h, w).view(1, 1, h, w, 2)
    out = {"value": (heat.unsqueeze(-1) * grid).sum(dim=(2, 3))}
    if self.jacobian is not None:
      jm = self.jacobian(fmap).reshape(b, k, 4, h, w)
      jac = (heat.unsqueeze(2) * jm).view(b, k, 4, -1).sum(-1)
      out["jacobian"] = jac.view(b, k, 2, 2)
    return out


class DenseMotionNetwork(nn.Module):
  def __init__(self, block_expansion, num_blocks, max_features, num_kp, num_channels,
               estimate_occlusion_map=False, scale_factor=1, kp_variance=0.01):
    super().__init__()
    self.hourglass = Hourglass(block_expansion, (num_kp + 1) * (num_channels + 1), num_blocks,
                               max_features)
    self.mask = nn.Conv2d(self.hourglass.out_filters, num_kp + 1, 7, padding=3)
    self.occlusion = (nn.Conv2d(self.hourglass.out_filters, 1, 7, padding=3)
                      if estimate_occlusion_map else None)
    self.num_kp = num_kp
    self.scale_factor = scale_factor
    self.kp_variance = kp_variance
    if scale_factor != 1:
      self.down = AntiAliasInterpolation2d(num_channels, scale_factor)

  def forward(self, source, kp_driving, kp_source):
    if self.scale_factor != 1:
      source = self.down(source)
    b, c, h, w = source.shape
    k = self.num_kp
    heat = (kp2gaussian(kp_driving["value"], (h, w), self.kp_variance)
            - kp2gaussian(kp_source["value"], (h, w), self.kp_variance))
    heat = torch.cat([torch.zeros(b, 1, h, w), heat], dim=1).unsqueeze(2)  # [b,k+1,1,h,w]

    ident = make_coordinate_grid(h, w).view(1, 1, h, w, 2)
    z = ident - kp_driving["value"].view(b, k, 1, 1, 2)
    jac = torch.matmul(kp_source["jacobian"], torch.inverse(kp_driving["jacobian"]))
    jac = jac.unsqueeze(-3).unsqueeze(-3).repeat(1, 1, h, w, 1, 1)
    z = torch.matmul(jac, z.unsqueeze(-1)).squeeze(-1)
    d2s = z + kp_source["value"].view(b, k, 1, 1, 2)
    motions = torch.cat([ident.repeat(b, 1, 1, 1, 1), d2s], dim=1)  # [b,k+1,h,w,2]

    rep = source.unsqueeze(1).repeat(1, k + 1, 1, 1, 1).view(b * (k + 1), c, h, w)
    deformed = F.grid_sample(rep, motions.view(b * (k + 1), h, w, 2), align_corners=False)
    deformed = deformed.view(b, k + 1, c, h, w)
    out = {"sparse_deformed": deformed}
    inp = torch.cat([heat, deformed], dim=2).view(b, -1, h, w)
    pred = self.hourglass(inp)
    mask = F.softmax(self.mask(pred), dim=1)
    out["mask"] = mask
    deformation = (motions.permute(0, 1, 4, 2, 3) * mask.unsqueeze(2)).sum(dim=1)
    out["deformation"] = deformation.permute(0, 2, 3, 1)
    if self.occlusion is not None:
      out["occlusion_map"] = torch.sigmoid(self.occlusion(pred))
    return out


class OcclusionAwareGenerator(nn.Module):
  def __init__(self, num_channels, num_kp, block_expansion, max_features, num_down_blocks,
               num_bottleneck_blocks, estimate_occlusion_map=False, dense_motion_params=None):
    super().__init__()
    self.dense_motion_network = DenseMotionNetwork(
        num_kp=num_kp, num_channels=num_channels,
        estimate_occlusion_map=estimate_occlusion_map, **dense_motion_params)
    self.first = SameBlock2d(num_channels, block_expansion, kernel_size=7, padding=3)
    self.down_blocks = nn.ModuleList([
        DownBlock2d(_ch(block_expansion, max_features, i), _ch(block_expansion, max_features, i + 1))  # noqa: E501
        for i in range(num_down_blocks)])
    n = num_down_blocks
    self.up_blocks = nn.ModuleList([
        UpBlock2d(_ch(block_expansion, max_features, n - i), _ch(block_expansion, max_features, n - i - 1))  # noqa: E501
        for i in range(n)])
    self.bottleneck = nn.Sequential()
    c = _ch(block_expansion, max_features, n)
    for i in range(num_bottleneck_blocks):
      self.bottleneck.add_module("r" + str(i), ResBlock2d(c))
    self.final = nn.Conv2d(block_expansion, num_channels, 7, padding=3)

  @staticmethod
  def deform_input(x, deformation):
    _, ho, wo, _ = deformation.shape
    _, _, h, w = x.shape
    if (ho, wo) != (h, w):
      deformation = F.interpolate(deformation.permute(0, 3, 1, 2), size=(h, w), mode="bilinear",
                                  align_corners=False).permute(0, 2, 3, 1)
    return F.grid_sample(x, deformation, align_corners=False)

  def forward(self, source, kp_driving, kp_source):
    out = self.first(source)
    for b in self.down_blocks:
      out = b(out)
    dm = self.dense_motion_network(source, kp_driving, kp_source)
    result = {k: dm[k] for k in ("mask", "sparse_deformed", "deformation")}
    out = self.deform_input(out, dm["deformation"])
    if "occlusion_map" in dm:
      occ = dm["occlusion_map"]
      result["occlusion_map"] = occ
      if occ.shape[2:] != out.shape[2:]:
        occ = F.interpolate(occ, size=out.shape[2:], mode="bilinear", align_corners=False)
      out = out * occ
    result["deformed"] = self.deform_input(source, dm["deformation"])
    out = self.bottleneck(out)
    for b in self.up_blocks:
      out = b(out)
    result["prediction"] = torch.sigmoid(self.final(out))
    return result


def build(cfg):
  """Builds (kp_detector, generator) from an osmnet_jax renderer config."""
  kd = cfg.kp_detector
  kp = KPDetector(kd.block_expansion, cfg.num_kp, cfg.num_channels, kd.max_features, kd.num_blocks,
                  kd.temperature, cfg.estimate_jacobian, kd.scale_factor, kd.get("pad", 0))
  g = cfg.generator
  gen = OcclusionAwareGenerator(cfg.num_channels, cfg.num_kp, g.block_expansion, g.max_features,
                                g.num_down_blocks, g.num_bottleneck_blocks,
                                g.estimate_occlusion_map, dict(g.dense_motion_params))
  return kp, gen


def randomize_(module, seed=0, scale=1.0):
  """Random weights *and* BatchNorm running stats (so eval-mode BN is exercised), in place.

  The jacobian head is perturbed around its identity init. Conv weights keep torch's default
  init scale; BN gets weight ~ U(0.5, 1.5), bias ~ N(0, 0.1), running_mean ~ N(0, 0.1),
  running_var ~ U(0.5, 1.5).
  """
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, m in module.named_modules():
      if isinstance(m, nn.BatchNorm2d):
        m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
        m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
        m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        m.num_batches_tracked.fill_(100)
      elif isinstance(m, nn.Conv2d):
        fan_in = m.weight[0].numel()
        bound = scale / fan_in**0.5
        m.weight.copy_((torch.rand(m.weight.shape, generator=g) * 2 - 1) * bound)
        m.bias.copy_((torch.rand(m.bias.shape, generator=g) * 2 - 1) * bound)
        if name.endswith("jacobian"):
          m.weight.mul_(0.1)
          m.bias.add_(torch.tensor([1.0, 0, 0, 1]).repeat(m.bias.numel() // 4))
  return module


# ------------------------------------------------------------------------------------------------
# Training-side pieces: VGG19 (torchvision layout), TPS transform, discriminator.


class VGG19Torchvision(nn.Module):
  """torchvision's VGG19 layout (`features.<i>`, `classifier.<i>`) for state-dict tests."""

  def __init__(self):
    super().__init__()
    layers, cin = [], 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"):
      if v == "M":
        layers.append(nn.MaxPool2d(2, 2))
      else:
        layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
        cin = v
    self.features = nn.Sequential(*layers)
    self.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 16), nn.ReLU(True), nn.Linear(16, 10))

  def fomm_features(self, x):
    """FOMM's Vgg19: ImageNet-normalised input, relu1_1, relu2_1, relu3_1, relu4_1, relu5_1."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (x - mean) / std
    outs = []
    for lo, hi in ((0, 2), (2, 7), (7, 12), (12, 21), (21, 30)):
      for i in range(lo, hi):
        x = self.features[i](x)
      outs.append(x)
    return outs


def generator_full_loss(kp_t, gen_t, vgg_t, src, drv, tt, scales, perceptual_weights,
                        eq_value=10.0, eq_jacobian=10.0):
  """FOMM's GeneratorFullModel losses (no GAN): perceptual pyramid over `scales` with VGG19
  relu1_1.. layers weighted by `perceptual_weights`, equivariance value and Jacobian under the
  TPS `tt`. src, drv [B,3,H,W] in [0,1]. Returns {'perceptual', 'equivariance_value',
  'equivariance_jacobian', 'total'} (tensors with graph)."""
  kp_s = kp_t(src)
  kp_d = kp_t(drv)
  out = gen_t(src, kp_d, kp_s)
  perc = 0.0
  n = len(perceptual_weights)
  for s in scales:
    down = (lambda x: x) if s == 1 else AntiAliasInterpolation2d(3, s)
    fx, fy = vgg_t.fomm_features(down(out["prediction"])), vgg_t.fomm_features(down(drv))
    perc = perc + sum(w * torch.abs(a - b.detach()).mean()
                      for w, a, b in zip(perceptual_weights, fx[:n], fy[:n]))
  kp_tr = kp_t(tt.transform_frame(drv))
  eq_v = eq_value * torch.abs(kp_d["value"] - tt.warp_coordinates(kp_tr["value"])).mean()
  jt = torch.matmul(tt.jacobian(kp_tr["value"]), kp_tr["jacobian"])
  eye = torch.eye(2).view(1, 1, 2, 2)
  eq_j = eq_jacobian * torch.abs(eye - torch.matmul(torch.inverse(kp_d["jacobian"]), jt)).mean()
  return {"perceptual": perc, "equivariance_value": eq_v, "equivariance_jacobian": eq_j,
          "total": perc + eq_v + eq_j}


class Transform:
  """FOMM's random TPS transform with given parameters (theta [B,2,3], control params [B,1,P])."""

  def __init__(self, theta, control_params, points_tps):
    self.theta = theta
    self.control_points = make_coordinate_grid(points_tps, points_tps).view(1, -1, 2)
    self.control_params = control_params
    self.bs = theta.shape[0]

  def warp_coordinates(self, coordinates):
    theta = self.theta.unsqueeze(1)
    out = torch.matmul(theta[:, :, :, :2], coordinates.unsqueeze(-1)) + theta[:, :, :, 2:]
    out = out.squeeze(-1)
    d = coordinates.view(coordinates.shape[0], -1, 1, 2) - self.control_points.view(1, 1, -1, 2)
    d = torch.abs(d).sum(-1)
    r = d**2 * torch.log(d + 1e-6) * self.control_params
    return out + r.sum(dim=2).view(self.bs, coordinates.shape[1], 1)

  def transform_frame(self, frame):
    h, w = frame.shape[2:]
    grid = make_coordinate_grid(h, w).view(1, h * w, 2).repeat(self.bs, 1, 1)
    grid = self.warp_coordinates(grid).view(self.bs, h, w, 2)
    return F.grid_sample(frame, grid, padding_mode="reflection", align_corners=False)

  def jacobian(self, coordinates):
    if not coordinates.requires_grad:  # as FOMM: keep the graph to the keypoints when there is one
      coordinates = coordinates.detach().requires_grad_(True)
    new = self.warp_coordinates(coordinates)
    gx = torch.autograd.grad(new[..., 0].sum(), coordinates, create_graph=True)[0]
    gy = torch.autograd.grad(new[..., 1].sum(), coordinates, create_graph=True)[0]
    return torch.cat([gx.unsqueeze(-2), gy.unsqueeze(-2)], dim=-2)


class DiscDownBlock2d(nn.Module):
  def __init__(self, cin, cout, norm=False, kernel_size=4, pool=False, sn=False):
    super().__init__()
    self.conv = nn.Conv2d(cin, cout, kernel_size=kernel_size)
    if sn:
      self.conv = nn.utils.spectral_norm(self.conv)
    self.norm = nn.InstanceNorm2d(cout, affine=True) if norm else None
    self.pool = pool

  def forward(self, x):
    out = self.conv(x)
    if self.norm is not None:
      out = self.norm(out)
    out = F.leaky_relu(out, 0.2)
    return F.avg_pool2d(out, (2, 2)) if self.pool else out


class Discriminator(nn.Module):
  def __init__(self, num_channels=3, block_expansion=64, num_blocks=4, max_features=512, sn=False):
    super().__init__()
    self.down_blocks = nn.ModuleList([
        DiscDownBlock2d(num_channels if i == 0 else _ch(block_expansion, max_features, i),
                        _ch(block_expansion, max_features, i + 1), norm=(i != 0),
                        pool=(i != num_blocks - 1), sn=sn)
        for i in range(num_blocks)])
    self.conv = nn.Conv2d(self.down_blocks[-1].conv.out_channels, 1, kernel_size=1)
    if sn:
      self.conv = nn.utils.spectral_norm(self.conv)

  def forward(self, x):
    feats = []
    for b in self.down_blocks:
      x = b(x)
      feats.append(x)
    return feats, self.conv(x)


class MultiScaleDiscriminator(nn.Module):
  def __init__(self, scales=(1,), **kwargs):
    super().__init__()
    self.scales = scales
    self.discs = nn.ModuleDict({str(s).replace(".", "-"): Discriminator(**kwargs) for s in scales})

  def forward(self, pyramid):
    out = {}
    for k, d in self.discs.items():
      key = "prediction_" + k.replace("-", ".")
      out["feature_maps_" + key], out["prediction_map_" + key] = d(pyramid[key])
    return out
