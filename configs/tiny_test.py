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
  c.renderer.overrides = {"train": {"scales": (1.0, 0.5)}}
  c.renderer.steps = 2
  c.renderer.save_every = 2
  c.renderer.grid_every = 1
  # 8 train clips: 6 train the motion models, 2 held out measure sigma.
  c.motion.update(num_frames=8, overlap=4, batch_size=4, num_steps=3, log_every=1, save_every=2,
                  sigma_passes=2, sigma_holdout_pct=25)
  c.expression.update(dict(num_steps=2, num_frames=4, batch_size=4, eval_passes=1, eval_batch=2,
                           save_every=2, log_every=1))
  return c
