"""Converts First Order Motion Model checkpoints (PyTorch) to osmnet_jax renderer variables.

    variables, cfg = convert.load_fomm("vox-cpk.pth.tar")
    python -m osmnet_jax.convert --from fomm vox-cpk.pth.tar --out W   # W/converted, W/config.json
    variables, cfg = convert.load_audio2head("audio2head.pth.tar")    # + audio2kp, audio2pose
    python -m osmnet_jax.convert --from audio2head audio2head.pth.tar --out W
    (Audio2Head's key mapping and parity traps: osmnet_jax/convert_audio2head.py; `load_fomm`
    also reads that file and returns its renderer parts.)

A FOMM `*.pth.tar` is a dict with state dicts under 'kp_detector', 'generator' and optionally
'discriminator' (plus optimizer states, which are ignored). The Flax modules mirror FOMM's
attribute names, so conversion is a rename plus transposes:
  * `a.b.0.c` -> Flax path `a/b_0/c` (ModuleList indices and the discriminator's ModuleDict scale
    keys such as `discs.0-5` join their parent name: `discs_0-5`);
  * conv `weight` [O,I,kh,kw] -> `kernel` [kh,kw,I,O]; BatchNorm/InstanceNorm `weight` -> `scale`;
  * `running_mean` / `running_var` -> batch_stats `mean` / `var`; `num_batches_tracked` dropped;
  * spectral norm `weight_orig` -> `kernel`, `weight_u` / `weight_v` -> batch_stats `u` / `v`;
  * AntiAliasInterpolation2d's `down.weight` buffer is recomputed in Flax; it is checked against
    the recomputation (and used to infer `scale_factor`) then dropped.
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

import argparse
import re
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from osmnet_jax import renderer
from osmnet_jax.nn.blocks import antialias_kernel
from osmnet_jax.workdir import load_converted, save_converted  # noqa: F401  (re-exported)


class CheckpointMismatchError(ValueError):
  """Checkpoint keys/shapes do not match the architecture inferred from it."""


# ----------------------------------------------------------------------------------------------
# Key mapping.


def _torch_to_path(key: str) -> tuple[list[str], str]:
  """'a.b.0.conv.weight' -> (['a', 'b_0', 'conv'], 'weight')."""
  parts = key.split(".")
  mods, leaf = parts[:-1], parts[-1]
  out: list[str] = []
  for p in mods:
    if re.fullmatch(r"\d+(-\d+)?", p) and out:  # list index, or a scale key like '0-5'
      out[-1] = f"{out[-1]}_{p}"
    else:
      out.append(p)
  return out, leaf


_LEAF = {  # torch leaf -> (collection, flax leaf)
    "weight": ("params", None),  # 'kernel' or 'scale' decided by rank
    "weight_orig": ("params", "kernel"),
    "bias": ("params", "bias"),
    "running_mean": ("batch_stats", "mean"),
    "running_var": ("batch_stats", "var"),
    "weight_u": ("batch_stats", "u"),
    "weight_v": ("batch_stats", "v"),
}


def _flat_flax(tree: dict, prefix=()) -> dict[tuple[str, ...], Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat_flax(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def _flax_to_torch_name(col: str, path: tuple[str, ...], sn: bool) -> str:
  """Inverse of the mapping, for error messages about missing keys."""
  *mods, leaf = path
  leaf = {
      ("params", "kernel"): "weight_orig" if sn else "weight",
      ("params", "scale"): "weight",
      ("params", "bias"): "bias",
      ("batch_stats", "mean"): "running_mean",
      ("batch_stats", "var"): "running_var",
      ("batch_stats", "u"): "weight_u",
      ("batch_stats", "v"): "weight_v",
  }[(col, leaf)]
  names = [re.sub(r"^(.*)_(\d+(?:-\d+)?)$", r"\1.\2", m) for m in mods]
  return ".".join(names + [leaf])


def convert_state_dict(sd: dict[str, np.ndarray], expected: dict, prefix: str) -> dict:
  """Maps a torch state dict onto the structure of `expected` ({'params', 'batch_stats'} of
  ShapeDtypeStructs). Raises CheckpointMismatchError naming every bad key (with `prefix`)."""
  exp_flat = {}
  for col in ("params", "batch_stats"):
    for path, v in _flat_flax(expected.get(col, {})).items():
      exp_flat[(col,) + path] = v
  sn = any(k.endswith("weight_orig") for k in sd)

  got: dict[tuple[str, ...], np.ndarray] = {}
  extra, bad_shape, bad_buffer = [], [], []
  for key, t in sd.items():
    mods, leaf = _torch_to_path(key)
    if leaf == "num_batches_tracked":
      continue
    if mods and mods[-1] == "down" and leaf == "weight" and t.ndim == 4 and t.shape[1] == 1:
      # AntiAliasInterpolation2d buffer: recomputed in Flax; must agree with our kernel.
      scale = _antialias_scale(t)
      if scale is None:
        bad_buffer.append(f"{prefix}{key} (not a FOMM anti-alias Gaussian kernel)")
      continue
    if leaf not in _LEAF:
      extra.append(f"{prefix}{key}")
      continue
    col, fl = _LEAF[leaf]
    if fl is None:
      fl = "kernel" if t.ndim == 4 else "scale"
    if fl == "kernel" and t.ndim == 4:
      t = np.transpose(t, (2, 3, 1, 0))  # OIHW -> HWIO
    path = (col,) + tuple(mods) + (fl,)
    if path not in exp_flat:
      extra.append(f"{prefix}{key}")
      continue
    if tuple(t.shape) != tuple(exp_flat[path].shape):
      bad_shape.append(
          f"{prefix}{key}: checkpoint {tuple(sd[key].shape)} vs expected "
          f"{_torch_shape(exp_flat[path].shape, fl)}"
      )
      continue
    got[path] = np.asarray(t, np.float32)
  missing = [
      prefix + _flax_to_torch_name(p[0], p[1:], sn) for p in exp_flat if p not in got
  ]
  missing = [m for m in missing if m not in {b.split(":")[0] for b in bad_shape}]
  raise_mismatch("FOMM checkpoint does not match", missing, extra, bad_shape, bad_buffer)
  return nest_paths(got)


def raise_mismatch(header: str, missing, extra, bad_shape, bad_buffer) -> None:
  """Raises CheckpointMismatchError listing every offending torch key, if there is any."""
  if not (missing or extra or bad_shape or bad_buffer):
    return
  lines = []
  for title, items in (("missing keys", missing), ("unexpected keys", extra),
                       ("mis-shaped keys", bad_shape), ("bad buffers", bad_buffer)):
    if items:
      lines.append(f"{title} ({len(items)}):\n  " + "\n  ".join(sorted(items)))
  raise CheckpointMismatchError(f"{header} the architecture:\n" + "\n".join(lines))


def nest_paths(got: dict) -> dict:
  """{(collection, module, ..., leaf): array} -> {'params': {...}, 'batch_stats': {...}}."""
  out: dict = {"params": {}, "batch_stats": {}}
  for path, v in got.items():
    node = out
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = jnp.asarray(v)
  return out


def _torch_shape(shape, flax_leaf):
  if flax_leaf == "kernel" and len(shape) == 4:
    kh, kw, i, o = shape
    return (o, i, kh, kw)
  return tuple(shape)


# ----------------------------------------------------------------------------------------------
# Config inference.


def _antialias_scale(buf: np.ndarray) -> float | None:
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


def _count(sd: dict, pattern: str) -> int:
  idx = {int(m.group(1)) for k in sd if (m := re.match(pattern, k))}
  return max(idx) + 1 if idx else 0


def _hourglass_params(sd: dict, base: str, prefix: str) -> dict:
  n = _count(sd, re.escape(base) + r"encoder\.down_blocks\.(\d+)\.")
  if n == 0:
    raise CheckpointMismatchError(f"missing keys (1):\n  {prefix}{base}encoder.down_blocks.0.conv.weight")
  chans = [
      _need(sd, f"{base}encoder.down_blocks.{i}.conv.weight", prefix).shape[0] for i in range(n)
  ]
  be = _need(sd, f"{base}decoder.up_blocks.{n - 1}.conv.weight", prefix).shape[0]
  return dict(block_expansion=int(be), num_blocks=int(n), max_features=int(max(chans)))


def _scale_of(sd: dict, key: str, prefix: str) -> float:
  if key not in sd:
    return 1.0
  s = _antialias_scale(sd[key])
  if s is None:
    raise CheckpointMismatchError(f"bad buffers (1):\n  {prefix}{key} (not a FOMM anti-alias kernel)")
  return s


def infer_config(kp_sd: dict, gen_sd: dict, disc_sd: dict | None = None) -> ml_collections.ConfigDict:
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
    cfg.kp_detector.single_jacobian_map = bool(kp_sd["jacobian.weight"].shape[0] == 4 and cfg.num_kp != 1)

  g = cfg.generator
  g.block_expansion = int(first.shape[0])
  n_down = _count(gen_sd, r"down_blocks\.(\d+)\.")
  g.num_down_blocks = n_down
  chans = [first.shape[0]] + [
      _need(gen_sd, f"down_blocks.{i}.conv.weight", "generator.").shape[0] for i in range(n_down)
  ]
  g.max_features = int(max(chans))
  g.num_bottleneck_blocks = _count(gen_sd, r"bottleneck\.r(\d+)\.")
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
    n = _count(disc_sd, re.escape(base) + r"down_blocks\.(\d+)\.")
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


def _to_numpy_sd(sd) -> dict[str, np.ndarray]:
  return {k: v.detach().cpu().numpy() for k, v in sd.items() if hasattr(v, "detach")}


def read_torch_checkpoint(path: str) -> dict:
  """torch.load with weights_only=True, falling back to False for old pickles (trusted files)."""
  import torch  # pylint: disable=g-import-not-at-top  (optional dependency)

  try:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
  except Exception:  # pylint: disable=broad-except  (old checkpoints pickle extra objects)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
  return ckpt


def convert_fomm(ckpt: dict) -> tuple[dict, ml_collections.ConfigDict]:
  """Converts an in-memory FOMM checkpoint dict (torch tensors or numpy arrays)."""
  for name in ("kp_detector", "generator"):
    if name not in ckpt:
      raise CheckpointMismatchError(
          f"not a FOMM checkpoint: no '{name}' entry (top-level keys: {sorted(ckpt)})"
      )
  sds = {
      name: (_to_numpy_sd(ckpt[name]) if not all(isinstance(v, np.ndarray) for v in ckpt[name].values())
             else dict(ckpt[name]))
      for name in ("kp_detector", "generator", "discriminator")
      if ckpt.get(name)
  }
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
      variables[name] = convert_state_dict(sd, expected[name], f"{name}.")
    except CheckpointMismatchError as e:
      errors.append(str(e).split("\n", 1)[1])
  if errors:
    raise CheckpointMismatchError("FOMM checkpoint does not match the architecture:\n" + "\n".join(errors))
  return variables, cfg


def load_fomm(path: str) -> tuple[dict, ml_collections.ConfigDict]:
  """Reads a FOMM `*.pth.tar` into (variables, cfg) for `osmnet_jax.renderer`."""
  return convert_fomm(read_torch_checkpoint(path))


def load_audio2head(path: str) -> tuple[dict, ml_collections.ConfigDict]:
  """Reads Audio2Head's `audio2head.pth.tar` into (variables, cfg): variables for 'kp_detector',
  'generator' (the renderer; `cfg` is a renderer config) plus 'audio2kp' and 'audio2pose' (their
  sizes in `cfg.audio2kp` / `cfg.audio2pose`). See `osmnet_jax.convert.audio2head`."""
  from osmnet_jax.convert import audio2head as convert_audio2head  # pylint: disable=g-import-not-at-top  (imports us)

  return convert_audio2head.convert_audio2head(read_torch_checkpoint(path))


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m osmnet_jax.convert", description=__doc__.split("\n")[0])
  parser.add_argument("--from", dest="src", choices=["fomm", "audio2head"], required=True)
  parser.add_argument("ckpt")
  parser.add_argument("--out", required=True)
  args = parser.parse_args(argv)
  variables, cfg = (load_audio2head if args.src == "audio2head" else load_fomm)(args.ckpt)
  path = save_converted(variables, cfg, args.out)
  n = sum(x.size for x in jax.tree.leaves(variables))
  print(f"converted {args.ckpt} ({n} values, modules {sorted(variables)}) -> {path}")


if __name__ == "__main__":
  main()
