"""Two JAX processes on loopback: per-process data shards assemble into one global batch."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_WORKER = textwrap.dedent("""
    import hashlib, json, sys
    import jax
    jax.config.update("jax_num_cpu_devices", 2)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    data_dir, port, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
    from osmnet_jax.runtime import sharding
    # Same code path as train.py: coordinator address + process count/id.
    assert sharding.maybe_initialize_distributed(f"127.0.0.1:{port}", 2, pid)
    import numpy as np
    import tensorflow_datasets as tfds
    from jax.experimental import multihost_utils
    from data.synth_talk import builder
    from osmnet_jax.input import pipeline as input_pipeline
    import conftest

    b = builder.SynthTalk(config=conftest.tiny_config(), data_dir=data_dir)
    mesh = sharding.make_mesh()
    assert jax.device_count() == 4 and jax.local_device_count() == 2 and mesh.size == 4
    per_process = sharding.check_batch_size(8, mesh)
    ds = input_pipeline.make_dataset(b, "train", per_process, 5, seed=0)
    local = next(iter(tfds.as_numpy(ds)))
    it = input_pipeline.DeviceIterator(ds, mesh)
    batch = next(it)
    it.close()
    frames = batch["frames"]
    assert frames.shape == (8, 5, 32, 32, 3), frames.shape
    # A jitted reduction over the global batch (crosses processes).
    total = jax.jit(lambda x: x.astype("float32").sum())(frames)
    full = multihost_utils.process_allgather(frames, tiled=True)
    digest = lambda a: [hashlib.md5(np.ascontiguousarray(r).tobytes()).hexdigest() for r in a]
    print(json.dumps({"pid": pid, "per_process": per_process, "local": digest(local["frames"]),
                      "global": digest(full), "total": float(total),
                      "local_total": float(local["frames"].astype("float64").sum())}))
""")


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_process_loopback_global_batch(tiny_synth, tmp_path):
  script = tmp_path / "worker.py"
  script.write_text(_WORKER)
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, os.path.join(REPO, "tests")])}
  port = str(_free_port())
  procs = [subprocess.Popen([sys.executable, str(script), tiny_synth.data_dir_root, port, str(i)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
           for i in range(2)]
  outs = []
  for p in procs:
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    outs.append(json.loads(out.strip().splitlines()[-1]))
  p0, p1 = sorted(outs, key=lambda o: o["pid"])
  assert p0["per_process"] == p1["per_process"] == 4
  # The global batch is process 0's rows then process 1's rows, and both see the same array.
  assert p0["global"] == p1["global"] == p0["local"] + p1["local"]
  # Each process read its own sub-split: no clip window is shared.
  assert not set(p0["local"]) & set(p1["local"])
  assert abs(p0["total"] - (p0["local_total"] + p1["local_total"])) < 1e-3 * p0["total"]
  assert p0["total"] == p1["total"]
