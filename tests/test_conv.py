"""nn/conv.py (im2col path for small maps), the matmul anti-alias and the strided-max max-pool:
the same functions as the XLA ops they replace, values and gradients."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import relu_shapes
from osmnet_jax.losses import vgg
from osmnet_jax.nn import conv as conv_lib
from osmnet_jax.nn.blocks import AntiAliasInterpolation2d, antialias_kernel

DN = ("NHWC", "HWIO", "NHWC")


def _assert_same_conv(ours_f, pad, x, w, r, atol, grad_atol):
  """ours_f(x, w) equals XLA's stride-1 conv with padding `pad` in value (atol, rtol 1e-5) and
  in both gradients under a random cotangent from `r` (grad_atol, rtol 1e-5)."""
  ref_f = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), pad, dimension_numbers=DN)
  ref, ours = ref_f(x, w), ours_f(x, w)
  assert ours.shape == ref.shape
  np.testing.assert_allclose(ours, ref, atol=atol, rtol=1e-5)
  cot = jnp.asarray(r.randn(*ref.shape).astype(np.float32))
  g_ref = jax.grad(lambda x, w: jnp.sum(ref_f(x, w) * cot), (0, 1))(x, w)
  g_ours = jax.grad(lambda x, w: jnp.sum(ours_f(x, w) * cot), (0, 1))(x, w)
  for a, b in zip(g_ours, g_ref):
    np.testing.assert_allclose(a, b, atol=grad_atol, rtol=1e-5)


@pytest.mark.parametrize("hw,k,pad", [(2, 3, ((1, 1), (1, 1))), (5, 3, ((1, 1), (1, 1))),
                                      (6, 7, ((3, 3), (3, 3))), (4, 1, ((0, 0), (0, 0))),
                                      (7, 3, ((0, 2), (1, 0)))])
def test_im2col_conv_matches_xla_values_and_grads(hw, k, pad):
  r = np.random.RandomState(hw + k)
  x = jnp.asarray(r.randn(3, hw, hw + 1, 5).astype(np.float32))
  w = jnp.asarray(r.randn(k, k, 5, 4).astype(np.float32))
  _assert_same_conv(lambda x, w: conv_lib.im2col_conv(x, w, pad), pad, x, w, r, 1e-5, 1e-4)


@pytest.mark.parametrize("k,cin,cout,f,pad", [(7, 3, 8, 4, ((3, 3), (3, 3))),
                                               (7, 8, 3, 4, ((3, 3), (3, 3))),
                                               (3, 6, 6, 2, ((1, 1), (1, 1))),
                                               (5, 4, 5, 2, ((0, 2), (1, 3))),
                                               (7, 5, 8, 2, ((0, 0), (0, 0))),
                                               (5, 6, 3, 4, ((1, 0), (2, 0))),
                                               (7, 108, 11, 2, ((3, 3), (3, 3)))])
def test_width_packed_conv_is_the_same_conv(k, cin, cout, f, pad):
  """The TPU path (f pixels folded into channels, rearranged kernel): the plain conv's values
  and both gradients, on a width-16 map, for the 7x7 ends, a 3x3, an asymmetric padding, and
  paddings that narrow the map (FOMM's padding-0 keypoint heads)."""
  r = np.random.RandomState(k + cin)
  x = jnp.asarray(r.randn(2, 5, 16, cin).astype(np.float32))
  # Unit-scale outputs, so the float32 tolerances below hold for the 5292-term sums too.
  w = jnp.asarray(r.randn(k, k, cin, cout).astype(np.float32) / np.sqrt(k * k * cin / 49))
  _assert_same_conv(lambda x, w: conv_lib.width_packed_conv(x, w, pad, f), pad, x, w, r, 2e-5,
                    2e-4)
  with pytest.raises(ValueError, match="W % f == 0"):
    conv_lib.width_packed_conv(x[:, :, :14], w, pad, 4)


def test_pack_rule_is_tpu_only_and_for_narrow_convs():
  same3, same7 = ((1, 1), (1, 1)), ((3, 3), (3, 3))
  assert conv_lib.pack_factor("auto", 3, 64, 256, 7, same7) == 0  # host backend: CPU
  with conv_lib.target_backend("tpu"):
    assert conv_lib.pack_factor("auto", 3, 64, 256, 7, same7) == 4    # FOMM `first`
    assert conv_lib.pack_factor("auto", 64, 3, 256, 7, same7) == 4    # FOMM `final`
    assert conv_lib.pack_factor("auto", 64, 64, 256, 3, same3) == 2   # VGG conv1
    assert conv_lib.pack_factor("auto", 64, 128, 256, 3, same3) == 0  # measured slower
    assert conv_lib.pack_factor("auto", 64, 64, 6, 3, same3) == 2
    assert conv_lib.pack_factor("auto", 64, 64, 7, 3, same3) == 0     # odd width
    assert conv_lib.pack_factor("auto", 64, 64, 8, 3, ((0, 0), (0, 0))) == 0  # shrinks W by 1/4
    assert conv_lib.pack_factor("auto", 35, 40, 64, 7, ((0, 0), (0, 0))) == 2  # FOMM kp heads
    assert conv_lib.pack_factor("auto", 35, 40, 16, 7, ((0, 0), (0, 0))) == 0  # ... at 16 px
    assert conv_lib.pack_factor("auto", 64, 64, 64, 3, ((2, 2), (2, 2))) == 0  # widens W
    assert conv_lib.pack_factor("auto", 108, 11, 64, 7, same7) == 2   # dense-motion mask head
    assert conv_lib.pack_factor("auto", 108, 1, 64, 7, same7) == 2    # ... occlusion head
    assert conv_lib.pack_factor("auto", 108, 32, 64, 7, same7) == 0   # not a narrow head
    assert conv_lib.pack_factor("auto", 256, 1, 64, 7, same7) == 0    # input too wide
    assert conv_lib.pack_factor("xla", 3, 64, 256, 7, same7) == 0
    # The module takes the packed path there: a fresh trace has the packed (f*C) operands.
    mod = conv_lib.Conv(64, (7, 7), padding=same7)
    x = jnp.zeros((1, 8, 8, 3))
    p = mod.init(jax.random.PRNGKey(0), x)
    hlo = jax.jit(lambda p, x: mod.apply(p, x)).lower(p, x).as_text()
  assert "tensor<1x8x2x12xf32>" in hlo and "tensor<7x3x12x256xf32>" in hlo
  with conv_lib.target_backend("gpu"):
    assert conv_lib.pack_factor("auto", 3, 64, 256, 7, same7) == 0
  assert conv_lib.pack_factor("packed", 64, 64, 256, 3, same3) == 2


@pytest.mark.parametrize("kind", ["vgg19", "lpips_vgg16"])
def test_vgg_packed_first_block_is_the_same_network(kind):
  """The TPU layout of VGG's 64-channel full-resolution block (pixel pairs in 128 channels,
  forced on here): the same features (unpacked by default, packed with any_pixel_order) and the
  same perceptual loss and gradient as the plain network, from the same parameters."""
  from osmnet_jax.losses import perceptual

  r = np.random.RandomState(0)
  x, y = (jnp.asarray(r.rand(2, 32, 32, 3).astype(np.float32)) for _ in range(2))
  plain = vgg.VGG(kind=kind, num_outputs=3, pack="off")
  packed = vgg.VGG(kind=kind, num_outputs=3, pack="on")
  v = plain.init(jax.random.PRNGKey(0), x)
  assert jax.tree.map(jnp.shape, packed.init(jax.random.PRNGKey(0), x)) == jax.tree.map(
      jnp.shape, v)
  for a, b in zip(packed.apply(v, x), plain.apply(v, x)):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  first = vgg.VGG(kind=kind, num_outputs=1, pack="on", any_pixel_order=True).apply(v, x)[0]
  assert first.shape == (2, 32, 16, 128)  # relu1_1 / relu1_2 still packed
  loss = lambda m, x: perceptual.perceptual_loss(m, v, x, y, (1, 0.5), (1.0, 1.0, 1.0))
  np.testing.assert_allclose(loss(packed, x), loss(plain, x), rtol=1e-6)
  np.testing.assert_allclose(jax.grad(lambda x: loss(packed, x))(x),
                             jax.grad(lambda x: loss(plain, x))(x), atol=1e-6, rtol=1e-4)
  assert vgg.pack_first_block("auto", 32) == 0  # host backend: CPU
  with conv_lib.target_backend("tpu"):
    assert vgg.pack_first_block("auto", 32) == 2 and vgg.pack_first_block("auto", 31) == 0


def test_generator_packed_full_resolution_is_the_same_network():
  """The generator's TPU layout (first, down_blocks_0, the last up block and final on pixel
  pairs packed into the channel axis; forced on here): the same prediction, BatchNorm running
  statistics and gradients as the plain network from the same variables, in train and eval
  mode; and the rule that decides where it applies."""
  from osmnet_jax.models.generator import OcclusionAwareGenerator

  r = np.random.RandomState(0)
  # No dense motion network: the packed layers are the ends, and the suite's time is short.
  kw = dict(num_kp=4, block_expansion=8, max_features=32, num_down_blocks=2,
            num_bottleneck_blocks=1)
  src = jnp.asarray(r.rand(2, 16, 16, 3), jnp.float32)
  kp = lambda: {"value": jnp.asarray(r.rand(2, 4, 2) * 1.6 - 0.8, jnp.float32),
                "jacobian": jnp.asarray(np.eye(2) + 0.1 * r.randn(2, 4, 2, 2), jnp.float32)}
  kd, ks = kp(), kp()
  gen = {p: OcclusionAwareGenerator(**kw, train=True, pack=p) for p in ("off", "on")}
  v = gen["off"].init(jax.random.PRNGKey(0), src, kd, ks)
  assert jax.tree.map(jnp.shape, gen["on"].init(jax.random.PRNGKey(0), src, kd, ks)) == (
      jax.tree.map(jnp.shape, v))

  def train(p):  # one program per layout: (gradients, prediction, running statistics)
    def loss(params, s):
      out, st = gen[p].apply({"params": params, "batch_stats": v["batch_stats"]}, s, kd, ks,
                             mutable=["batch_stats"])
      return jnp.mean(out["prediction"] ** 2), (out["prediction"], st["batch_stats"])
    return jax.jit(jax.grad(loss, (0, 1), has_aux=True))(v["params"], src)

  (ga, (a, sa)), (gb, (b, sb)) = train("on"), train("off")
  np.testing.assert_allclose(a, b, atol=1e-5)
  assert float(jnp.abs(a - b).max()) > 0  # really a different program (summation order)
  for x, y in zip(jax.tree.leaves(sa), jax.tree.leaves(sb)):
    np.testing.assert_allclose(x, y, atol=1e-6, rtol=1e-5)
  # Compared on the tree's scale: conv biases before a BatchNorm have a zero gradient (only
  # round-off).
  scale = max(float(jnp.abs(x).max()) for x in jax.tree.leaves(gb))
  for x, y in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
    np.testing.assert_allclose(x, y, atol=2e-5 * scale, rtol=1e-4)
  ev = {p: OcclusionAwareGenerator(**kw, pack=p).apply(v, src, kd, ks)["prediction"]
        for p in ("on", "off")}
  np.testing.assert_allclose(ev["on"], ev["off"], atol=1e-5)

  g = OcclusionAwareGenerator(**kw)
  assert g.full_resolution_pack((2, 32, 32, 3)) == 0  # 'auto' on the host backend: CPU
  with conv_lib.target_backend("tpu"):
    assert g.full_resolution_pack((2, 32, 32, 3)) == 2
    assert g.full_resolution_pack((2, 31, 32, 3)) == 0  # odd height: the pooling floors
    assert g.full_resolution_pack((2, 32, 30, 3)) == 2
    assert OcclusionAwareGenerator(**{**kw, "block_expansion": 128}).full_resolution_pack(
        (2, 32, 32, 3)) == 0
    with conv_lib.no_packing():
      assert g.full_resolution_pack((2, 32, 32, 3)) == 0


def test_render_call_packs_only_chains_on_tpu():
  """generate's render call is forward only, where single packed convs measured slower on v5e
  and the generator's packed chains faster: traced for a TPU it is the chains-only program,
  which differs from both the plain and the fully packed one; inside `no_packing()` (the AOT
  report's model-FLOP count) it packs nothing."""
  from osmnet_jax import renderer
  from osmnet_jax.inference import render as render_lib

  cfg = renderer.tiny_config()
  v = jax.eval_shape(lambda: renderer.init(jax.random.PRNGKey(0), cfg, 32, False))
  k = cfg.num_kp
  kp = lambda b: {"value": jax.ShapeDtypeStruct((b, k, 2), jnp.float32),
                  "jacobian": jax.ShapeDtypeStruct((b, k, 2, 2), jnp.float32)}
  src = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  render = lambda v, s, a, b: render_lib.render_frames(v, s, a, b, renderer_cfg=cfg,
                                                      uint8=False)
  # The same call without its packing rule: every narrow conv packed.
  unruled = lambda v, s, a, b: render_lib.render_clip(v, cfg, s, a, jax.tree.map(
      lambda x: x[None], b))[0]
  # A fresh function per lowering: `chains_only` (unlike `target_backend`) does not clear JAX's
  # trace caches, and the packing rule is read at trace time.
  lower = lambda f: jax.jit(lambda *a: f(*a)).lower(v, src, kp(1), kp(2)).as_text()
  with conv_lib.target_backend("tpu"):
    tpu = lower(render)
    with conv_lib.chains_only():
      chains = lower(unruled)
    with conv_lib.no_packing():
      plain = lower(render)
      assert lower(unruled) == plain
    everything = lower(unruled)
  # The render call's frames are those of render_clip; its program packs the chains only.
  assert tpu == chains
  assert len({plain, chains, everything}) == 3


def test_conv_module_has_nn_conv_params_and_output():
  x = jnp.asarray(np.random.RandomState(0).randn(2, 4, 4, 6).astype(np.float32))
  ref_mod = nn.Conv(8, (3, 3), padding=((1, 1), (1, 1)))
  params = ref_mod.init(jax.random.PRNGKey(0), x)
  for impl in ("xla", "im2col", "auto", "packed"):
    mod = conv_lib.Conv(8, (3, 3), padding=((1, 1), (1, 1)), impl=impl)
    ours_params = mod.init(jax.random.PRNGKey(0), x)
    assert jax.tree.map(jnp.shape, ours_params) == jax.tree.map(jnp.shape, params)
    np.testing.assert_allclose(mod.apply(params, x), ref_mod.apply(params, x), atol=1e-5)


def test_path_rule_and_compiled_program():
  assert conv_lib.use_im2col("auto", 2, 2) == (jax.default_backend() == "cpu")
  assert not conv_lib.use_im2col("auto", 16, 16)
  assert conv_lib.use_im2col("im2col", 64, 64) and not conv_lib.use_im2col("xla", 2, 2)
  with pytest.raises(ValueError, match="'auto', 'xla', 'im2col' or 'packed'"):
    conv_lib.use_im2col("fast", 2, 2)
  with pytest.raises(ValueError, match="explicit"):
    conv_lib.Conv(4, (3, 3), padding="SAME").init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 2, 3)))
  # The point of the module: on CPU a 2x2 map's conv is compiled as a dot, not a convolution.
  if jax.default_backend() == "cpu":
    mod = conv_lib.Conv(16, (3, 3), padding=((1, 1), (1, 1)))
    x = jnp.zeros((2, 2, 2, 16))
    p = mod.init(jax.random.PRNGKey(0), x)
    hlo = jax.jit(mod.apply).lower(p, x).compile().as_text()
    assert " convolution(" not in hlo and "dot" in hlo


@pytest.mark.parametrize("scale,size", [(0.5, 17), (0.25, 64), (0.25, 29)])
def test_antialias_matmul_equals_depthwise_conv(scale, size):
  """The separable matmul form == the full k x k depthwise strided conv it replaced (+ grads)."""
  x = jnp.asarray(np.random.RandomState(1).rand(2, size, size + 3, 3).astype(np.float32))
  kernel, ka, kb, stride = antialias_kernel(scale)
  k = jnp.asarray(np.tile(kernel[:, :, None, None], (1, 1, 1, 3)))

  def ref(x):
    return jax.lax.conv_general_dilated(x, k, (stride, stride), ((ka, kb), (ka, kb)),
                                        dimension_numbers=DN, feature_group_count=3,
                                        precision=jax.lax.Precision.HIGHEST)

  mod = AntiAliasInterpolation2d(scale)
  out = mod.apply({}, x)
  assert out.shape == ref(x).shape
  np.testing.assert_allclose(out, ref(x), atol=1e-6)
  cot = jnp.asarray(np.random.RandomState(2).randn(*out.shape).astype(np.float32))
  np.testing.assert_allclose(jax.grad(lambda x: jnp.sum(mod.apply({}, x) * cot))(x),
                             jax.grad(lambda x: jnp.sum(ref(x) * cot))(x), atol=1e-6)


@pytest.mark.parametrize("backend", ["cpu", "tpu"])
@pytest.mark.parametrize("h,w", [(8, 8), (7, 9)])
def test_max_pool2x_matches_reduce_window(h, w, backend):
  """Both paths (strided maxima on the CPU, reduce-window traced for a TPU) are nn.max_pool,
  values and gradients."""
  x = jnp.asarray(np.random.RandomState(3).randn(2, h, w, 4).astype(np.float32))
  ref = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
  cot = jnp.asarray(np.random.RandomState(4).randn(*ref(x).shape).astype(np.float32))
  with conv_lib.target_backend(backend):
    out = vgg.max_pool2x(x)
    grad = jax.grad(lambda x: jnp.sum(vgg.max_pool2x(x) * cot))(x)
    text = jax.jit(lambda x: vgg.max_pool2x(x)).lower(x).as_text()
  assert ("reduce_window" in text) == (backend == "tpu")
  np.testing.assert_array_equal(out, ref(x))
  np.testing.assert_allclose(grad, jax.grad(lambda x: jnp.sum(ref(x) * cot))(x), atol=1e-6)


@pytest.mark.parametrize("h", [8, 7])
def test_packed_max_pool2x_is_the_pool_of_the_unpacked_map(h):
  """VGG's first-block pool on pixel pairs packed into channels ([B, H, W/2, 2C]) gives the
  unpacked map's max pool, values and gradients (with respect to the packed input)."""
  r = np.random.RandomState(5)
  x = jnp.asarray(r.randn(2, h, 8, 3).astype(np.float32))  # unpacked [B, H, W, C]
  pack = lambda x: x.reshape(x.shape[0], x.shape[1], x.shape[2] // 2, 2 * x.shape[3])
  np.testing.assert_array_equal(vgg.packed_max_pool2x(pack(x), 2), vgg.max_pool2x(x))
  cot = jnp.asarray(r.randn(2, h // 2, 4, 3).astype(np.float32))
  g_packed = jax.grad(lambda x: jnp.sum(vgg.packed_max_pool2x(pack(x), 2) * cot))(x)
  g_plain = jax.grad(lambda x: jnp.sum(vgg.max_pool2x(x) * cot))(x)
  np.testing.assert_allclose(g_packed, g_plain, atol=1e-6)
  assert float(jnp.abs(g_plain).sum()) > 0


def test_target_backend_decides_the_path_when_tracing_for_another_platform():
  """osmnet_jax.aot traces on a CPU host for TPU/GPU targets: inside target_backend the small
  map's conv must be the target's convolution, and the host rule comes back after the block."""
  mod = conv_lib.Conv(16, (3, 3), padding=((1, 1), (1, 1)))
  x = jnp.zeros((2, 2, 2, 16))
  p = mod.init(jax.random.PRNGKey(0), x)
  with conv_lib.target_backend("tpu"):
    assert not conv_lib.use_im2col("auto", 2, 2)
    hlo = jax.jit(lambda p, x: mod.apply(p, x)).lower(p, x).as_text()  # fresh trace
  assert "convolution" in hlo
  with conv_lib.target_backend("cpu"):
    assert conv_lib.use_im2col("auto", 2, 2)
    hlo = jax.jit(lambda p, x: mod.apply(p, x)).lower(p, x).as_text()  # fresh trace
  assert "convolution" not in hlo
  assert conv_lib.use_im2col("auto", 2, 2) == (jax.default_backend() == "cpu")


def test_target_backend_retraces_an_already_traced_function():
  """JAX's trace caches do not key on `target_backend`: entering and leaving the block clears
  them, so one jitted function lowers for the host, the target, then the host again."""
  x = jnp.zeros((2, 8, 8, 16))
  step = jax.jit(lambda x: vgg.max_pool2x(x))
  host = step.lower(x).as_text()
  step(x)  # compiled and cached for the host
  with conv_lib.target_backend("tpu"):
    target = step.lower(x).as_text()
  after = step.lower(x).as_text()
  # The host pools with strided maxima, a TPU target with a reduce-window (losses/vgg.py).
  assert "reduce_window" not in host and "reduce_window" in target
  assert after == host


@pytest.mark.parametrize("packed", [0, 2])
def test_subpixel_up_block_is_the_upsample_then_conv(packed):
  """UpBlock2d's sub-pixel form (accelerator targets) computes FOMM's nearest-2x upsample + 3x3
  conv on the low-resolution map, and its BatchNorm and ReLU on the phases: the same parameters,
  output, statistics and gradients, plain and packed, train and eval mode."""
  from osmnet_jax.nn import blocks

  rs = np.random.RandomState(7)
  x = jnp.asarray(rs.randn(2, 5, 6, 7), jnp.float32)
  ref, sub = (blocks.UpBlock2d(features=3, train=True, packed=packed, subpixel=s)
              for s in (False, True))
  v = ref.init(jax.random.PRNGKey(0), x)
  assert jax.tree.map(jnp.shape, sub.init(jax.random.PRNGKey(0), x)) == jax.tree.map(jnp.shape, v)
  params = jax.tree.map(lambda a: a + 0.1 * jnp.asarray(rs.randn(*a.shape), a.dtype), v["params"])
  out_shape = ref.apply(v, x, mutable=["batch_stats"])[0].shape
  assert out_shape == ((2, 10, 6, 6) if packed else (2, 10, 12, 3))
  w = jnp.asarray(rs.randn(*out_shape), jnp.float32)

  def run(m):
    def loss(p, x):
      y, st = m.apply({"params": p, "batch_stats": v["batch_stats"]}, x, mutable=["batch_stats"])
      return jnp.sum(y * w), (y, st)
    (_, (y, st)), g = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x)
    return y, st, g

  for a, b in zip(jax.tree.leaves(run(ref)), jax.tree.leaves(run(sub))):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-4)
  # A TPU target: BatchNorm's closed form, run on the four phases side by side (its ReLU on
  # [B, h, w, 4*C]) before the depth-to-space; the same function.
  with conv_lib.target_backend("tpu"):
    for a, b in zip(jax.tree.leaves(run(ref)), jax.tree.leaves(run(sub))):
      np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-4)
    jaxpr = jax.make_jaxpr(lambda p: sub.apply({"params": p, "batch_stats": v["batch_stats"]}, x,
                                               mutable=["batch_stats"])[0])(params)
    assert relu_shapes(jaxpr.jaxpr) == [(2, 5, 6, 12)]
  # Eval mode (running statistics, as generate renders): the same output too.
  stats = jax.tree.map(lambda a: a + 0.5 * jnp.abs(jnp.asarray(rs.randn(*a.shape), a.dtype)),
                       v["batch_stats"])
  ev_ref, ev_sub = (blocks.UpBlock2d(features=3, train=False, packed=packed, subpixel=s)
                    for s in (False, True))
  np.testing.assert_allclose(
      np.asarray(ev_sub.apply({"params": params, "batch_stats": stats}, x)),
      np.asarray(ev_ref.apply({"params": params, "batch_stats": stats}, x)), rtol=1e-4, atol=1e-4)
  # Accelerator targets take it by default (3x3, padding 1); the CPU keeps FOMM's program.
  big, small = 32 * 32, 16 * 16
  assert not blocks._subpixel_default(3, 1, packed, big)
  with conv_lib.target_backend("tpu"):
    assert blocks._subpixel_default(3, 1, packed, big)
    assert not blocks._subpixel_default(5, 2, packed, big)
    assert not blocks._subpixel_default(3, 1, packed, small)
