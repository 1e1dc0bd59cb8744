"""Untrusted checkpoint files never run code: a .pth whose pickle calls os.system / open() is
refused by every entry point that reads torch files (the reader, convert.load_fomm,
convert.load_audio2head, the SyncNet, FID and VGG19 weight loaders, and the convert CLI with
exit status 2), with a message naming the file and the rejected global; a marker file the payload
would create never appears. Plain checkpoints (FOMM layout with optimizer states and an epoch,
legacy and zip serialisation) still load.
"""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from osmnet_jax import convert, renderer
from osmnet_jax.losses import vgg
from osmnet_jax.metrics import fid, syncnet_lse
from osmnet_jax.models import fid_inception, syncnet

sys.path.insert(0, os.path.dirname(__file__))
import torch_fomm  # pylint: disable=g-import-not-at-top,wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _ShellPayload:
  """Unpickling calls os.system(`touch marker`)."""

  def __init__(self, marker):
    self.marker = str(marker)

  def __reduce__(self):
    return (os.system, (f"touch '{self.marker}'",))


class _OpenPayload:
  """Unpickling calls open(marker, 'w'), which creates the file (no shell involved)."""

  def __init__(self, marker):
    self.marker = str(marker)

  def __reduce__(self):
    return (open, (self.marker, "w"))


def _global_name(fn) -> str:
  return f"{fn.__module__}.{fn.__name__}"


PAYLOADS = {"os_system": (_ShellPayload, _global_name(os.system)),
            "open": (_OpenPayload, _global_name(open))}


def _fomm_like(payload) -> dict:
  """A FOMM-shaped dict whose entries hide the payload next to real tensors."""
  return {"kp_detector": {"kp.weight": torch.zeros(10, 32, 7, 7)},
          "generator": {"first.conv.weight": torch.zeros(64, 3, 7, 7)},
          "audio2kp": {}, "audio2pose": {},
          "optimizer_generator": {"state": {}, "param_groups": [{"lr": 2e-4, "x": payload}]},
          "epoch": 3}


@pytest.fixture(params=[(name, fmt) for name in PAYLOADS for fmt in ("zip", "legacy")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def evil(request, tmp_path):
  """(path of a malicious .pth, marker path its payload would create, rejected global name)."""
  name, fmt = request.param
  cls, global_name = PAYLOADS[name]
  marker = tmp_path / "PWNED"
  # Control: the payload is live (unpickling it unsafely does create the marker).
  result = pickle.loads(pickle.dumps(cls(marker)))
  if hasattr(result, "close"):
    result.close()
  assert marker.exists()
  marker.unlink()
  path = tmp_path / "vox-cpk.pth.tar"
  torch.save(_fomm_like(cls(marker)), path, _use_new_zipfile_serialization=fmt == "zip")
  return path, marker, global_name


def _assert_refused(excinfo, path, marker, global_name):
  msg = str(excinfo.value)
  assert isinstance(excinfo.value, convert.UnsafeCheckpointError)
  assert str(path) in msg and f"`{global_name}`" in msg
  assert "weights_only=True" in msg and "never runs code" in msg
  assert "torch.save(" in msg  # the one-line re-save command
  assert not marker.exists()


def test_reader_refuses(evil, monkeypatch):
  path, marker, global_name = evil
  # torch's opt-out switch must not reach our explicit weights_only=True.
  monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
  with pytest.raises(convert.UnsafeCheckpointError) as e:
    convert.read_torch_checkpoint(path)
  _assert_refused(e, path, marker, global_name)


@pytest.mark.parametrize("loader", [
    convert.load_fomm, convert.load_audio2head, syncnet.load_syncnet, syncnet_lse.load,
    fid_inception.load_fid_inception, fid.load, vgg.load_vgg19_torch,
], ids=lambda f: f"{f.__module__}.{f.__name__}")
def test_every_loader_refuses(evil, loader):
  path, marker, global_name = evil
  with pytest.raises(convert.UnsafeCheckpointError) as e:
    loader(str(path))
  _assert_refused(e, path, marker, global_name)


@pytest.mark.parametrize("src", ["fomm", "audio2head"])
def test_cli_refuses_with_exit_2(tmp_path, src):
  marker = tmp_path / "PWNED"
  path = tmp_path / "evil.pth.tar"
  torch.save(_fomm_like(_ShellPayload(marker)), path)
  out = tmp_path / "W"
  proc = subprocess.run(
      [sys.executable, "-m", "osmnet_jax.convert", "--from", src, str(path), "--out", str(out)],
      capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"), cwd=ROOT)
  assert proc.returncode == 2, proc.stderr
  assert "Traceback" not in proc.stderr
  assert str(path) in proc.stderr and _global_name(os.system) in proc.stderr
  assert "never runs code" in proc.stderr
  assert not marker.exists() and not out.exists()


def test_raw_pickle_and_garbage_get_clear_errors(tmp_path):
  marker = tmp_path / "PWNED"
  raw = tmp_path / "raw.pth"
  with open(raw, "wb") as f:
    pickle.dump(_ShellPayload(marker), f)
  with pytest.raises(convert.UnsafeCheckpointError,
                     match="raw.pth: not a PyTorch checkpoint that can be loaded safely"):
    convert.read_torch_checkpoint(raw)
  assert not marker.exists()
  for name, data in (("garbage.pth", b"not a checkpoint at all"), ("empty.pth", b""),
                     ("zip.pth", b"PK\x03\x04 truncated zip")):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(convert.CheckpointError, match=f"{name}: not a PyTorch checkpoint"):
      convert.read_torch_checkpoint(tmp_path / name)
  with pytest.raises(FileNotFoundError, match="nowhere.pth"):
    convert.read_torch_checkpoint(tmp_path / "nowhere.pth")


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_plain_fomm_checkpoint_with_optimizer_states_loads(tmp_path, fmt):
  """The published FOMM layout: state dicts, optimizer state dicts and an int epoch."""
  kp_t, gen_t = torch_fomm.build(renderer.tiny_config())
  torch_fomm.randomize_(kp_t, 0)
  torch_fomm.randomize_(gen_t, 1)
  opt = torch.optim.Adam(list(kp_t.parameters()), lr=2e-4, betas=(0.5, 0.999))
  kp_t(torch.zeros(1, 3, 32, 32))["value"].sum().backward()
  opt.step()  # non-empty optimizer state (exp_avg tensors, step counters)
  ckpt = {"kp_detector": kp_t.state_dict(), "generator": gen_t.state_dict(),
          "optimizer_kp_detector": opt.state_dict(), "epoch": 7}
  path = tmp_path / "vox-cpk.pth.tar"
  torch.save(ckpt, path, _use_new_zipfile_serialization=fmt == "zip")
  raw = convert.read_torch_checkpoint(path)
  assert raw["epoch"] == 7 and raw["optimizer_kp_detector"]["param_groups"][0]["lr"] == 2e-4
  variables, cfg = convert.load_fomm(str(path))
  assert cfg.num_kp == 10
  np.testing.assert_array_equal(
      np.asarray(variables["kp_detector"]["params"]["kp"]["kernel"]),
      kp_t.state_dict()["kp.weight"].numpy().transpose(2, 3, 1, 0))
