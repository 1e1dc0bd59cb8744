"""benchmarks/bench_config_step.py: the frame size it reads from a config and its random batch."""
import os
import sys

import ml_collections
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import bench_config_step  # noqa: E402

from configs import default, quality  # noqa: E402


def test_image_size_is_the_builder_configs_frame_size():
  assert bench_config_step.image_size(default.get_config()) == 64
  assert bench_config_step.image_size(quality.get_config()) == 128
  bad = ml_collections.ConfigDict({"data": {"builder_config": "num_train_ids200"}})
  with pytest.raises(ValueError, match="builder_config='num_train_ids200'"):
    bench_config_step.image_size(bad)


def test_random_batch_has_what_the_landmark_terms_need():
  b = bench_config_step.random_batch(np.random.default_rng(0), 3, 32)
  assert b["source"].shape == b["driving"].shape == (3, 32, 32, 3)
  assert b["source"].dtype == np.uint8 and not np.array_equal(b["source"], b["driving"])
  for k in ("source_landmarks", "driving_landmarks"):
    assert b[k].shape == (3, 68, 2)
    assert 8 <= b[k].min() and b[k].max() <= 24  # inside the frame's middle half


def test_config_spec_sets_fields_and_refuses_bad_ones():
  flip = not default.get_config().renderer.train.mask_anchor_detach_kp  # not the default value
  cfg = bench_config_step.load_config(f"default@renderer.train.mask_anchor_detach_kp={flip}"
                                      "@renderer.steps=7")
  assert cfg.renderer.train.mask_anchor_detach_kp is flip and cfg.renderer.steps == 7
  # Each load is a fresh config: the overrides do not leak into the next one.
  assert bench_config_step.load_config("default").renderer.train.mask_anchor_detach_kp is not flip
  with pytest.raises(ValueError, match="needs KEY=VALUE"):
    bench_config_step.load_config("default@renderer.steps")
  with pytest.raises(TypeError):
    bench_config_step.load_config("default@renderer.steps='many'")
