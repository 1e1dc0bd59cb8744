r"""Where a trained OSM-Net motion space loses the one-to-many spread (synth_talk).

  python benchmarks/motion_space_spread.py --workdir W --data_dir D [--num_samples 8] \
      [--sigma_scales 1,1.5,2]

For W's checkpoints/motion, on the first T frames of each clip (one model clip, no cross-fade):
  * reconstruction: decode(encode(pose)) error variance / pose variance (rotation axes, dataset
    units) on the training clips, the sigma hold-out clips, the test clips and one fresh
    re-draw per test audio (``redraw_for_example``), beside a PCA with M components fitted to
    the training clips (what a linear motion space of that size keeps);
  * spread: the diversity (metrics/head_motion.py) of --num_samples re-draws per test audio
    after encode -> decode, and of samples alpha_hat + U(-1, 1) * sample_width * sigma, each as
    a ratio to the re-draws' own diversity; the samples also with sigma scaled by each of
    --sigma_scales (with their out-of-range fraction and pose FD against the re-draws).
A space that fits its training clips but not the others decodes unseen motions with less
spread; BENCHMARKS.md "Head motion: one-to-many diversity" has the figures.
"""
from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import default  # noqa: E402
from data.synth_talk import clips as synth_clips  # noqa: E402
from osmnet_jax import audio as audio_lib  # noqa: E402
from osmnet_jax import workdir as workdir_lib  # noqa: E402
from osmnet_jax.evaluation import clips as clips_lib  # noqa: E402
from osmnet_jax.input import datasets, pipeline  # noqa: E402
from osmnet_jax.metrics import head_motion  # noqa: E402
from osmnet_jax.models.motion_space import OSMNetMotion  # noqa: E402
from osmnet_jax.stages import motion as motion_stage  # noqa: E402


def _clips(builder, split, t, mean, std):
  """(normalised poses [C, T, 6], mel windows [C, T, 20, 80], clips) of ``split``."""
  cl = clips_lib.load_clips(builder, split, frames="none")
  pose = (np.stack([c["pose"][:t] for c in cl]) - mean) / std
  mel = np.stack([audio_lib.mel_windows(c["mel"])[:t] for c in cl])
  return pose.astype(np.float32), mel.astype(np.float32), cl


def _rel_err(x, recon):
  """Error variance / variance over the clips, rotation axes. x, recon [C, T, 6]."""
  return float(((recon - x)[..., :3] ** 2).mean() / x[..., :3].var(0).mean())


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--data_dir", default="")
  p.add_argument("--num_samples", type=int, default=8)
  p.add_argument("--sigma_scales", default="1", help="comma-separated factors on sigma")
  a = p.parse_args(argv)
  cfg = default.get_config()
  cfg.data.data_dir = a.data_dir
  builder = datasets.get_builder(cfg.data)
  mean, std = pipeline.pose_stats(builder)
  motion = workdir_lib.load_motion(a.workdir, "osmnet")
  model, v = motion.model, {"params": motion.params}
  t, m = model.num_frames, model.num_bases
  encode = jax.jit(lambda x: model.apply(v, x, method=OSMNetMotion.encode))
  decode = jax.jit(lambda al, r: model.apply(v, al, r, method=OSMNetMotion.decode))
  audio = jax.jit(lambda x: model.apply(v, x, method=OSMNetMotion.audio_features))
  mapped = jax.jit(lambda f: model.apply(v, f, None, method=OSMNetMotion.map_audio))

  def recon(pose, mel):
    return np.asarray(decode(encode(jnp.asarray(pose)), audio(jnp.asarray(mel))[1]))

  train_split, sigma_split = motion_stage.splits(motion.cfg)
  sets = {name: _clips(builder, split, t, mean, std) for name, split in
          (("train", train_split), ("sigma hold-out", sigma_split), ("test", "test"))}
  test_clips = sets["test"][2]
  n = a.num_samples
  true = np.stack([synth_clips.redraw_for_example(c, n, seed=10_000 + 7 * i)[:, :t]
                   for i, c in enumerate(test_clips)])  # [C, N, T, 6] dataset units
  true_n = ((true - mean) / std).astype(np.float32)
  sets["test re-draws"] = (true_n[:, 0], sets["test"][1], None)
  x_train = sets["train"][0].reshape(len(sets["train"][0]), -1)
  mu = x_train.mean(0)
  basis = np.linalg.svd(x_train - mu, full_matrices=False)[2][:m]  # [M, T*6]
  print(f"motion space: M = {m} bases, T = {t} frames; relative reconstruction error (rot.):")
  for name, (pose, mel, _) in sets.items():
    xc = pose.reshape(len(pose), -1) - mu
    pca = (xc @ basis.T @ basis + mu).reshape(pose.shape)
    print(f"  {name:15s} clips {len(pose):4d}  motion space {_rel_err(pose, recon(pose, mel)):.3f}"
          f"  PCA-{m} {_rel_err(pose, pca):.3f}")
  c = len(test_clips)
  mel_n = np.repeat(sets["test"][1], n, 0)
  feats, rhythm = audio(jnp.asarray(sets["test"][1]))
  alpha_hat = np.asarray(mapped(feats))  # [C, M]
  sigma = np.asarray(motion.stats["sigma"], np.float32)
  delta = np.random.default_rng(0).uniform(-1, 1, (c, n, m)) * motion.cfg.sample_width * sigma
  rhythm_n = jnp.repeat(rhythm, n, 0)
  to_units = lambda y: np.asarray(y).reshape(c, n, t, 6) * std + mean
  decoded = to_units(recon(true_n.reshape(c * n, t, 6), mel_n))
  td = head_motion.diversity(true)
  print(f"diversity of {n} re-draws per test audio: {td:.4f} rad; ratio kept by encode -> decode "
        f"{head_motion.diversity(decoded) / td:.3f}")
  stats, scale = builder.info.metadata["pose_stats"], np.asarray(std, np.float64)
  for f in (float(x) for x in a.sigma_scales.split(",")):
    sampled = to_units(decode(jnp.asarray((alpha_hat[:, None] + f * delta).reshape(c * n, m),
                                          jnp.float32), rhythm_n))
    fd = head_motion.frechet_distance(head_motion.clip_descriptors(sampled, scale),
                                      head_motion.clip_descriptors(true, scale))
    print(f"sampled (one clip, r = 1), sigma x {f:g}: diversity ratio "
          f"{head_motion.diversity(sampled) / td:.3f}, out of range "
          f"{head_motion.out_of_range_frac(sampled, stats):.4f}, pose FD {fd:.2f}")


if __name__ == "__main__":
  main()
