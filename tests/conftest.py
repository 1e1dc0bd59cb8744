"""Shared fixtures: a tiny synth_talk built once per test session."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest


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
