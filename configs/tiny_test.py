r"""Tiny config used by the tests: synth_talk at 32 px, a handful of steps of every stage.

  python train.py --workdir /tmp/w --config configs/tiny_test.py
"""
from configs import default


def get_config():
  c = default.get_config()
  c.data.builder_config = "32px"
  c.data.synth.update(num_train=8, num_test=4, seconds=1.0, num_train_ids=4, num_test_ids=2)
  c.batch_size = 4
  c.data_check_steps = 5
  c.log_every = 1
  c.renderer.train.scales = (1.0, 0.5)  # 32 px: the VGG pyramid stops at 1/2 (16 px)
  c.renderer.steps = 2
  c.renderer.save_every = 2
  c.renderer.grid_every = 1
  c.renderer.health.clips = 0  # 2 steps cannot pass it; tests turn it on where they test it
  # 8 train clips: 6 train the motion models, 2 held out measure sigma.
  c.motion.num_frames = 8
  c.motion.overlap = 4
  c.motion.batch_size = 4
  c.motion.num_steps = 3
  c.motion.log_every = 1
  c.motion.save_every = 2
  c.motion.sigma_passes = 2
  c.motion.sigma_holdout_pct = 25
  c.expression.num_steps = 2
  c.expression.num_frames = 4
  c.expression.batch_size = 4
  c.expression.eval_passes = 1
  c.expression.eval_batch = 2
  c.expression.save_every = 2
  c.expression.log_every = 1
  c.joint.num_steps = 2
  c.joint.save_every = 2
  c.joint.batch_size = 4
  return c
