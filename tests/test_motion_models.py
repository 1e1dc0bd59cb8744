"""OSM-Net motion models: orthonormal bases, shapes, audio encoder, baselines (tiny sizes)."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from osmnet_jax.models import audio_encoder, motion_space, pose_baselines


@pytest.mark.parametrize("d,m", [(8, 4), (64, 8), (16, 16)])
def test_bases_orthonormal_for_random_w(d, m):
  for seed in range(3):
    w = jax.random.normal(jax.random.PRNGKey(seed), (d, m)) * (seed + 0.5)
    q = motion_space.orthonormal_bases(w)
    assert q.shape == (d, m)
    np.testing.assert_allclose(np.asarray(q.T @ q), np.eye(m), atol=1e-5)
    # Q spans W's column space: W = Q (Q^T W), and the R factor has a positive diagonal.
    r = q.T @ w
    np.testing.assert_allclose(np.asarray(q @ r), np.asarray(w), atol=1e-4)
    assert np.all(np.diag(np.asarray(r)) > 0)


def test_bases_are_a_smooth_function_of_w():
  """The sign fix makes Q continuous in W: a tiny change of W gives a tiny change of Q, and
  gradients through the QR are finite."""
  w = jax.random.normal(jax.random.PRNGKey(0), (12, 5))
  dw = jax.random.normal(jax.random.PRNGKey(1), (12, 5))
  q0 = motion_space.orthonormal_bases(w)
  for eps in (1e-3, 1e-4):
    q1 = motion_space.orthonormal_bases(w + eps * dw)
    assert float(jnp.max(jnp.abs(q1 - q0))) < 50 * eps
  g = jax.grad(lambda w: jnp.sum(motion_space.orthonormal_bases(w) ** 3))(w)
  assert np.all(np.isfinite(np.asarray(g))) and float(jnp.abs(g).sum()) > 0
  # Flipping the sign of a column of W flips the same column of Q (no arbitrary flips).
  q_flip = motion_space.orthonormal_bases(w.at[:, 2].multiply(-1))
  np.testing.assert_allclose(np.asarray(q_flip[:, 2]), -np.asarray(q0[:, 2]), atol=1e-5)


def test_audio_encoder_shapes():
  enc = audio_encoder.AudioEncoder(features=12, channels=(4, 8))
  x = jnp.asarray(np.random.default_rng(0).normal(-7, 4, (2, 3, 20, 80)), jnp.float32)
  v = jax.jit(enc.init)(jax.random.PRNGKey(0), x[0])
  apply = jax.jit(enc.apply)  # jitted: op-by-op flax compiles every op separately (slow)
  flat = apply(v, x.reshape(6, 20, 80))
  assert flat.shape == (6, 12)
  folded = apply(v, x)  # [B, T, 20, 80] -> [B, T, D]: T folded into the batch
  assert folded.shape == (2, 3, 12)
  np.testing.assert_allclose(np.asarray(folded).reshape(6, 12), np.asarray(flat), atol=1e-5)
  assert float(jnp.std(flat)) > 0.1  # not a constant


def _tiny_osmnet(identity="none"):
  return motion_space.OSMNetMotion(num_frames=8, num_bases=4, motion_dim=8, hidden=16, depth=1,
                                   audio_dim=16, audio_channels=(4, 8), rhythm_dim=4,
                                   identity=identity)


def test_osmnet_motion_shapes_and_methods():
  model = _tiny_osmnet("image")
  v = jax.jit(lambda r: motion_space.init_variables(model, r, image_size=16))(
      jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  mel = jnp.asarray(rng.normal(-7, 4, (3, 8, 20, 80)), jnp.float32)
  pose = jnp.asarray(rng.normal(size=(3, 8, 6)), jnp.float32)
  src = jnp.asarray(rng.integers(0, 255, (3, 16, 16, 3)), jnp.uint8)
  out = jax.jit(model.apply)(v, mel, pose, src)
  assert out["alpha"].shape == (3, 4) and out["alpha_hat"].shape == (3, 4)
  assert out["recon"].shape == (3, 8, 6) and out["rhythm"].shape == (3, 8, 4)
  q = jax.jit(functools.partial(model.apply, method=motion_space.OSMNetMotion.bases))(v)
  np.testing.assert_allclose(np.asarray(q.T @ q), np.eye(4), atol=1e-5)
  dec = jax.jit(functools.partial(model.apply, method=motion_space.OSMNetMotion.decode))(
      v, out["alpha"], out["rhythm"])
  np.testing.assert_allclose(np.asarray(dec), np.asarray(out["recon"]), atol=1e-5)
  with pytest.raises(ValueError, match="num_frames"):
    jax.jit(model.apply)(v, mel[:, :5], pose[:, :5], src)
  with pytest.raises(ValueError, match="motion_dim"):
    motion_space.init_variables(motion_space.OSMNetMotion(num_bases=8, motion_dim=4),
                                jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="encoder"):
    motion_space.init_variables(motion_space.OSMNetMotion(encoder="mlp"), jax.random.PRNGKey(0))


def test_pose_regressor_runs_on_any_length_and_uses_noise():
  rng = np.random.default_rng(0)
  lstm = pose_baselines.PoseRegressor(audio_dim=8, audio_channels=(4,), hidden=8, layers=1)
  noisy = pose_baselines.PoseRegressor(audio_dim=8, audio_channels=(4,), hidden=8, layers=1,
                                       noise_dim=3)
  mel = jnp.asarray(rng.normal(-7, 4, (2, 8, 20, 80)), jnp.float32)
  v = jax.jit(lstm.init)(jax.random.PRNGKey(0), mel)
  run = jax.jit(lstm.apply)
  assert run(v, mel).shape == (2, 8, 6)
  assert run(v, jnp.concatenate([mel, mel], 1)).shape == (2, 16, 6)  # longer audio
  z = pose_baselines.make_noise(jax.random.PRNGKey(1), 2, 8, 3, per_frame=False)
  vn = jax.jit(noisy.init)(jax.random.PRNGKey(0), mel, z)
  run_n = jax.jit(noisy.apply)
  a = run_n(vn, mel, z)
  b = run_n(vn, mel, pose_baselines.make_noise(jax.random.PRNGKey(2), 2, 8, 3, False))
  assert a.shape == (2, 8, 6) and float(jnp.abs(a - b).max()) > 1e-4  # the noise matters
  zf = pose_baselines.make_noise(jax.random.PRNGKey(1), 2, 8, 3, per_frame=True)
  assert run_n(vn, mel, zf).shape == (2, 8, 6)
  with pytest.raises(ValueError, match="noise"):
    run_n(vn, mel)


def _linear_space_clips(num: int, seed: int, t: int = 8, m: int = 3) -> np.ndarray:
  """[num, t, 6] smooth pose clips spanning exactly an m-dim linear space (fixed sinusoid
  bases, N(0, 1) coefficients drawn with ``seed``)."""
  rng = np.random.default_rng(0)
  tt = np.arange(t)[:, None, None] / t
  bases = np.sin(2 * np.pi * rng.uniform(0.3, 1.5, (1, m, 6)) * tt
                 + rng.uniform(0, 2 * np.pi, (1, m, 6)))  # [t, m, 6]
  coef = np.random.default_rng(seed).standard_normal((num, m))
  return np.einsum("nm,tmc->ntc", coef, bases).astype(np.float32)


def _fit_motion_space(encoder: str, decoder_skip: bool, train: np.ndarray, steps: int = 200):
  """Trains a tiny MotionSpace on ``train`` [N, T, 6] (L1 reconstruction, full batch, zero
  rhythm); returns clips [K, T, 6] -> their reconstruction."""
  t = train.shape[1]
  space = motion_space.MotionSpace(num_frames=t, num_bases=3, motion_dim=8, hidden=16, depth=1,
                                   encoder=encoder, decoder_skip=decoder_skip)
  rhythm = lambda x: jnp.zeros((x.shape[0], t, 2))
  params = space.init(jax.random.PRNGKey(0), train[:1], rhythm(train[:1]))["params"]
  tx = optax.adam(3e-3)

  def loss(p):
    return jnp.mean(jnp.abs(space.apply({"params": p}, train, rhythm(train))[1] - train))

  def step(carry, _):
    p, opt = carry
    updates, opt = tx.update(jax.grad(loss)(p), opt)
    return (optax.apply_updates(p, updates), opt), None

  params = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), None, steps)[0][0])(params)
  return jax.jit(lambda x: space.apply({"params": params}, x, rhythm(x))[1])


def test_linear_motion_space_keeps_the_spread_of_unseen_clips():
  """The mechanism behind config.motion.encoder='linear': on motions from a 3-d linear space,
  the linear encoder (+ decoder skip) reconstructs UNSEEN clips almost exactly, so their spread
  survives encoding and decoding (what the sampler's spread rests on); the conv encoder fits
  the 64 training clips but reconstructs unseen ones several times worse."""
  train, unseen = _linear_space_clips(64, seed=1), _linear_space_clips(256, seed=2)

  def rel_err_and_spread(recon):
    r = np.asarray(recon(unseen))
    return float(((r - unseen) ** 2).mean() / unseen.var(0).mean()), float(
        r.std(0).mean() / unseen.std(0).mean())

  lin_err, lin_spread = rel_err_and_spread(_fit_motion_space("linear", True, train))
  conv_err, _ = rel_err_and_spread(_fit_motion_space("conv", False, train))
  assert lin_err < 0.05 and 0.95 < lin_spread < 1.05, (lin_err, lin_spread)
  assert conv_err > 3 * lin_err, (conv_err, lin_err)
