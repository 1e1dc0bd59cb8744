"""int16 PCM <-> float conversions of osmnet_jax.audio are inverse to each other."""
import numpy as np

from osmnet_jax import audio


def test_int16_float_int16_is_exact_over_the_whole_range():
  pcm = np.arange(-32768, 32768, dtype=np.int64).astype(np.int16)
  x = audio.to_float(pcm)
  assert x.dtype == np.float32 and x.min() == -1.0 and x.max() == 32767 / 32768
  np.testing.assert_array_equal(audio.to_int16(x), pcm)


def test_float_to_int16_scale_and_clipping():
  got = audio.to_int16(np.array([-2.0, -1.0, -0.5, 0.0, 0.25, 1.0, 3.0], np.float32))
  np.testing.assert_array_equal(got, [-32768, -32768, -16384, 0, 8192, 32767, 32767])
  assert got.dtype == np.int16
  # float -> int16 -> float moves a sample by at most half a quantisation step.
  x = np.random.RandomState(0).uniform(-1, 1, 10000).astype(np.float32)
  assert np.abs(audio.to_float(audio.to_int16(x)) - x).max() <= 0.5 / 32768 + 1e-7
