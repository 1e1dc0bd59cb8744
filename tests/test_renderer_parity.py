"""Cross-framework parity: PyTorch FOMM mirror (random weights) -> .pth.tar -> convert -> JAX.

Compares keypoints, Jacobians, dense-motion mask, occlusion, deformation, sparse/dense deformed
images and the prediction module by module, in eval mode, float32. Also checks that broken
checkpoints fail loudly, naming the offending keys, and the CLI round trip.
"""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch

from osmnet_jax import convert, renderer

sys.path.insert(0, os.path.dirname(__file__))
import torch_fomm  # pylint: disable=g-import-not-at-top,wrong-import-position

TOL = 1e-4


def _smooth_images(b, size, seed):
  """Random smooth images in [0,1]: low-res noise upsampled (more image-like than white noise)."""
  g = torch.Generator().manual_seed(seed)
  low = torch.rand(b, 3, max(size // 8, 2), max(size // 8, 2), generator=g)
  img = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)  # noqa: E501
  return (img + 0.05 * torch.rand(b, 3, size, size, generator=g)).clamp(0, 1)


def _save_fomm(cfg, path, seed=0):
  kp, gen = torch_fomm.build(cfg)
  torch_fomm.randomize_(kp, seed)
  torch_fomm.randomize_(gen, seed + 1)
  kp.eval()
  gen.eval()
  torch.save(
      {"kp_detector": kp.state_dict(), "generator": gen.state_dict(), "epoch": 3,
       "optimizer_generator": {"state": {}, "param_groups": []}},
      path,
  )
  return kp, gen


def _nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


def _run_parity(cfg, size, batch, tmp_path):
  path = str(tmp_path / "fomm.pth.tar")
  kp_t, gen_t = _save_fomm(cfg, path)
  variables, cfg_j = convert.load_fomm(path)
  # Inferred config reproduces the topology.
  for k in ("block_expansion", "num_blocks", "max_features", "scale_factor"):
    assert cfg_j.kp_detector[k] == cfg.kp_detector[k], k
  assert dict(cfg_j.generator.dense_motion_params) == dict(cfg.generator.dense_motion_params)
  assert cfg_j.generator.num_bottleneck_blocks == cfg.generator.num_bottleneck_blocks

  src = _smooth_images(batch, size, 1)
  drv = _smooth_images(batch, size, 2)
  with torch.no_grad():
    kp_s_t = kp_t(src)
    kp_d_t = kp_t(drv)
    out_t = gen_t(src, kp_d_t, kp_s_t)

  src_j, drv_j = _nhwc(src), _nhwc(drv)
  kp_s_j = renderer.detect_keypoints(variables, cfg_j, src_j)
  kp_d_j = renderer.detect_keypoints(variables, cfg_j, drv_j)
  errs = {}
  errs["kp_value"] = np.abs(np.asarray(kp_s_j["value"]) - kp_s_t["value"].numpy()).max()
  errs["kp_jacobian"] = max(
      np.abs(np.asarray(kp_s_j["jacobian"]) - kp_s_t["jacobian"].numpy()).max(),
      np.abs(np.asarray(kp_d_j["jacobian"]) - kp_d_t["jacobian"].numpy()).max(),
  )
  # Render from torch's keypoints so generator errors are measured in isolation.
  to_np = lambda kp: {k: v.numpy() for k, v in kp.items()}
  out_j = renderer.render(variables, cfg_j, src_j, to_np(kp_s_t), to_np(kp_d_t))
  errs["mask"] = np.abs(np.asarray(out_j["mask"]) - _nhwc(out_t["mask"])).max()
  errs["occlusion_map"] = np.abs(
      np.asarray(out_j["occlusion_map"]) - _nhwc(out_t["occlusion_map"])
  ).max()
  errs["deformation"] = np.abs(np.asarray(out_j["deformation"]) - out_t["deformation"].numpy()).max()  # noqa: E501
  sd_t = out_t["sparse_deformed"].numpy().transpose(0, 1, 3, 4, 2)
  errs["sparse_deformed"] = np.abs(np.asarray(out_j["sparse_deformed"]) - sd_t).max()
  errs["deformed"] = np.abs(np.asarray(out_j["deformed"]) - _nhwc(out_t["deformed"])).max()
  errs["prediction"] = np.abs(np.asarray(out_j["prediction"]) - _nhwc(out_t["prediction"])).max()
  print(f"\nparity {size}px:", {k: f"{v:.2e}" for k, v in errs.items()})
  # Non-trivial outputs: the comparison would be vacuous on constant maps.
  assert np.asarray(out_j["prediction"]).std() > 1e-3
  assert np.asarray(out_j["mask"]).std() > 1e-3
  assert np.abs(np.asarray(kp_s_j["value"]) - np.asarray(kp_d_j["value"])).max() > 1e-4
  for k, v in errs.items():
    assert v <= TOL, (k, v)
  return errs


def test_parity_tiny_64(tmp_path):
  _run_parity(renderer.tiny_config(), 64, 2, tmp_path)


def test_parity_resize_paths_32(tmp_path):
  """Dense motion at 1/2 resolution while features are at 1/4: the flow and the occlusion map are
  bilinearly *down*-sampled (torch: no anti-aliasing); kp detector at 1/2 (5-tap kernel)."""
  cfg = renderer.tiny_config()
  cfg.kp_detector.scale_factor = 0.5
  cfg.generator.dense_motion_params = dict(
      block_expansion=8, max_features=32, num_blocks=2, scale_factor=0.5
  )
  _run_parity(cfg, 32, 1, tmp_path)


def test_parity_vox256_256(tmp_path):
  _run_parity(renderer.vox256_config(), 256, 1, tmp_path)


def _tiny_state_dicts():
  kp, gen = torch_fomm.build(renderer.tiny_config())
  return kp.state_dict(), gen.state_dict()


def test_missing_key_is_named(tmp_path):
  kp_sd, gen_sd = _tiny_state_dicts()
  del gen_sd["bottleneck.r1.conv2.weight"]
  del kp_sd["predictor.decoder.up_blocks.0.norm.running_var"]
  with pytest.raises(convert.CheckpointMismatchError) as e:
    convert.convert_fomm({"kp_detector": kp_sd, "generator": gen_sd})
  msg = str(e.value)
  assert "generator.bottleneck.r1.conv2.weight" in msg
  assert "kp_detector.predictor.decoder.up_blocks.0.norm.running_var" in msg
  assert "missing keys" in msg


def test_wrong_shape_and_extra_key_are_named(tmp_path):
  kp_sd, gen_sd = _tiny_state_dicts()
  gen_sd["up_blocks.0.conv.weight"] = torch.zeros(5, 5, 3, 3)
  gen_sd["final.extra"] = torch.zeros(3)
  path = str(tmp_path / "bad.pth.tar")
  torch.save({"kp_detector": kp_sd, "generator": gen_sd}, path)
  with pytest.raises(convert.CheckpointMismatchError) as e:
    convert.load_fomm(path)
  msg = str(e.value)
  assert "generator.up_blocks.0.conv.weight: checkpoint (5, 5, 3, 3)" in msg
  assert "generator.final.extra" in msg
  with pytest.raises(convert.CheckpointMismatchError, match="no 'generator' entry"):
    convert.convert_fomm({"kp_detector": kp_sd})


def test_cli_roundtrip(tmp_path):
  cfg = renderer.tiny_config()
  path = str(tmp_path / "fomm.pth.tar")
  _save_fomm(cfg, path, seed=5)
  out = tmp_path / "W"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  subprocess.run(
      [sys.executable, "-m", "osmnet_jax.convert", "--from", "fomm", path, "--out", str(out)],
      check=True, env=env, cwd=os.path.dirname(os.path.dirname(__file__)),
  )
  assert (out / "config.json").exists()
  restored, cfg_r = convert.load_converted(str(out))
  direct, cfg_d = convert.load_fomm(path)
  assert cfg_r.to_json(sort_keys=True) == cfg_d.to_json(sort_keys=True)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), restored, direct)  # noqa: E501
  x = np.random.RandomState(0).rand(1, 32, 32, 3).astype(np.float32)
  kp = renderer.detect_keypoints(restored, cfg_r, x)
  assert kp["value"].shape == (1, 10, 2)
