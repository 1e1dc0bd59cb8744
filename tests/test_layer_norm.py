"""nn/layer_norm.py: flax LayerNorm's parameters and values, its gradients, any leading shape."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from osmnet_jax.nn.layer_norm import LayerNorm, layer_norm


def _data(shape, seed=0):
  r = np.random.RandomState(seed)
  x = jnp.asarray(r.randn(*shape) * 3 + 1.5, jnp.float32)
  scale = jnp.asarray(r.rand(shape[-1]) + 0.5, jnp.float32)
  bias = jnp.asarray(r.randn(shape[-1]), jnp.float32)
  return x, scale, bias


@pytest.mark.parametrize("shape", [(7, 8), (4, 5, 6, 8), (3, 2, 16)])
def test_values_and_grads_match_flax_layer_norm(shape):
  x, scale, bias = _data(shape)
  flax_ln = lambda x, s, b: nn.LayerNorm().apply({"params": {"scale": s, "bias": b}}, x)
  ours = lambda x, s, b: layer_norm(x, s, b, 1e-6)
  np.testing.assert_allclose(ours(x, scale, bias), flax_ln(x, scale, bias), rtol=2e-5, atol=2e-5)
  w = jnp.asarray(np.random.RandomState(1).randn(*shape), jnp.float32)  # a non-trivial cotangent
  loss = lambda f: (lambda x, s, b: jnp.sum(jnp.tanh(f(x, s, b)) * w))
  g_ours = jax.jit(jax.grad(loss(ours), argnums=(0, 1, 2)))(x, scale, bias)
  g_flax = jax.jit(jax.grad(loss(flax_ln), argnums=(0, 1, 2)))(x, scale, bias)
  for a, b in zip(g_ours, g_flax):
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5 * float(jnp.abs(b).max()))


def test_gradient_matches_finite_differences_in_float64():
  with jax.enable_x64(True):
    r = np.random.RandomState(2)
    x = jnp.asarray(r.randn(3, 5), jnp.float64)
    s = jnp.asarray(r.rand(5) + 0.5, jnp.float64)
    b = jnp.asarray(r.randn(5), jnp.float64)
    w = jnp.asarray(r.randn(3, 5), jnp.float64)
    f = lambda x, s, b: jnp.sum(jnp.sin(layer_norm(x, s, b, 1e-6)) * w)
    gx, gs, gb = jax.grad(f, argnums=(0, 1, 2))(x, s, b)
    eps = 1e-6
    for arr, g, i in ((x, gx, 0), (s, gs, 1), (b, gb, 2)):
      flat = np.asarray(arr).ravel()
      for k in range(0, flat.size, 2):
        d = np.zeros_like(flat)
        d[k] = eps
        args = [x, s, b]
        args[i] = jnp.asarray((flat + d).reshape(arr.shape))
        up = f(*args)
        args[i] = jnp.asarray((flat - d).reshape(arr.shape))
        num = (up - f(*args)) / (2 * eps)
        assert abs(float(num) - float(np.asarray(g).ravel()[k])) < 1e-7


def test_module_has_flax_layer_norm_params_and_dtypes():
  x, _, _ = _data((2, 3, 8))
  p_ours = LayerNorm().init(jax.random.PRNGKey(0), x)
  p_flax = nn.LayerNorm().init(jax.random.PRNGKey(0), x)
  assert jax.tree.structure(p_ours) == jax.tree.structure(p_flax)
  for a, b in zip(jax.tree.leaves(p_ours), jax.tree.leaves(p_flax)):
    np.testing.assert_array_equal(a, b)
    assert a.dtype == b.dtype
  # bf16 input: statistics in float32, output dtype as flax's (promoted with the float32 params).
  xb = x.astype(jnp.bfloat16)
  assert LayerNorm().apply(p_ours, xb).dtype == nn.LayerNorm().apply(p_flax, xb).dtype
  gx = jax.grad(lambda x: LayerNorm().apply(p_ours, x).sum().astype(jnp.float32))(xb)
  assert gx.dtype == jnp.bfloat16
