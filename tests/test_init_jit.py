"""init_jit: the values of jax.jit up to float rounding (cheap XLA:CPU compile), caching, tracer
fallback."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from osmnet_jax.runtime import init_jit as init_jit_lib
from osmnet_jax.runtime.init_jit import init_jit


class _Net(nn.Module):
  """A few parameter shapes and initialisers (normal, lecun, zeros, LayerNorm ones)."""

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(8, (3, 3))(x)
    x = nn.LayerNorm()(x)
    x = nn.Dense(5, kernel_init=nn.initializers.normal(0.3))(x)
    return nn.Dense(3, bias_init=nn.initializers.uniform(1.0))(x)


def _init(rng, size):
  return _Net().init(rng, jnp.zeros((1, size, size, 2)))


def test_init_jit_returns_the_variables_of_jax_jit_up_to_one_ulp():
  f_cheap = init_jit(_init, static_argnums=(1,))
  f_plain = jax.jit(_init, static_argnums=(1,))
  for seed in (0, 7):
    a = f_cheap(jax.random.PRNGKey(seed), 6)
    b = f_plain(jax.random.PRNGKey(seed), 6)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      assert x.dtype == y.dtype and x.shape == y.shape
      # Same threefry bits; the float maps (lecun normal's erfinv, ...) may round differently
      # without LLVM's optimisations: measured 4 of 144 elements 1 ulp apart, others equal.
      np.testing.assert_array_max_ulp(np.asarray(x), np.asarray(y), maxulp=2)
  # Different seeds give different parameters (the rng really reaches the initialisers).
  a0 = jax.tree.leaves(f_cheap(jax.random.PRNGKey(0), 6))
  a1 = jax.tree.leaves(f_cheap(jax.random.PRNGKey(1), 6))
  assert any(not np.array_equal(x, y) for x, y in zip(a0, a1))


def test_init_jit_caches_one_executable_per_static_args_and_shapes(monkeypatch):
  calls = []
  real = jax.stages.Lowered.compile

  def counting(self, *a, **k):
    calls.append(k.get("compiler_options"))
    return real(self, *a, **k)

  monkeypatch.setattr(jax.stages.Lowered, "compile", counting)
  f = init_jit(_init, static_argnums=(1,))
  f(jax.random.PRNGKey(0), 4)
  f(jax.random.PRNGKey(1), 4)  # same static arg and shapes: cached
  f(jax.random.PRNGKey(0), 5)  # new static arg: compiled again
  assert len(calls) == 2
  if jax.default_backend() == "cpu":
    assert calls == [init_jit_lib.CHEAP_CPU_OPTIONS] * 2


def test_init_jit_under_eval_shape_takes_the_plain_path():
  f = init_jit(_init, static_argnums=(1,))
  shapes = jax.eval_shape(lambda r: f(r, 6), jax.random.PRNGKey(0))
  assert shapes["params"]["Conv_0"]["kernel"].shape == (3, 3, 2, 8)
  assert shapes["params"]["Dense_1"]["bias"].shape == (3,)


def test_init_jit_as_decorator():
  @init_jit(static_argnums=(1,))
  def g(rng, n):
    return jax.random.normal(rng, (n,))

  np.testing.assert_array_equal(np.asarray(g(jax.random.PRNGKey(3), 4)),
                                np.asarray(jax.random.normal(jax.random.PRNGKey(3), (4,))))
