"""Launchers: start one worker process per pending run, locally or as SLURM jobs (submitit).

local:  ``parallel`` runs at once (default 1: one after another). With ``devices_per_run`` the
        accelerators are split into disjoint groups, one per concurrent run, through
        ``device_env`` (CUDA_VISIBLE_DEVICES for NVIDIA, TPU_VISIBLE_CHIPS for TPU).
slurm:  one submitit job per run; ``nodes`` x ``tasks_per_node`` processes per job become one
        multi-host JAX run (JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID from
        the job's environment, read by train.py). ``cluster="local"`` is submitit's local
        executor (tests, debugging).

A worker that dies without writing its result (killed, out of memory) gets a failed result.json
with its exit status and the tail of its log here; the sweep goes on.
"""
from __future__ import annotations

import concurrent.futures
import os
import queue
import subprocess
import sys

from osmnet_jax.scaling import plan as plan_lib
from osmnet_jax.scaling import sweep, worker

LOG = "worker.log"


def run_worker(run_dir: str, env: dict | None = None) -> int:
  """``python -m osmnet_jax.scaling.worker run_dir`` with its output in run_dir/worker.log."""
  full_env = {**os.environ, **(env or {})}
  root = sweep.repo_root()
  full_env["PYTHONPATH"] = os.pathsep.join(
      [root] + [p for p in full_env.get("PYTHONPATH", "").split(os.pathsep) if p])
  with open(os.path.join(run_dir, LOG), "a") as log:
    # The worker dies with this process (worker.die_with_parent): a killed sweep leaves no
    # orphan to race the resumed one.
    full_env[worker.PARENT_ENV] = str(os.getpid())
    proc = subprocess.run([sys.executable, "-m", "osmnet_jax.scaling.worker", run_dir],
                          cwd=root, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                          check=False)
  _record_crash(run_dir, proc.returncode)
  return proc.returncode


def _record_crash(run_dir: str, returncode: int) -> None:
  """A worker that ended without result.json (and was not busy elsewhere): failed run."""
  path = os.path.join(run_dir, plan_lib.RESULT)
  if returncode in (0, worker.BUSY) or os.path.exists(path):
    return
  with open(os.path.join(run_dir, LOG), errors="replace") as f:
    tail = f.read()[-2000:]
  plan = plan_lib.read_json(os.path.join(run_dir, plan_lib.PLAN))
  plan_lib.write_json_atomic(path, worker.failed(
      plan, f"worker exited with status {returncode} without a result\n{tail}"))


def run_local(run_dirs: list[str], parallel: int = 1, devices_per_run: int = 0,
              device_env: str = "CUDA_VISIBLE_DEVICES", num_devices: int = 0,
              progress=None) -> None:
  """Every run, ``parallel`` at a time; device groups of ``devices_per_run`` when > 0."""
  groups: queue.Queue = queue.Queue()
  if devices_per_run:
    if num_devices < devices_per_run * parallel:
      raise ValueError(f"--parallel {parallel} x --devices-per-run {devices_per_run} needs "
                       f"{devices_per_run * parallel} devices; {num_devices} are visible")
    for g in range(parallel):
      ids = range(g * devices_per_run, (g + 1) * devices_per_run)
      groups.put({device_env: ",".join(map(str, ids))})
  else:
    for _ in range(parallel):
      groups.put({})

  def one(d):
    env = groups.get()
    try:
      return d, run_worker(d, env)
    finally:
      groups.put(env)

  with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
    for d, rc in (f.result() for f in concurrent.futures.as_completed(
        [pool.submit(one, d) for d in run_dirs])):
      if progress:
        progress(d, rc)


def _job(run_dir: str) -> int:
  """The submitit job body, on every task of the job: multi-host env, then the worker."""
  import submitit

  env = {}
  job = submitit.JobEnvironment()
  if job.num_tasks > 1:
    # A port per job, so two jobs sharing a first node do not collide.
    port = 29500 + sum(map(ord, str(job.job_id))) % 1000
    env = {"JAX_COORDINATOR_ADDRESS": f"{job.hostnames[0]}:{port}",
           "JAX_NUM_PROCESSES": str(job.num_tasks), "JAX_PROCESS_ID": str(job.global_rank)}
  return run_worker(run_dir, env)


def run_slurm(run_dirs: list[str], folder: str, cluster: str = "slurm", wait: bool = True,
              progress=None, **params) -> list:
  """One submitit job per run (``params``: AutoExecutor parameters, e.g. timeout_min,
  slurm_partition, nodes, tasks_per_node, gpus_per_node, cpus_per_task)."""
  try:
    import submitit
  except ImportError as e:
    raise ImportError("--launcher slurm needs submitit: pip install -e '.[scaling]'") from e
  # cluster named explicitly: AutoExecutor(cluster=None) would fall back to local without SLURM.
  executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
  executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
  jobs = [(d, executor.submit(_job, d)) for d in run_dirs]
  for d, job in jobs:
    with open(os.path.join(d, "job_id"), "w") as f:
      f.write(str(job.job_id))
  if not wait:
    return jobs
  for d, job in jobs:
    try:
      rc = job.result()
    except Exception as e:  # noqa: BLE001  the job died (timeout, node failure): record it
      rc = -1
      if not os.path.exists(os.path.join(d, plan_lib.RESULT)):
        plan = plan_lib.read_json(os.path.join(d, plan_lib.PLAN))
        plan_lib.write_json_atomic(os.path.join(d, plan_lib.RESULT), worker.failed(
            plan, f"submitit job {job.job_id} failed: {e}"))
    if progress:
      progress(d, rc)
  return jobs
