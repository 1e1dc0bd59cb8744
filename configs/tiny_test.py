r"""Tiny config used by the tests: synth_talk at 32 px, a handful of steps.

  python train.py --workdir /tmp/w --config configs/tiny_test.py
Runtime: seconds on a 2-core CPU.
"""
from configs import default


def get_config():
  c = default.get_config()
  c.data.builder_config = "32px"
  c.data.synth.update(num_train=8, num_test=4, seconds=1.0, num_train_ids=4, num_test_ids=2)
  c.batch_size = 4
  c.data_check_steps = 5
  c.log_every = 1
  return c
