"""train.py with bad values, an unwritable workdir and Ctrl-C: one clear line each, exit 2 / 130,
no traceback (subprocesses, like a user runs them)."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

from conftest import REPO

TINY = ["train.py", "--config", "configs/tiny_test.py"]


def _env(tfds_dir, **extra) -> dict:
  return {**os.environ, "TFDS_DATA_DIR": str(tfds_dir), "PYTHONPATH": REPO, **extra}


def _run(args, tfds_dir, **extra) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                        env=_env(tfds_dir, **extra), timeout=600)


def test_bad_values_exit_2_naming_field_and_range(tmp_path):
  wd = tmp_path / "w"
  proc = _run(TINY + ["--workdir", str(wd), "--config.renderer.steps=-5",
                      "--config.batch_size=0", "--config.expression.lr=-1.0",
                      "--config.motion.num_frames=1", "--config.data.name=nope",
                      "--config.stages=('data','renderer','motion','expression','nope')",
                      "--config.parallel=banana"], tmp_path)
  assert proc.returncode == 2, proc.stderr[-3000:]
  err = proc.stderr
  assert "Traceback" not in err
  for msg in ("config.renderer.steps=-5: must be an integer >= 1",
              "config.batch_size=0: must be an integer >= 1",
              "config.expression.lr=-1.0: must be a finite number > 0",
              "config.motion.num_frames=1: must be an integer >= 2",
              "config.data.name='nope': use one of ('synth_talk', 'talking_videos')",
              "config.stages=", "config.parallel='banana': use one of ('jit', 'pmap')"):
    assert msg in err, (msg, err[-3000:])
  assert not wd.exists()  # nothing was written, nothing trained


def test_batch_that_does_not_divide_over_devices(tmp_path):
  proc = _run(TINY + ["--workdir", str(tmp_path / "w"), "--config.batch_size=3"], tmp_path,
              XLA_FLAGS="--xla_force_host_platform_device_count=2")
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "config.batch_size=3 does not divide over the 2 devices" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  proc = _run(TINY + ["--workdir", str(blocker / "w")], tmp_path)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "is not writable" in proc.stderr and "Traceback" not in proc.stderr
  if os.geteuid() != 0:  # root writes through permission bits
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    proc = _run(TINY + ["--workdir", str(ro / "w")], tmp_path)
    assert proc.returncode == 2 and "is not writable" in proc.stderr, proc.stderr[-3000:]


def test_ctrl_c_exits_130_with_the_step(tmp_path):
  """SIGINT during the motion stage's loop: one line with the step, that step checkpointed, exit
  130, no traceback, no library INFO chatter (orbax) at the default verbosity."""
  wd = tmp_path / "w"
  args = TINY + ["--workdir", str(wd), "--config.stages=('motion',)",
                 "--config.motion.num_steps=100000", "--config.motion.save_every=1"]
  proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=_env(tmp_path),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  ckdir = wd / "checkpoints" / "motion"
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None:
    if ckdir.is_dir() and any(p.name.isdigit() for p in ckdir.iterdir()):
      break
    time.sleep(1)
  assert proc.poll() is None, proc.communicate()[1][-3000:]
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 130, err[-3000:]
  assert "Traceback" not in err
  lines = [ln for ln in err.splitlines() if "rerun the same command to resume" in ln]
  assert len(lines) == 1 and "motion: interrupted at step " in lines[0], err[-3000:]
  step = lines[0].split("interrupted at step ")[1].split(";")[0]
  assert (ckdir / step).is_dir()  # the step in progress was checkpointed: resume loses nothing
  orbax_info = [ln for ln in err.splitlines()
                if ln.startswith("I") and "checkpoint_manager.py" in ln]
  assert not orbax_info, orbax_info[:3]


def test_quiet_library_logs_filter():
  from osmnet_jax.runtime import logs

  def record(path, level=logging.INFO):
    return logging.LogRecord("absl", level, path, 1, "msg", None, None)

  lib = f"{os.sep}venv{os.sep}lib{os.sep}site-packages{os.sep}orbax{os.sep}x.py"
  f = logs.LibraryInfoFilter()
  assert not f.filter(record(lib))
  assert f.filter(record(lib, logging.WARNING))
  assert f.filter(record(os.path.join(REPO, "osmnet_jax", "stages", "loop.py")))
