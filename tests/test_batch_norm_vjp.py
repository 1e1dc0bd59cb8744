"""nn/batch_norm.BatchNorm's closed-form train-mode gradient (the custom VJP accelerator targets
trace) against autodiff of the same forward: the same output and running statistics, the same
gradients (float64: to rounding; bf16: no worse than autodiff against a float64 reference), plain
and width-packed maps, and with batch statistics averaged over a named axis (vmap stands in for
pmap's devices). The CPU traces autodiff unless asked; a TPU target traces the custom VJP."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import relu_shapes
from osmnet_jax.nn import batch_norm as bn_lib
from osmnet_jax.nn import conv as conv_lib

C = 6


def _weights(shape):
  """The cotangent of y: fixed random values, exact in bf16 (so every dtype sees the same)."""
  rs = np.random.RandomState(1)
  return np.asarray(jnp.asarray(rs.randn(*shape), jnp.bfloat16).astype(jnp.float32))


def _run(x, closed: bool, packed: int = 0, axis_name=None, w=None, relu_pool: bool = False):
  """(y, new running stats, grads of sum(y * w) wrt (x, scale, bias)); `relu_pool`: y is
  pool(relu(norm(x)))."""
  m = bn_lib.BatchNorm(use_running_average=False, packed=packed, axis_name=axis_name,
                       closed_form_grad=closed, relu_pool=relu_pool)
  dtype = jnp.promote_types(x.dtype, jnp.float32)
  rs = np.random.RandomState(2)
  params = {"scale": jnp.asarray(1 + 0.3 * rs.randn(C), dtype),
            "bias": jnp.asarray(0.2 * rs.randn(C), dtype)}
  stats = {"mean": jnp.zeros((C,), dtype), "var": jnp.ones((C,), dtype)}
  out_shape = jax.eval_shape(lambda: m.apply({"params": params, "batch_stats": stats}, x,
                                             mutable=["batch_stats"])[0]).shape
  w = jnp.asarray(_weights(out_shape) if w is None else w, x.dtype)

  def loss(x, p):
    y, upd = m.apply({"params": p, "batch_stats": stats}, x, mutable=["batch_stats"])
    return jnp.sum((y * w).astype(dtype)), (y, upd["batch_stats"])

  (_, (y, new_stats)), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(x, params)
  return y, new_stats, grads


def _maps(dtype, shape=(4, 5, 8, C), mean=3.0):
  rs = np.random.RandomState(0)
  return jnp.asarray(mean + rs.randn(*shape) * np.linspace(0.5, 2, shape[-1]), dtype)


def _max_rel(a, b):
  """Largest |a - b| / max |b| over the leaves (numpy float64)."""
  f64 = lambda t: np.asarray(jnp.asarray(t, jnp.float32) if t.dtype == jnp.bfloat16 else t,
                             np.float64)
  return max(float(np.abs(f64(u) - f64(v)).max() / (np.abs(f64(v)).max() + 1e-30))
             for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("packed", [0, 2])
def test_closed_form_matches_autodiff_in_float64(packed):
  with jax.enable_x64():
    x = _maps(jnp.float64, shape=(4, 5, 8, C * max(packed, 1)))
    if packed:  # a packed map holds C channels in f lanes each
      x = x.at[..., C:].set(x[..., :C] * 0.5 - 1.0)
    ya, sa, ga = _run(x, closed=False, packed=packed)
    yc, sc, gc = _run(x, closed=True, packed=packed)
    assert _max_rel(yc, ya) < 1e-14 and _max_rel(sc, sa) < 1e-14
    assert _max_rel(gc, ga) < 1e-12, (gc, ga)
    # The gradient is not trivial: all three parts move, and sum(dx) over the batch is 0.
    assert all(float(jnp.abs(g).max()) > 1e-2 for g in jax.tree.leaves(gc))
    dx = gc[0].reshape(-1, max(packed, 1), C).sum(axis=(0, 1))
    assert float(jnp.abs(dx).max()) < 1e-10


def test_closed_form_bf16_is_as_accurate_as_autodiff():
  x = _maps(jnp.bfloat16, shape=(8, 16, 16, C))
  with jax.enable_x64():
    _, _, ref = _run(x.astype(jnp.float64), closed=False)
  ya, _, ga = _run(x, closed=False)
  yc, _, gc = _run(x, closed=True)
  assert yc.dtype == jnp.bfloat16 and gc[0].dtype == jnp.bfloat16
  assert float(jnp.abs(yc.astype(jnp.float32) - ya.astype(jnp.float32)).max()) == 0.0
  err_a, err_c = _max_rel(ga[0], ref[0]), _max_rel(gc[0], ref[0])
  assert err_c <= 1.5 * err_a + 1e-3, (err_c, err_a)  # dx: bf16 rounding of the result only
  # d_scale, d_bias: float32 sums of the same bf16 products either way.
  assert _max_rel(gc[1], ref[1]) <= 1.5 * _max_rel(ga[1], ref[1]) + 1e-6, (gc[1], ga[1], ref[1])


def test_closed_form_with_statistics_over_a_named_axis():
  """4 'devices' of 2 examples (vmap with an axis name, as pmap's) = one batch of 8."""
  with jax.enable_x64():
    x = _maps(jnp.float64, shape=(8, 5, 8, C))
    w = jnp.asarray(_weights(x.shape), jnp.float64)
    y_all, s_all, g_all = _run(x, closed=False, w=w)
    split = lambda a: a.reshape(4, 2, *a.shape[1:])
    for closed in (False, True):
      y, s, g = jax.vmap(lambda xs, ws, c=closed: _run(xs, closed=c, axis_name="b", w=ws),
                         axis_name="b")(split(x), split(w))
      assert _max_rel(y.reshape(x.shape), y_all) < 1e-13
      assert _max_rel(jax.tree.map(lambda v: v[0], s), s_all) < 1e-13
      # dx per example; the weighted sum is over each device's shard, so the params' gradients
      # are the devices' partial sums (pmean/psum of grads is the train step's job).
      assert _max_rel(g[0].reshape(x.shape), g_all[0]) < 1e-12, closed
      assert _max_rel(jax.tree.map(lambda v: v.sum(0), g[1]), g_all[1]) < 1e-12, closed


def test_the_cpu_traces_autodiff_and_a_tpu_target_the_custom_vjp():
  m = bn_lib.BatchNorm(use_running_average=False)
  x = _maps(jnp.float32)
  v = m.init(jax.random.PRNGKey(0), x)

  def jaxpr():  # the forward's: a custom VJP shows as a custom_vjp_call there
    f = lambda p, x: m.apply({"params": p, "batch_stats": v["batch_stats"]}, x,
                             mutable=["batch_stats"])[0].sum()
    return str(jax.make_jaxpr(f)(v["params"], x))

  assert "custom_vjp" not in jaxpr()
  with conv_lib.target_backend("tpu"):
    assert "custom_vjp" in jaxpr()
  # Eval mode (running statistics) has nothing to gain and keeps autodiff on every target.
  ev = bn_lib.BatchNorm(use_running_average=True)
  with conv_lib.target_backend("tpu"):
    assert "custom_vjp" not in str(jax.make_jaxpr(lambda x: ev.apply(v, x).sum())(x))


@pytest.mark.parametrize("block", ["same", "down", "up"])
def test_a_conv_bias_ahead_of_batchnorm_has_a_zero_gradient_on_accelerators(block):
  """conv -> train-mode BatchNorm: the bias cancels in the norm, so its exact gradient is zero.
  The CPU's autodiff gives rounding noise around zero; a TPU target holds the bias out of the
  gradient (an exact zero, no reduction of the map), with the other gradients unchanged."""
  from osmnet_jax.nn import blocks

  cls = {"same": blocks.SameBlock2d, "down": blocks.DownBlock2d, "up": blocks.UpBlock2d}[block]
  m = cls(features=4, train=True)
  x = jnp.asarray(np.random.RandomState(3).randn(2, 8, 8, 3), jnp.float32)
  v = m.init(jax.random.PRNGKey(0), x)
  params = jax.tree.map(lambda a: a + 0.3, v["params"])  # a bias far from zero
  w = jnp.asarray(np.random.RandomState(4).randn(*m.apply(v, x, mutable=["batch_stats"])[0].shape))

  def grads():
    def loss(p):
      y = m.apply({"params": p, "batch_stats": v["batch_stats"]}, x, mutable=["batch_stats"])[0]
      return jnp.sum(y * w)
    return jax.jit(jax.grad(loss))(params)

  cpu = grads()
  with conv_lib.target_backend("tpu"):
    tpu = grads()
  scale = float(jnp.abs(cpu["conv"]["kernel"]).max())
  # The premise: autodiff's bias gradient is zero to float32 rounding, not a real signal.
  assert float(jnp.abs(cpu["conv"]["bias"]).max()) < 1e-5 * scale
  assert np.all(np.asarray(tpu["conv"]["bias"]) == 0.0)
  for path in (("conv", "kernel"), ("norm", "scale"), ("norm", "bias")):
    a, b = cpu[path[0]][path[1]], tpu[path[0]][path[1]]
    assert float(jnp.abs(a - b).max()) < 1e-5 * float(jnp.abs(a).max()), path
  # Eval mode differentiates through the running statistics, where the bias does not cancel:
  # its gradient stays on every target.
  ev = cls(features=4, train=False)
  with conv_lib.target_backend("tpu"):
    g = jax.grad(lambda p: jnp.sum(ev.apply({"params": p, "batch_stats": v["batch_stats"]}, x)
                                   * w))(params)
  assert float(jnp.abs(g["conv"]["bias"]).max()) > 1e-3


def test_one_pass_statistics_around_the_running_mean_keep_their_digits():
  """The closed-form path takes its statistics in one pass around the running mean. With
  |mean| >> std, E[x^2] - E[x]^2 around 0 loses the variance in float32; around a shift near the
  mean it keeps it, as the two-pass statistics do."""
  rs = np.random.RandomState(5)
  x64 = 300.0 + 0.5 * rs.randn(4, 16, 16, C)
  x = jnp.asarray(x64, jnp.float32)
  true_var = x64.reshape(-1, C).var(0)
  _, _, two_pass = bn_lib._stats(x, 1, None)
  _, mean, near = bn_lib._shifted_stats(x, jnp.full((C,), 299.9, jnp.float32), 1, None)
  _, _, around_zero = bn_lib._shifted_stats(x, jnp.zeros((C,), jnp.float32), 1, None)
  rel = lambda v: float(np.max(np.abs(np.asarray(v, np.float64) - true_var) / true_var))
  assert rel(two_pass) < 1e-4 and rel(near) < 1e-4
  assert rel(around_zero) > 1e-2  # the cancellation the shift avoids
  assert float(np.max(np.abs(np.asarray(mean) - x64.reshape(-1, C).mean(0)))) < 1e-4


@pytest.mark.parametrize("packed,height", [(0, 8), (0, 7), (2, 8), (2, 5), (4, 6)])
def test_fused_relu_pool_is_the_composed_norm_relu_pool(packed, height):
  """BatchNorm(relu_pool=True) on the closed-form path (one fused pass, its own VJP) against
  autodiff of norm -> ReLU -> 2x2 average pool: the same pooled output (odd sizes floored), running
  statistics and gradients, plain and width-packed by 2 and 4."""
  with jax.enable_x64():
    x = _maps(jnp.float64, shape=(3, height, 6 if not packed else 4, C * max(packed, 1)),
              mean=0.5)
    ya, sa, ga = _run(x, closed=False, packed=packed, relu_pool=True)
    yc, sc, gc = _run(x, closed=True, packed=packed, relu_pool=True)
    hp = height // 2
    assert ya.shape[1] == hp and yc.shape == ya.shape
    assert _max_rel(yc, ya) < 1e-14 and _max_rel(sc, sa) < 1e-14
    assert _max_rel(gc, ga) < 1e-12, (gc, ga)
    # Not trivial: the ReLU cuts a good part of the normalised map, and every gradient moves.
    y_norm, _, _ = _run(x, closed=False, packed=packed)
    assert 0.2 < float(jnp.mean(y_norm < 0)) < 0.8
    assert all(float(jnp.abs(g).max()) > 1e-2 for g in jax.tree.leaves(gc))
    # Rows the pool drops (odd height) still shape the statistics, hence their gradient: the
    # mean terms of the closed form, not zero.
    if height % 2:
      assert float(jnp.abs(gc[0][:, -1]).max()) > 1e-4


def test_fused_relu_pool_with_statistics_over_a_named_axis():
  with jax.enable_x64():
    x = _maps(jnp.float64, shape=(8, 6, 4, 2 * C), mean=0.5)
    w = jnp.asarray(_weights((8, 3, 4, C)), jnp.float64)  # the pooled shape
    y_all, s_all, g_all = _run(x, closed=False, packed=2, w=w, relu_pool=True)
    split = lambda a: a.reshape(4, 2, *a.shape[1:])
    y, s, g = jax.vmap(lambda xs, ws: _run(xs, closed=True, packed=2, axis_name="b", w=ws,
                                           relu_pool=True), axis_name="b")(split(x), split(w))
    assert _max_rel(y.reshape(y_all.shape), y_all) < 1e-13
    assert _max_rel(jax.tree.map(lambda v: v[0], s), s_all) < 1e-13
    assert _max_rel(g[0].reshape(x.shape), g_all[0]) < 1e-12
    assert _max_rel(jax.tree.map(lambda v: v.sum(0), g[1]), g_all[1]) < 1e-12


def test_down_block_rectifies_the_pooled_subpixels_on_a_tpu_target():
  """DownBlock2d's ReLU runs on the four half-resolution sub-pixel maps on a TPU target (the
  fused pass), and on the full-resolution map on the CPU (the parity program, unchanged)."""
  from osmnet_jax.nn import blocks

  m = blocks.DownBlock2d(features=4, train=True)
  x = jnp.asarray(np.random.RandomState(3).randn(2, 8, 8, 3), jnp.float32)
  v = m.init(jax.random.PRNGKey(0), x)

  def relus():
    f = lambda p: m.apply({"params": p, "batch_stats": v["batch_stats"]}, x,
                          mutable=["batch_stats"])[0].sum()
    return relu_shapes(jax.make_jaxpr(f)(v["params"]).jaxpr)

  assert relus() == [(2, 8, 8, 4)]
  with conv_lib.target_backend("tpu"):
    assert relus() == [(2, 4, 4, 4)] * 4
