"""One renderer training step, JAX vs the PyTorch FOMM mirror in train mode: same losses
(perceptual pyramid with a VGG19 state dict, equivariance under the same TPS), same BatchNorm
running statistics after the step (three keypoint-detector calls in order) and same gradients."""

import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import torch

from osmnet_jax import renderer
from osmnet_jax.convert import fomm as convert
from osmnet_jax.losses import equivariance, perceptual
from osmnet_jax.stages import renderer_step as rs

sys.path.insert(0, os.path.dirname(__file__))
import torch_fomm  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_train_step_matches_torch(tmp_path):
  cfg = renderer.tiny_config()
  cfg.train.scales = (1, 0.5)
  cfg.train.loss_weights.perceptual = (10.0, 10.0, 10.0)  # relu1_1..relu3_1 keep the test fast
  kp_t, gen_t = torch_fomm.build(cfg)
  torch_fomm.randomize_(kp_t, 0)
  torch_fomm.randomize_(gen_t, 1)
  variables, _ = convert.convert_fomm({"kp_detector": kp_t.state_dict(), "generator": gen_t.state_dict()})  # noqa: E501
  torch.manual_seed(0)
  vgg_t = torch_fomm.VGG19Torchvision().eval()
  vgg_path = str(tmp_path / "vgg19.pth")
  torch.save(vgg_t.state_dict(), vgg_path)

  stage = rs.RendererStage(cfg, backbone=perceptual.make_backbone("vgg19", 3, vgg_path))
  state = stage.state_from_variables(variables)
  r = np.random.RandomState(0)
  low = r.rand(4, 4, 4, 3)
  frames = (np.kron(low, np.ones((1, 16, 16, 1))) * 255).astype(np.uint8)
  batch = {"source": frames[:2], "driving": frames[2:]}
  rng = jax.random.PRNGKey(7)
  new_state, metrics = jax.jit(stage.train_step)(state, batch, rng)

  # --- torch, FOMM's GeneratorFullModel in train mode with the same TPS draw.
  tps = equivariance.random_tps(jax.random.fold_in(rng, 0), jnp.arange(2), **dict(cfg.train.transform_params))  # noqa: E501
  tt = torch_fomm.Transform(torch.from_numpy(np.array(tps["theta"])),
                            torch.from_numpy(np.array(tps["control_params"]))[:, None, :], 5)
  to_t = lambda x: torch.from_numpy(x.astype(np.float32).transpose(0, 3, 1, 2) / 255.0)
  src, drv = to_t(batch["source"]), to_t(batch["driving"])
  kp_t.train()
  gen_t.train()
  ref = torch_fomm.generator_full_loss(kp_t, gen_t, vgg_t, src, drv, tt, cfg.train.scales,
                                       cfg.train.loss_weights.perceptual[:3])
  perc, eq_v, eq_j, total = (ref[k] for k in ("perceptual", "equivariance_value",
                                              "equivariance_jacobian", "total"))
  total.backward()

  print({k: float(v) for k, v in metrics.items()})
  for name, ref in (("perceptual", perc), ("equivariance_value", eq_v),
                    ("equivariance_jacobian", eq_j), ("total", total)):
    np.testing.assert_allclose(float(metrics[name]), float(ref.detach()), rtol=2e-5, err_msg=name)

  # Running statistics: torch momentum 0.1, unbiased variance, three detector calls.
  bs = new_state.batch_stats
  pairs = [
      (bs["kp_detector"]["predictor"]["encoder"]["down_blocks_0"]["norm"], kp_t.predictor.encoder.down_blocks[0].norm),  # noqa: E501
      (bs["kp_detector"]["predictor"]["decoder"]["up_blocks_2"]["norm"], kp_t.predictor.decoder.up_blocks[2].norm),  # noqa: E501
      (bs["generator"]["bottleneck"]["r1"]["norm2"], gen_t.bottleneck.r1.norm2),
      (bs["generator"]["dense_motion_network"]["hourglass"]["encoder"]["down_blocks_1"]["norm"],
       gen_t.dense_motion_network.hourglass.encoder.down_blocks[1].norm),
  ]
  for ours, ref in pairs:
    np.testing.assert_allclose(ours["mean"], ref.running_mean.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours["var"], ref.running_var.numpy(), rtol=1e-4, atol=1e-6)

  # Gradients: Adam's first moment after one step is (1 - b1) g = 0.5 g.
  mu = {k: v[0].mu for k, v in new_state.opt_state.items()}
  grads = [
      (mu["generator"]["final"]["kernel"], gen_t.final.weight.grad),
      (mu["generator"]["dense_motion_network"]["mask"]["kernel"], gen_t.dense_motion_network.mask.weight.grad),  # noqa: E501
      (mu["generator"]["first"]["conv"]["kernel"], gen_t.first.conv.weight.grad),
      (mu["kp_detector"]["kp"]["kernel"], kp_t.kp.weight.grad),
      (mu["kp_detector"]["jacobian"]["kernel"], kp_t.jacobian.weight.grad),
      (mu["kp_detector"]["predictor"]["encoder"]["down_blocks_0"]["conv"]["kernel"],
       kp_t.predictor.encoder.down_blocks[0].conv.weight.grad),
  ]
  for m, g in grads:
    g = g.numpy().transpose(2, 3, 1, 0)
    assert np.abs(g).max() > 0
    print("grad rel err", np.abs(2.0 * np.asarray(m) - g).max() / np.abs(g).max())
    np.testing.assert_allclose(2.0 * np.asarray(m), g, atol=2e-3 * np.abs(g).max())


def test_renderer_optimizer_matches_torch_adam_with_multisteplr():
  """The renderer's optimizer (FOMM's Adam + MultiStepLR, milestones counted in optimizer steps,
  scheduler stepped after every update) gives torch's parameters step for step, across both
  decays: configs/vox256.py's FOMM milestones and configs/quality.py's decay rest on it."""
  tcfg = ml_collections.ConfigDict(dict(b1=0.5, b2=0.999, lr_milestones=(3, 5), lr_gamma=0.1))
  tx = rs._adam(2e-3, tcfg)  # pylint: disable=protected-access
  rng = np.random.default_rng(0)
  w0 = rng.normal(size=(4, 3)).astype(np.float32)
  grads = rng.normal(size=(8, 4, 3)).astype(np.float32)

  w = jnp.asarray(w0)
  opt = tx.init(w)
  ours, steps = [], []
  for g in grads:
    upd, opt = tx.update(jnp.asarray(g), opt, w)
    steps.append(np.abs(np.asarray(upd)).max())
    w = w + upd
    ours.append(np.asarray(w))

  wt = torch.nn.Parameter(torch.from_numpy(w0.copy()))
  topt = torch.optim.Adam([wt], lr=2e-3, betas=(0.5, 0.999), eps=1e-8)
  sched = torch.optim.lr_scheduler.MultiStepLR(topt, milestones=[3, 5], gamma=0.1)
  for g, mine in zip(grads, ours):
    wt.grad = torch.from_numpy(g.copy())
    topt.step()
    sched.step()
    np.testing.assert_allclose(mine, wt.detach().numpy(), rtol=0, atol=1e-6)
  # The decays are real: Adam's step is ~lr per element, 2e-3 -> 2e-4 -> 2e-5.
  assert 1e-3 < steps[2] < 4e-3 and 1e-4 < steps[3] < 4e-4 and 1e-5 < steps[5] < 4e-5
