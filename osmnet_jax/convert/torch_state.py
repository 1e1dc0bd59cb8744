"""PyTorch files -> Flax variables: the one safe checkpoint reader and the one key loop.

`read_torch_checkpoint` is the only place in osmnet_jax that opens a .pth / .pth.tar / .model
file (FOMM, Audio2Head, SyncNet, FID Inception and VGG19 weights all go through it). It calls
`torch.load(weights_only=True)` and nothing else: torch's weights-only unpickler builds tensors,
numbers, strings and containers (dict / OrderedDict / list / tuple) and rejects every other Python
global, so no code in a checkpoint file ever runs. The published files read here (FOMM
vox-cpk.pth.tar and Audio2Head audio2head.pth.tar: dicts of state dicts, optimizer state dicts
and an int epoch; syncnet_python's syncnet_v2.model, pytorch-fid's pt_inception weights and
torchvision's VGG19: plain state dicts) need no extra allowed types, so none are allowed.

`convert_state_dict` maps one torch state dict onto the variables of a Flax module whose
submodules mirror the torch attribute names. It walks the *expected* Flax leaves and names the
torch key each one comes from (`torch_key`, or a per-model `name_fn`):
  * `a/b_0/c` <- `a.b.0.c` (ModuleList / Sequential indices, also nested `res_blocks_0_1` <-
    `res_blocks.0.1`, and ModuleDict scale keys such as `discs_0-5` <- `discs.0-5`);
  * `kernel` <- `weight`: conv [O,I,*k] -> [*k,I,O] (1-, 2- and 3-D), Linear [O,I] -> [I,O],
    ConvTranspose (keys under `transposed`) [I,O,*k] -> [*k,I,O]; LSTM `kernel_ih_l0` <-
    `weight_ih_l0` [4H,in] -> [in,4H]; spectral norm `kernel` <- `weight_orig`;
  * BatchNorm `scale` <- `weight`; batch_stats `mean` / `var` <- `running_mean` / `running_var`;
    spectral norm batch_stats `u` / `v` <- `weight_u` / `weight_v`;
  * `num_batches_tracked` is dropped; keys in `skip` (buffers checked by the caller, unused heads)
    are allowed and dropped.
Any missing, unexpected or mis-shaped key raises `CheckpointMismatchError` listing every one
(shapes in torch's layout).
"""
from __future__ import annotations

import os
import pickle
import re
from typing import Any, Callable, Collection, Sequence

import jax.numpy as jnp
import numpy as np


class CheckpointError(ValueError):
  """A checkpoint file that cannot be used; the message names the file and the fix."""


class CheckpointMismatchError(CheckpointError):
  """Checkpoint keys/shapes do not match the architecture inferred from it."""


class UnsafeCheckpointError(CheckpointError):
  """A checkpoint that needs more than tensors, numbers and containers to unpickle."""


# ----------------------------------------------------------------------------------------------
# Reading.

_RESAVE = ("python -c \"import torch; c = torch.load({src!r}, weights_only=False); "
           "torch.save(c.state_dict() if hasattr(c, 'state_dict') else "
           "{{k: v.state_dict() if hasattr(v, 'state_dict') else v for k, v in c.items()}}, "
           "{dst!r})\"")


_NO_CODE = ("osmnet_jax reads checkpoints with torch.load(weights_only=True) only and never runs "
            "code from a checkpoint file.")


def _refusal(path: str, message: str) -> str:
  """Why torch's weights-only unpickler refused `path` (from its error message), and the fix."""
  m = re.search(r"Unsupported operand (\d+)", message)
  if m:  # not torch.save's pickle dialect: a raw pickle.dump file or a corrupt file
    return (f"{path}: not a PyTorch checkpoint that can be loaded safely (pickle opcode "
            f"{m.group(1)} is outside torch's weights-only format: a raw pickle or a corrupt "
            f"file). {_NO_CODE} Save weights with torch.save(model.state_dict(), path).")
  m = re.search(r"GLOBAL ([\w.]+)", message)
  needs = f"the Python global `{m.group(1)}`" if m else "an object outside the allowlist"
  return (f"{path}: refused to load: unpickling it needs {needs}, which is not a tensor, "
          f"number, string or container. {_NO_CODE} If you trust the file's source, re-save it "
          "once as plain state dicts (this command does run the file's code) and pass the new "
          "file:\n  " + _RESAVE.format(src=path, dst=os.path.splitext(path)[0] + ".state_dict.pth"))


def read_torch_checkpoint(path: str) -> Any:
  """Loads a torch.save file with `torch.load(map_location='cpu', weights_only=True)` only.

  Raises FileNotFoundError for a missing file, UnsafeCheckpointError (naming the file, the
  rejected global and a one-line re-save command) for a file that needs arbitrary Python objects,
  and CheckpointError for a file torch cannot read at all.
  """
  import torch  # pylint: disable=g-import-not-at-top  (optional dependency)

  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"checkpoint not found: {path!r}")
  try:
    return torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    if "weights only" not in str(e).lower():
      raise CheckpointError(f"{path}: not a PyTorch checkpoint ({e})") from None
    raise UnsafeCheckpointError(_refusal(path, str(e))) from None
  except Exception as e:  # pylint: disable=broad-except  (zip / storage errors of a bad file)
    raise CheckpointError(
        f"{path}: not a PyTorch checkpoint torch.load can read ({type(e).__name__}: {e})"
    ) from None


def to_numpy(v) -> np.ndarray:
  """torch tensor or array-like -> numpy array."""
  return v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)


def numpy_state_dict(sd) -> dict[str, np.ndarray]:
  return {k: to_numpy(v) for k, v in sd.items()}


# ----------------------------------------------------------------------------------------------
# Names and layouts.

_LEAVES = {  # (collection, Flax leaf) -> torch leaf
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
    ("batch_stats", "u"): "weight_u",
    ("batch_stats", "v"): "weight_v",
}
_INDEX = re.compile(r"_(\d+(?:-\d+)?)(?=_|$)")  # `_0`, `_0_1`, `_0-5` list / scale suffixes


def torch_leaf(col: str, leaf: str, kernel: str = "weight") -> str:
  """Torch parameter name of a Flax leaf; `kernel` is 'weight_orig' under spectral norm."""
  if (col, leaf) == ("params", "kernel"):
    return kernel
  if leaf.startswith("kernel_"):  # LSTM kernel_ih_l0 <- weight_ih_l0
    return "weight_" + leaf[len("kernel_"):]
  return _LEAVES.get((col, leaf), leaf)


def torch_key(col: str, path: Sequence[str], *, split_indices: bool = True,
              kernel: str = "weight") -> str:
  """('params', ('a', 'b_0', 'conv', 'kernel')) -> 'a.b.0.conv.weight'.

  `split_indices=False` keeps module names as they are (for names like `branch7x7_1` that are
  attribute names, not list indices).
  """
  *mods, leaf = path
  if split_indices:
    mods = [_INDEX.sub(r".\1", m) for m in mods]
  return ".".join(list(mods) + [torch_leaf(col, leaf, kernel)])


def _is_kernel(leaf: str, ndim: int) -> bool:
  return (leaf == "kernel" or leaf.startswith("kernel_")) and ndim >= 2


def to_flax(t: np.ndarray, leaf: str, transposed: bool = False) -> np.ndarray:
  """Torch layout -> Flax layout: kernels [O,I,*k] (ConvTranspose: [I,O,*k]) -> [*k,I,O]."""
  if not _is_kernel(leaf, t.ndim):
    return t
  spatial = tuple(range(2, t.ndim))
  return np.transpose(t, spatial + ((0, 1) if transposed else (1, 0)))


def torch_shape(shape: Sequence[int], leaf: str, transposed: bool = False) -> tuple[int, ...]:
  """Torch shape of a Flax leaf shape (the inverse of `to_flax`, for messages)."""
  s = tuple(int(d) for d in shape)
  if not _is_kernel(leaf, len(s)):
    return s
  *k, i, o = s
  return ((i, o) if transposed else (o, i)) + tuple(k)


def flat_variables(tree: dict, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
  """Nested dict -> {(key, ..., leaf): value}."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(flat_variables(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def nest_paths(got: dict) -> dict:
  """{(collection, module, ..., leaf): array} -> {'params': {...}, 'batch_stats': {...}}."""
  out: dict = {"params": {}, "batch_stats": {}}
  for path, v in got.items():
    node = out
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = jnp.asarray(v)
  return out


def count_indices(sd: dict, pattern: str) -> int:
  """1 + the largest integer captured by `pattern` (matched at the start of keys), or 0."""
  idx = {int(m.group(1)) for k in sd if (m := re.match(pattern, k))}
  return max(idx) + 1 if idx else 0


# ----------------------------------------------------------------------------------------------
# The loop.


def raise_mismatch(header: str, missing=(), extra=(), bad_shape=(), bad_buffer=()) -> None:
  """Raises CheckpointMismatchError listing every offending torch key, if there is any."""
  if not (missing or extra or bad_shape or bad_buffer):
    return
  lines = []
  for title, items in (("missing keys", missing), ("unexpected keys", extra),
                       ("mis-shaped keys", bad_shape), ("bad buffers", bad_buffer)):
    if items:
      lines.append(f"{title} ({len(items)}):\n  " + "\n  ".join(sorted(items)))
  raise CheckpointMismatchError(f"{header} the architecture:\n" + "\n".join(lines))


def convert_state_dict(
    sd: dict,
    expected: dict,
    *,
    header: str,
    prefix: str = "",
    name_fn: Callable[[str, tuple[str, ...]], str] = torch_key,
    skip: Collection[str] = (),
    transposed: tuple[str, ...] = (),
    bad_buffers: Sequence[str] = (),
) -> dict:
  """Maps a torch state dict onto `expected` ({'params', 'batch_stats'} of arrays or
  ShapeDtypeStructs) -> {'params', 'batch_stats'} of float32 arrays.

  name_fn(collection, flax path) gives the torch key of each expected leaf. `skip`: torch keys
  allowed in the file that are not Flax variables. `transposed`: torch key prefixes of
  ConvTranspose modules. `bad_buffers`: problems the caller found with skipped keys, reported
  in the same error. Messages name keys as `prefix + key` and start with `header`.
  """
  want: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = {}
  for col in ("params", "batch_stats"):
    for path, spec in flat_variables(expected.get(col, {})).items():
      want[name_fn(col, path)] = ((col,) + path, tuple(spec.shape))
  got, extra, bad_shape, shaped = {}, [], [], set()
  for key, t in sd.items():
    if key.endswith("num_batches_tracked") or key in skip:
      continue
    if key not in want:
      extra.append(prefix + key)
      continue
    path, shape = want[key]
    is_transposed = bool(transposed) and key.startswith(transposed)
    t = to_numpy(t)
    arr = to_flax(t, path[-1], is_transposed)
    if arr.shape != shape:
      bad_shape.append(f"{prefix}{key}: checkpoint {tuple(t.shape)} vs expected "
                       f"{torch_shape(shape, path[-1], is_transposed)}")
      shaped.add(key)
      continue
    got[path] = np.asarray(arr, np.float32)
  missing = [prefix + k for k, (p, _) in want.items() if p not in got and k not in shaped]
  raise_mismatch(header, missing, extra, bad_shape, bad_buffers)
  return nest_paths(got)
