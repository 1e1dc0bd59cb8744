"""Input pipeline: window contents, determinism, resumption, sharded global arrays, pmap layout."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow_datasets as tfds

from osmnet_jax import audio
from osmnet_jax.input import pipeline as ip

T = 5
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _batches(b, n, **kw):
  kw = {"batch_size": 4, "num_frames": T, "seed": 0, **kw}
  it = iter(tfds.as_numpy(ip.make_dataset(b, "train", **kw)))
  return [next(it) for _ in range(n)]


def test_window_contents_match_the_raw_clip(tiny_synth):
  raw = list(tfds.as_numpy(tiny_synth.as_dataset(split="train", shuffle_files=False)))
  mean, std = ip.pose_stats(tiny_synth)
  (batch,) = _batches(tiny_synth, 1)
  assert batch["frames"].shape == (4, T, 32, 32, 3) and batch["frames"].dtype == np.uint8
  assert batch["source"].shape == (4, 32, 32, 3)
  assert batch["mel"].shape == (4, T, 20, 80) and batch["mel"].dtype == np.float32
  assert batch["landmarks"].shape == (4, T, 68, 2)
  assert batch["pose"].shape == (4, T, 6)
  for i in range(4):
    # Find the clip and start frame this window was cut from.
    hits = [(ex, s) for ex in raw for s in range(len(ex["pose"]) - T + 1)
            if np.array_equal(ex["frames"][s:s + T], batch["frames"][i])]
    assert len(hits) == 1
    ex, s = hits[0]
    np.testing.assert_array_equal(batch["mel"][i], audio.mel_windows(ex["mel"], s, T))
    np.testing.assert_array_equal(batch["landmarks"][i], ex["landmarks"][s:s + T])
    np.testing.assert_allclose(batch["pose"][i], (ex["pose"][s:s + T] - mean) / std, rtol=1e-6)
    # The source frame comes from the same clip, with its own landmarks.
    src = [j for j in range(len(ex["frames"])) if np.array_equal(ex["frames"][j], batch["source"][i])]  # noqa: E501
    assert src
    np.testing.assert_array_equal(batch["source_landmarks"][i], ex["landmarks"][src[0]])


def test_same_seed_same_stream_other_seed_other_stream(tiny_synth):
  a = _batches(tiny_synth, 3)
  b = _batches(tiny_synth, 3)
  c = _batches(tiny_synth, 3, seed=1)
  for x, y in zip(a, b):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  assert any(not np.array_equal(x["frames"], y["frames"]) for x, y in zip(a, c))


def test_resume_from_step_equals_continuing(tiny_synth):
  fresh = _batches(tiny_synth, 6)
  resumed = _batches(tiny_synth, 2, start_step=4)
  for x, y in zip(fresh[4:], resumed):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_augmentation_hook_changes_pixels_consistently(tiny_synth):
  (plain,) = _batches(tiny_synth, 1)
  (aug,) = _batches(tiny_synth, 1, augment=("color",))
  np.testing.assert_array_equal(plain["mel"], aug["mel"])
  assert not np.array_equal(plain["frames"], aug["frames"])
  with pytest.raises(ValueError, match="unknown augmentation"):
    ip.make_dataset(tiny_synth, "train", 4, T, augment=("nope",))


def test_clips_shorter_than_the_window_are_dropped(tiny_synth):
  ds = ip.make_dataset(tiny_synth, "train", 1, num_frames=26, repeat=False)
  assert sum(1 for _ in ds) == 0  # all clips have 25 frames
  ds = ip.make_dataset(tiny_synth, "train", 1, num_frames=25, repeat=False, shuffle_buffer=0)
  assert sum(1 for _ in ds) == 6


_MULTI_DEVICE = textwrap.dedent("""
    import json, sys
    import jax
    jax.config.update("jax_num_cpu_devices", 4)
    import numpy as np
    import tensorflow_datasets as tfds
    sys.path.insert(0, sys.argv[2])
    from data.synth_talk import builder
    from osmnet_jax.input import pipeline as ip
    from osmnet_jax.runtime import sharding
    import conftest

    b = builder.SynthTalk(config=conftest.tiny_config(), data_dir=sys.argv[1])
    assert jax.device_count() == 4
    out = {}
    for shape in [(4, 1), (2, 2)]:
      mesh = sharding.make_mesh(*shape)
      ds = ip.make_dataset(b, "train", 8, 5, seed=0)
      ref = next(iter(tfds.as_numpy(ds)))
      it_jit = ip.DeviceIterator(ds, mesh, layout="jit")
      it_pmap = ip.DeviceIterator(ds, layout="pmap")
      gj, gp = next(it_jit), next(it_pmap)
      it_jit.close(); it_pmap.close()
      for k, v in ref.items():
        a = gj[k]
        assert a.shape == v.shape, (k, a.shape, v.shape)
        assert a.sharding.spec == sharding.batch_sharding(mesh).spec
        assert len(a.addressable_shards) == 4
        np.testing.assert_array_equal(np.asarray(a), v)
        shards = sorted(a.addressable_shards, key=lambda s: s.index[0].start)
        assert {s.device.id for s in shards} == {0, 1, 2, 3}
        for s in shards:
          assert s.data.shape[0] == 2
        p = gp[k]
        assert p.shape == (4, 2) + v.shape[1:]
        for s in p.addressable_shards:
          row = s.index[0].start
          # pmap row i (on device d) == the rows the jit layout put on device d.
          jit_rows = [t for t in shards if t.device == s.device][0]
          np.testing.assert_array_equal(np.asarray(s.data)[0], np.asarray(jit_rows.data))
          np.testing.assert_array_equal(np.asarray(s.data)[0], v[2 * row:2 * row + 2])
      out[str(shape)] = "ok"
    print(json.dumps(out))
""")


def test_global_arrays_on_four_simulated_devices_and_pmap_layout(tiny_synth, tmp_path):
  script = tmp_path / "multi.py"
  script.write_text(_MULTI_DEVICE)
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, os.path.join(REPO, "tests")])}
  proc = subprocess.run([sys.executable, str(script), tiny_synth.data_dir_root, REPO],
                        capture_output=True, text=True, env=env, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"(4, 1)": "ok", "(2, 2)": "ok"}
