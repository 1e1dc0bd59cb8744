"""Layer-level parity with PyTorch: grid_sample (values and gradients, all padding modes),
bilinear resize, anti-alias downsampling, BatchNorm training statistics, keypoint utilities."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from osmnet_jax.nn import keypoints as kp_lib
from osmnet_jax.nn.batch_norm import BatchNorm
from osmnet_jax.nn.blocks import AntiAliasInterpolation2d, antialias_kernel, upsample_nearest2x
from osmnet_jax.nn.grid_sample import grid_sample, resize_bilinear

sys.path.insert(0, os.path.dirname(__file__))
import torch_fomm  # pylint: disable=g-import-not-at-top,wrong-import-position


def _nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
def test_grid_sample_matches_torch_values_and_grads(padding_mode):
  rng = np.random.RandomState(0)
  x = rng.rand(2, 7, 9, 3).astype(np.float32)
  # Includes points far outside [-1, 1] (several reflections) and exact pixel centres.
  grid = rng.uniform(-2.7, 2.7, (2, 5, 6, 2)).astype(np.float32)
  grid[0, 0, 0] = [-1 + 1 / 9, -1 + 1 / 7]  # centre of pixel (0, 0) in align_corners=False
  cot = rng.randn(2, 5, 6, 3).astype(np.float32)

  xt = _nchw(x).requires_grad_(True)
  gt = torch.from_numpy(grid).requires_grad_(True)
  yt = F.grid_sample(xt, gt, mode="bilinear", padding_mode=padding_mode, align_corners=False)
  (yt * _nchw(cot)).sum().backward()

  def f(x, g):
    return jnp.sum(grid_sample(x, g, padding_mode) * cot)

  y = grid_sample(jnp.asarray(x), jnp.asarray(grid), padding_mode)
  gx, gg = jax.grad(f, argnums=(0, 1))(jnp.asarray(x), jnp.asarray(grid))
  np.testing.assert_allclose(y, yt.detach().numpy().transpose(0, 2, 3, 1), atol=1e-6)
  np.testing.assert_allclose(gx, xt.grad.numpy().transpose(0, 2, 3, 1), atol=1e-5)
  np.testing.assert_allclose(gg, gt.grad.numpy(), atol=1e-4)
  np.testing.assert_allclose(y[0, 0, 0], x[0, 0, 0], atol=1e-6)


def test_grid_sample_identity_and_zero_padding():
  x = np.random.RandomState(1).rand(1, 4, 5, 2).astype(np.float32)
  # align_corners=False pixel centres reproduce the image exactly.
  xs = (2 * np.arange(5) + 1) / 5 - 1
  ys = (2 * np.arange(4) + 1) / 4 - 1
  grid = np.stack(np.meshgrid(xs, ys), -1)[None].astype(np.float32)
  np.testing.assert_allclose(grid_sample(x, grid), x, atol=1e-6)
  # Fully outside -> zeros.
  assert float(jnp.abs(grid_sample(x, grid + 3.0)).max()) == 0.0


@pytest.mark.parametrize("size", [(13, 6), (4, 4), (3, 11)])
def test_resize_bilinear_matches_torch(size):
  x = np.random.RandomState(2).randn(2, 8, 5, 3).astype(np.float32)
  ref = F.interpolate(_nchw(x), size=size, mode="bilinear", align_corners=False)
  np.testing.assert_allclose(resize_bilinear(x, size), ref.numpy().transpose(0, 2, 3, 1), atol=1e-6)


@pytest.mark.parametrize("scale,size", [(0.25, 29), (0.5, 17), (0.125, 40)])
def test_antialias_matches_torch(scale, size):
  x = np.random.RandomState(3).rand(2, size, size, 3).astype(np.float32)
  mod = torch_fomm.AntiAliasInterpolation2d(3, scale)
  ref = mod(_nchw(x)).numpy().transpose(0, 2, 3, 1)
  out = AntiAliasInterpolation2d(scale).apply({}, jnp.asarray(x))
  assert out.shape == ref.shape
  # Ours is two separable passes (k taps each), torch one k*k float32 sum: at scale 1/8 (29x29
  # taps) torch itself is ~1e-6 off the float64 value, ours ~1e-7, so the gap can reach ~1e-6.
  np.testing.assert_allclose(out, ref, atol=2e-6)
  k, ka, kb, stride = antialias_kernel(scale)
  assert k.shape[0] == {0.25: 13, 0.5: 5, 0.125: 29}[scale] and ka == kb and stride == int(1 / scale)  # noqa: E501
  np.testing.assert_allclose(k, mod.weight[0, 0].numpy(), atol=1e-7)


def test_upsample_nearest_matches_torch():
  x = np.random.RandomState(4).rand(1, 3, 5, 2).astype(np.float32)
  ref = F.interpolate(_nchw(x), scale_factor=2).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_array_equal(upsample_nearest2x(x), ref)


def test_batchnorm_train_and_eval_match_torch():
  rng = np.random.RandomState(5)
  x = (rng.randn(4, 3, 5, 6) * 2 + 1).astype(np.float32)  # NHWC, 6 channels
  bn_t = torch.nn.BatchNorm2d(6, affine=True)
  with torch.no_grad():
    bn_t.weight.copy_(torch.from_numpy(rng.rand(6).astype(np.float32) + 0.5))
    bn_t.bias.copy_(torch.from_numpy(rng.randn(6).astype(np.float32)))
  bn_t.train()
  y_t = bn_t(_nchw(x)).detach().numpy().transpose(0, 2, 3, 1)

  params = {"scale": jnp.asarray(bn_t.weight.detach().numpy()), "bias": jnp.asarray(bn_t.bias.detach().numpy())}  # noqa: E501
  stats = {"mean": jnp.zeros(6), "var": jnp.ones(6)}
  y, upd = BatchNorm(use_running_average=False).apply(
      {"params": params, "batch_stats": stats}, jnp.asarray(x), mutable=["batch_stats"]
  )
  np.testing.assert_allclose(y, y_t, atol=1e-5)
  # Running variance uses the unbiased estimate, momentum 0.1 (torch) == 0.9 (Flax).
  np.testing.assert_allclose(upd["batch_stats"]["mean"], bn_t.running_mean.numpy(), atol=1e-6)
  np.testing.assert_allclose(upd["batch_stats"]["var"], bn_t.running_var.numpy(), atol=1e-5)
  bn_t.eval()
  y_eval = BatchNorm(use_running_average=True).apply({"params": params, **upd}, jnp.asarray(x))
  np.testing.assert_allclose(y_eval, bn_t(_nchw(x)).detach().numpy().transpose(0, 2, 3, 1), atol=1e-5)  # noqa: E501


def test_keypoint_utilities_match_torch():
  grid = kp_lib.make_coordinate_grid(4, 5)
  np.testing.assert_allclose(grid, torch_fomm.make_coordinate_grid(4, 5).numpy())
  assert grid[0, 0].tolist() == [-1.0, -1.0] and grid[-1, -1].tolist() == [1.0, 1.0]
  kp = np.random.RandomState(6).uniform(-1, 1, (2, 3, 2)).astype(np.float32)
  g = kp_lib.kp2gaussian(jnp.asarray(kp), 6, 7, 0.01)
  ref = torch_fomm.kp2gaussian(torch.from_numpy(kp), (6, 7), 0.01).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(g, ref, atol=1e-6)
  # A one-hot heatmap at pixel (row 2, col 4) gives that pixel's grid coordinate.
  logits = np.full((1, 6, 7, 1), -1e4, np.float32)
  logits[0, 2, 4, 0] = 0.0
  value = kp_lib.heatmap_expectation(kp_lib.spatial_softmax(jnp.asarray(logits), 0.1))
  np.testing.assert_allclose(value[0, 0], [2 * 4 / 6 - 1, 2 * 2 / 5 - 1], atol=1e-6)


def test_output_blend_occlusion_composes_warped_source_and_decoder():
  """output_blend='occlusion' ([ours]) = occ * deformed + (1 - occ) * FOMM's prediction, same
  parameters; 'none' is FOMM unchanged; a bad value is named."""
  from osmnet_jax import renderer
  from osmnet_jax.models import generator

  cfg = renderer.tiny_config()
  variables = renderer.init(jax.random.PRNGKey(0), cfg, 32)
  src = jax.random.uniform(jax.random.PRNGKey(1), (2, 32, 32, 3))
  kp_s = renderer.detect_keypoints(variables, cfg, src)
  kp_d = jax.tree.map(lambda x: x + 0.05, kp_s)
  fomm = renderer.render(variables, cfg, src, kp_s, kp_d)
  cfg_b = renderer.tiny_config()
  cfg_b.generator.output_blend = "occlusion"
  blended = renderer.render(variables, cfg_b, src, kp_s, kp_d)
  occ = resize_bilinear(fomm["occlusion_map"], (32, 32))
  want = occ * blended["deformed_pixels"] + (1 - occ) * fomm["prediction"]
  np.testing.assert_allclose(blended["prediction"], want, atol=1e-6)
  assert float(jnp.abs(blended["prediction"] - fomm["prediction"]).max()) > 1e-2
  # The pixel warp: identity flow -> the image itself (FOMM's resized absolute flow shrinks it).
  ident = generator.make_coordinate_grid(8, 8)[None].repeat(2, 0)
  np.testing.assert_allclose(generator.deform_pixels(src, ident), src, atol=1e-5)
  assert float(jnp.abs(generator.deform_input(src, ident) - src).mean()) > 1e-2
  # A uniform displacement of one pixel (2/32 in [-1, 1] units) moves the interior by one pixel.
  shifted = generator.deform_pixels(src, ident.at[..., 0].add(2.0 / 32))
  np.testing.assert_allclose(shifted[:, :, :-1], src[:, :, 1:], atol=1e-5)
  cfg_b.generator.output_blend = "skip"
  with pytest.raises(ValueError, match="output_blend='skip'"):
    renderer.render(variables, cfg_b, src, kp_s, kp_d)
