"""Shared fixtures: a tiny synth_talk built once per test session."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The suite's tolerances are XLA:CPU's, and with the `aot` extra installed (libtpu, the CUDA
# plugin) jax would otherwise probe for a TPU / GPU before falling back to the CPU. The aot
# tests compile for TPU / GPU targets through compile-only topologies, which need no backend.
# JAX_PLATFORMS=cuda (or tpu) runs the suite on an accelerator instead.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests")
# Cheap XLA:CPU codegen: the tests run a few steps of each program, so XLA's optimising
# codegen was most of the suite's time. The flags change how fast the compiled code runs, not
# what it computes. Set for this process (before anything imports jax) and inherited by the
# subprocesses, unless XLA_FLAGS is already set; OSMNET_TEST_FULL_XLA=1 runs the suite with
# XLA's default codegen instead.
CHEAP_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if os.environ.get("OSMNET_TEST_FULL_XLA", "0") != "1" and "XLA_FLAGS" not in os.environ:
  os.environ["XLA_FLAGS"] = CHEAP_XLA_FLAGS


def session_processes(sid: int) -> list[int]:
  """Pids of the live processes in session ``sid`` (zombies count as gone)."""
  out = []
  for d in os.listdir("/proc"):
    if d.isdigit():
      try:
        with open(f"/proc/{d}/stat") as f:
          fields = f.read().rsplit(")", 1)[1].split()
      except OSError:
        continue
      if int(fields[3]) == sid and fields[0] != "Z":
        out.append(int(d))
  return out


@contextlib.contextmanager
def own_session(cmd: list[str]):
  """``cmd`` started in a new session (its pid is the session id) with the repo on PYTHONPATH;
  on exit the whole session is killed, whatever the test did."""
  env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True, env=env)
  try:
    yield proc
  finally:
    try:
      os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
    proc.wait()


def kill_leader_and_wait(proc, seconds: float = 10.0) -> list[int]:
  """SIGKILL ``proc`` alone (no cleanup code of its runs), then wait up to ``seconds`` for the
  rest of its session to exit -> the pids still alive."""
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  deadline = time.time() + seconds
  while time.time() < deadline and session_processes(proc.pid):
    time.sleep(0.1)
  return session_processes(proc.pid)


def run_worker(test_file: str, timeout: int = 600) -> dict:
  """Runs ``python TEST_FILE worker`` (the module's own worker, in a fresh process so its
  simulated device count cannot clash with other test modules) with the repo and tests/ on
  PYTHONPATH and this process's XLA_FLAGS (CHEAP_XLA_FLAGS unless OSMNET_TEST_FULL_XLA=1);
  returns the JSON its last ``RESULT `` line carries."""
  import json

  env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, TESTS, os.environ.get("PYTHONPATH", "")]))  # noqa: E501
  proc = subprocess.run([sys.executable, os.path.abspath(test_file), "worker"],
                        capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-4000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
  return json.loads(line[len("RESULT "):])


def run_script(args, tfds_dir, timeout=900) -> subprocess.CompletedProcess:
  """Runs ``python ARGS`` in the repo root like a user would (own TFDS data dir; XLA_FLAGS
  inherited, i.e. CHEAP_XLA_FLAGS unless the suite runs with OSMNET_TEST_FULL_XLA=1)."""
  env = {**os.environ, "TFDS_DATA_DIR": str(tfds_dir), "PYTHONPATH": REPO}
  return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                        env=env, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory):
  """(workdir, tfds dir) of ONE ``train.py --config configs/tiny_test.py`` run: every stage
  (data, renderer, motion, expression, joint) for a few steps on a tiny synth_talk at 32 px; the
  motion stage trains osmnet and the noise_sampler baseline (eval.py renders both). Shared by
  the CLI, generation and evaluation tests (one train run per session: the slowest fixture)."""
  root = tmp_path_factory.mktemp("trained")
  wd, tfds_dir = root / "w", root / "tfds"
  proc = run_script(["train.py", "--workdir", str(wd), "--config", "configs/tiny_test.py",
                     "--config.motion_models=('osmnet','noise_sampler')"], tfds_dir)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return wd, tfds_dir


def tiny_config(seed: int = 0, resolution: int = 32):
  from data.synth_talk import builder, clips

  return builder.SynthTalkConfig(
      name=f"tiny_r{resolution}_s{seed}",
      spec=clips.SynthSpec(resolution=resolution, num_train=6, num_test=2, seconds=1.0,
                           num_train_ids=3, num_test_ids=1, seed=seed),
  )


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory):
  """A prepared tiny synth_talk builder: 6 train + 2 test clips of 25 frames at 32 px."""
  from data.synth_talk import builder

  data_dir = tmp_path_factory.mktemp("tfds")
  return builder.build(tiny_config(), str(data_dir))


def relu_shapes(jaxpr) -> list[tuple[int, ...]]:
  """Output shapes of every 4-D `max` (a ReLU) in a jaxpr, sub-jaxprs included."""
  shapes = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "max" and len(eqn.outvars[0].aval.shape) == 4:
      shapes.append(tuple(eqn.outvars[0].aval.shape))
    for p in eqn.params.values():
      for sub in (p if isinstance(p, (list, tuple)) else [p]):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          shapes.extend(relu_shapes(inner))
  return shapes
