"""Converts First Order Motion Model checkpoints (PyTorch) to osmnet_jax renderer variables.

    variables, cfg = convert.load_fomm("vox-cpk.pth.tar")
    python -m osmnet_jax.convert --from fomm vox-cpk.pth.tar --out W   # W/converted, W/config.json

`load_fomm` also reads Audio2Head's file and returns its renderer parts
(osmnet_jax/convert/audio2head.py converts the whole file).

A FOMM `*.pth.tar` is a dict with state dicts under 'kp_detector', 'generator' and optionally
'discriminator' (plus optimizer states, which are ignored). The Flax modules mirror FOMM's
attribute names, so conversion is the rename plus transposes of `torch_state.convert_state_dict`
(`a.b.0.c` -> `a/b_0/c`, the discriminator's ModuleDict scale keys `discs.0-5` -> `discs_0-5`;
conv kernels OIHW -> HWIO; BatchNorm/InstanceNorm `weight` -> `scale`; running stats ->
batch_stats; spectral norm `weight_orig` -> `kernel`, `weight_u` / `weight_v` -> batch_stats
`u` / `v`). AntiAliasInterpolation2d's `down.weight` buffer is recomputed in Flax; it is checked
against the recomputation (and used to infer `scale_factor`) then dropped.
The config is inferred from tensor shapes. Any missing, unexpected or mis-shaped key raises a
`CheckpointMismatchError` that lists every offending torch key. Hyper-parameters that leave no
trace in the weights keep their vox-256 values: keypoint temperature 0.1, kp_variance 0.01,
keypoint-head padding 0.

Parity traps (found writing the JAX port against a PyTorch mirror; all reproduced here):
  1. grid_sample: FOMM calls `F.grid_sample` without `align_corners`, which since torch 1.3 means
     align_corners=False (pixel i at (2i+1)/W - 1) with zero padding, while its coordinate grids
     and keypoints use the align_corners=True convention (pixel i at 2i/(W-1) - 1). The two are
     mixed on purpose; `jax.scipy.ndimage.map_coordinates` or an align_corners=True sampler is off
     by half a pixel. The TPS augmentation uses padding_mode='reflection' (reflect about -0.5 and
     W - 0.5, then clip).
  2. Conv padding: torch `padding=p` is symmetric explicit padding; Flax 'SAME' is not the same
     for the padding-0 7x7 keypoint/Jacobian heads (heatmap is 6 px smaller than the features)
     nor for the discriminator's 4x4 padding-0 convs. All convs here pass explicit padding.
  3. Nearest x2 upsampling = `jnp.repeat` on H and W (F.interpolate's default mode).
  4. BatchNorm: torch momentum 0.1 == Flax momentum 0.9; eps 1e-5; torch updates the running
     variance with the *unbiased* batch variance while normalising with the biased one;
     affine=True (scale/bias). Eval mode (running stats) must be used to compare with `.eval()`.
  5. AntiAliasInterpolation2d: kernel size 2*round(4 sigma)+1 with sigma = (1/s - 1)/2 (13 at
     s=0.25, 5 at s=0.5, 29 at s=0.125; always odd, but the even case pads (ka, ka-1)); torch
     convolves at full resolution and slices [::1/s]; a stride-1/s conv gives the same pixels.
     The Gaussian is built in float32 and normalised after the outer product.
  6. Keypoint softmax is over the flattened spatial dims of each channel, after dividing by the
     temperature; NHWC needs the softmax over axes (H, W) jointly, not over the channel axis (the
     dense-motion *mask* softmax, in contrast, is over the K+1 channels).
  7. Channel layouts: the dense-motion hourglass input is torch's `cat([heatmap, deformed], 2)`
     viewed as ((K+1)*(C+1)) channels, i.e. motion-major; the Jacobian map is viewed as (K, 4)
     with 4 = row-major 2x2. NHWC reshapes must keep these orders.
  8. Occlusion map / flow resizing: `F.interpolate(mode='bilinear')` defaults to
     align_corners=False with half-pixel centres, clamps negative source positions to 0 and never
     anti-aliases; `jax.image.resize` anti-aliases when shrinking, so a gather-based resize is
     used (`nn.grid_sample.resize_bilinear`). The 'deformed' output always hits this path (64->256).
  9. 2x2 average pooling floors odd sizes like `nn.AvgPool2d(2)`.
 10. Buffers and bookkeeping: `down.weight` (anti-alias kernel) and `num_batches_tracked` are in
     the state dict but are not Flax variables; spectral norm stores `weight_orig/_u/_v`; the
     discriminator's ModuleDict keys are scales with '.' -> '-' (`discs.0-5`), kept in order.
Training-side traps (tests/test_renderer_train_torch.py checks them against the torch mirror):
 11. The keypoint detector runs three times per step (source, driving, TPS-warped driving), each
     a separate BatchNorm batch and running-stat update, in that order.
 12. The TPS Jacobian is taken with create_graph=True at the *predicted* keypoints, so the
     equivariance-Jacobian loss has a second-order path into the detector (jacfwd inside grad).
 13. Per-sample TPS noise must not depend on the device layout (drawn from fold_in(rng, global
     sample index)); in float32 Adam's first steps turn rounding noise in near-zero gradients
     (conv biases before BatchNorm have true gradient 0) into +-lr, so single-device, jit-mesh and
     pmap runs agree tightly only in float64 (tests/test_renderer_train.py).
"""

import functools
import re

import jax
import ml_collections
import numpy as np

from osmnet_jax import renderer
from osmnet_jax.convert import torch_state
from osmnet_jax.convert.torch_state import (
  CheckpointMismatchError,
  read_torch_checkpoint,
)
from osmnet_jax.nn.blocks import antialias_kernel
from osmnet_jax.workdir import load_converted, save_converted  # noqa: F401  (re-exported)

__all__ = ["CheckpointMismatchError", "antialias_scale", "convert_fomm", "infer_config",
           "load_converted", "load_fomm", "read_torch_checkpoint", "save_converted"]


def _is_antialias_buffer(key: str, t: np.ndarray) -> bool:
  """AntiAliasInterpolation2d's `down.weight` [C,1,k,k]: recomputed in Flax, not a variable."""
  return (key == "down.weight" or key.endswith(".down.weight")) and t.ndim == 4 and t.shape[1] == 1


def convert_part(sd: dict[str, np.ndarray], expected: dict, prefix: str) -> dict:
  """One FOMM state dict (numpy) onto `expected` ({'params', 'batch_stats'} of
  ShapeDtypeStructs). Raises CheckpointMismatchError naming every bad key (with `prefix`)."""
  buffers = [k for k, t in sd.items() if _is_antialias_buffer(k, t)]
  bad = [f"{prefix}{k} (not a FOMM anti-alias Gaussian kernel)" for k in buffers
         if antialias_scale(sd[k]) is None]
  spectral_norm = any(k.endswith("weight_orig") for k in sd)
  name_fn = functools.partial(torch_state.torch_key,
                              kernel="weight_orig" if spectral_norm else "weight")
  return torch_state.convert_state_dict(
      sd, expected, header="FOMM checkpoint does not match", prefix=prefix, name_fn=name_fn,
      skip=buffers, bad_buffers=bad)


# ----------------------------------------------------------------------------------------------
# Config inference.


def antialias_scale(buf: np.ndarray) -> float | None:
  """Finds s = 1/n whose FOMM kernel equals the buffer [C,1,k,k]; None if none does."""
  k = buf.shape[-1]
  for n in range(2, 33):
    kernel, *_ = antialias_kernel(1.0 / n)
    if kernel.shape[0] == k and np.allclose(buf[0, 0], kernel, atol=1e-6):
      return 1.0 / n
  return None


def _need(sd: dict, key: str, prefix: str) -> np.ndarray:
  if key not in sd:
    raise CheckpointMismatchError(f"missing keys (1):\n  {prefix}{key}")
  return sd[key]


def _hourglass_params(sd: dict, base: str, prefix: str) -> dict:
  n = torch_state.count_indices(sd, re.escape(base) + r"encoder\.down_blocks\.(\d+)\.")
  if n == 0:
    raise CheckpointMismatchError(
        f"missing keys (1):\n  {prefix}{base}encoder.down_blocks.0.conv.weight")
  chans = [
      _need(sd, f"{base}encoder.down_blocks.{i}.conv.weight", prefix).shape[0] for i in range(n)
  ]
  be = _need(sd, f"{base}decoder.up_blocks.{n - 1}.conv.weight", prefix).shape[0]
  return dict(block_expansion=int(be), num_blocks=int(n), max_features=int(max(chans)))


def _scale_of(sd: dict, key: str, prefix: str) -> float:
  if key not in sd:
    return 1.0
  s = antialias_scale(sd[key])
  if s is None:
    raise CheckpointMismatchError(
        f"bad buffers (1):\n  {prefix}{key} (not a FOMM anti-alias kernel)")
  return s


def infer_config(kp_sd: dict, gen_sd: dict,
                 disc_sd: dict | None = None) -> ml_collections.ConfigDict:
  """Renderer config from FOMM state dicts (numpy arrays)."""
  cfg = renderer.vox256_config()
  first = _need(gen_sd, "first.conv.weight", "generator.")
  cfg.num_channels = int(first.shape[1])
  cfg.num_kp = int(_need(kp_sd, "kp.weight", "kp_detector.").shape[0])
  cfg.estimate_jacobian = "jacobian.weight" in kp_sd

  hg = _hourglass_params(kp_sd, "predictor.", "kp_detector.")
  cfg.kp_detector.block_expansion = hg["block_expansion"]
  cfg.kp_detector.num_blocks = hg["num_blocks"]
  cfg.kp_detector.max_features = hg["max_features"]
  cfg.kp_detector.scale_factor = _scale_of(kp_sd, "down.weight", "kp_detector.")
  if cfg.estimate_jacobian:
    cfg.kp_detector.single_jacobian_map = bool(
        kp_sd["jacobian.weight"].shape[0] == 4 and cfg.num_kp != 1)

  g = cfg.generator
  g.block_expansion = int(first.shape[0])
  n_down = torch_state.count_indices(gen_sd, r"down_blocks\.(\d+)\.")
  g.num_down_blocks = n_down
  chans = [first.shape[0]] + [
      _need(gen_sd, f"down_blocks.{i}.conv.weight", "generator.").shape[0] for i in range(n_down)
  ]
  g.max_features = int(max(chans))
  g.num_bottleneck_blocks = torch_state.count_indices(gen_sd, r"bottleneck\.r(\d+)\.")
  g.estimate_occlusion_map = "dense_motion_network.occlusion.weight" in gen_sd
  dm = _hourglass_params(gen_sd, "dense_motion_network.hourglass.", "generator.")
  dm["scale_factor"] = _scale_of(gen_sd, "dense_motion_network.down.weight", "generator.")
  g.dense_motion_params = dm

  if disc_sd:
    d = cfg.discriminator
    keys = list(dict.fromkeys(k.split(".")[1] for k in disc_sd if k.startswith("discs.")))
    d.scales = tuple(float(k.replace("-", ".")) if "-" in k else int(k) for k in keys)
    base = f"discs.{keys[0]}."
    d.sn = any(k.endswith("weight_orig") for k in disc_sd)
    wname = "weight_orig" if d.sn else "weight"
    n = torch_state.count_indices(disc_sd, re.escape(base) + r"down_blocks\.(\d+)\.")
    w0 = _need(disc_sd, f"{base}down_blocks.0.conv.{wname}", "discriminator.")
    d.num_blocks = n
    d.block_expansion = int(w0.shape[0] // 2)
    d.max_features = int(
        max(disc_sd[f"{base}down_blocks.{i}.conv.{wname}"].shape[0] for i in range(n))
    )
    d.use_kp = bool(w0.shape[1] > cfg.num_channels)
    d.enabled = True
  return cfg


# ----------------------------------------------------------------------------------------------
# Loading.


def convert_fomm(ckpt: dict) -> tuple[dict, ml_collections.ConfigDict]:
  """Converts an in-memory FOMM checkpoint dict (torch tensors or numpy arrays)."""
  for name in ("kp_detector", "generator"):
    if name not in ckpt:
      raise CheckpointMismatchError(
          f"not a FOMM checkpoint: no '{name}' entry (top-level keys: {sorted(ckpt)})"
      )
  sds = {name: torch_state.numpy_state_dict(ckpt[name])
         for name in ("kp_detector", "generator", "discriminator") if ckpt.get(name)}
  cfg = infer_config(sds["kp_detector"], sds["generator"], sds.get("discriminator"))
  # Variable shapes do not depend on the image size; pick one every down-sampling path divides.
  dm = cfg.generator.dense_motion_params
  image_size = int(max(
      256,
      8 * 2**cfg.kp_detector.num_blocks / cfg.kp_detector.scale_factor,
      2 * 2**dm.num_blocks / dm.scale_factor,
      2 * 2**cfg.generator.num_down_blocks,
  ))
  expected = jax.eval_shape(
      lambda: renderer._init(  # pylint: disable=protected-access
          jax.random.PRNGKey(0), cfg, image_size, "discriminator" in sds
      )
  )
  errors, variables = [], {}
  for name, sd in sds.items():
    try:
      variables[name] = convert_part(sd, expected[name], f"{name}.")
    except CheckpointMismatchError as e:
      errors.append(str(e).split("\n", 1)[1])
  if errors:
    raise CheckpointMismatchError(
        "FOMM checkpoint does not match the architecture:\n" + "\n".join(errors))
  return variables, cfg


def load_fomm(path: str) -> tuple[dict, ml_collections.ConfigDict]:
  """Reads a FOMM `*.pth.tar` (or Audio2Head's file: its renderer parts) into (variables, cfg)
  for `osmnet_jax.renderer`."""
  return convert_fomm(read_torch_checkpoint(path))


