"""The renderer train step traced for a TPU target and run on the CPU is the CPU's own step.

Accelerator targets trace a different program (nn/conv.target_backend): width-packed convs and
chains, reduce-window pooling, BatchNorm's closed-form gradient with one-pass statistics, conv
biases ahead of BatchNorm held out of the gradient, sub-pixel up blocks normalised on their phases,
the down blocks' fused BatchNorm + ReLU + pool, packed keypoint heads.
Each piece has its own test; this one runs them together, the way a TPU would, on a config large
enough to take every one (128 px frames, the keypoint detector at 64 px), and compares one Adam
step with the CPU program's: the same losses and BatchNorm statistics, the same update of every
parameter but the held-out biases, whose update is exactly zero there (on the CPU autodiff gives
them rounding noise around their true gradient, zero, which Adam's first step turns into +-lr).
"""
import jax
import numpy as np

from osmnet_jax import renderer
from osmnet_jax.nn import conv as conv_lib
from osmnet_jax.stages.renderer_step import RendererStage

SIZE = 128


def _leaves(tree):
  return {"/".join(str(k.key) for k in path): np.asarray(v)
          for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_the_tpu_traced_renderer_step_is_the_cpu_step():
  cfg = renderer.tiny_config()
  cfg.kp_detector.scale_factor = 0.5  # 64 px keypoint maps: the padding-0 heads pack
  stage = RendererStage(cfg)
  state = stage.init_state(jax.random.PRNGKey(0), SIZE)
  rs = np.random.RandomState(0)
  img = rs.randint(0, 255, (2, SIZE, SIZE, 3)).astype(np.uint8)
  marks = rs.uniform(20, 100, (2, 68, 2)).astype(np.float32)
  batch = {"source": img, "driving": img[::-1].copy(), "source_landmarks": marks,
           "driving_landmarks": marks}
  rng = jax.random.PRNGKey(1)

  step = jax.jit(stage.train_step)
  s_cpu, m_cpu = step(state, batch, rng)
  with conv_lib.target_backend("tpu"):
    text = jax.jit(stage.train_step).lower(state, batch, rng).as_text()
    s_tpu, m_tpu = jax.jit(stage.train_step)(state, batch, rng)
  assert text != step.lower(state, batch, rng).as_text()

  for k in m_cpu:
    assert abs(float(m_tpu[k]) - float(m_cpu[k])) <= 1e-5 * abs(float(m_cpu[k])), k
  stats_tpu = _leaves(s_tpu.batch_stats)
  for name, a in _leaves(s_cpu.batch_stats).items():
    b = stats_tpu[name]
    assert np.max(np.abs(a - b) / (np.abs(a) + 1e-3)) < 1e-4, name

  lr = cfg.train.lr_generator
  p0, p_cpu, p_tpu = _leaves(state.params), _leaves(s_cpu.params), _leaves(s_tpu.params)
  held_out = {n for n in p0 if not np.any(p_tpu[n] - p0[n])}
  # The biases of convs that feed a BatchNorm: block convs ('conv') and ResBlock conv1.
  expected = {n for n in p0 if n.endswith(("/conv/bias", "/conv1/bias"))}
  assert held_out == expected and len(expected) >= 15, sorted(held_out ^ expected)
  for n in expected:
    assert np.any(p_cpu[n] - p0[n]), n  # the CPU moves them (by noise), the TPU program not
  for n in p0:
    if n in expected or n.endswith("bias"):
      continue  # other biases with a true zero gradient (kp: a softmax shift) move by noise too
    # Adam's first step is ~ -lr * sign(g): only elements whose gradient is rounding-size flip.
    flipped = int(np.sum(np.abs((p_cpu[n] - p0[n]) - (p_tpu[n] - p0[n])) > 0.1 * lr))
    assert flipped <= 1 + 0.01 * p0[n].size, (n, flipped, p0[n].size)
