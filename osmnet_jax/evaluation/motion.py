r"""Head-motion evaluation on synth_talk test clips: one-to-many diversity vs the ground truth.

  python -m osmnet_jax.evaluation.motion --workdir W [--data_dir D] [--num_samples 8]
  # -> W/eval/head_motion.json; or from eval.py:
  metrics = evaluate_motion(workdir, builder, num_samples=8)   # {method: {"head_motion", "meta"}}

For every test clip (its whole length, e.g. 50 frames: longer than the model's clip, so OSM-Net's
overlapping-clip blending is exercised) each trained model in W (checkpoints/motion = OSM-Net,
checkpoints/motion_<baseline>) samples ``num_samples`` pose sequences for the clip's audio; the
ground truth is ``num_samples`` re-draws of synth_talk's motion process for the same audio
(``redraw_for_example``). Metrics: metrics/head_motion.py. The seed is fixed, so the numbers are
reproducible. Datasets without ``stress``/``framing`` (real videos) have no re-draws: the
ground-truth-based metrics are null with the reason in meta.skipped, and pose_fd uses the test
clips' own poses.
"""
from __future__ import annotations

import json
import os

import jax
import numpy as np

from osmnet_jax import audio as audio_lib
from osmnet_jax import workdir as workdir_lib
from osmnet_jax.evaluation import clips as clips_lib
from osmnet_jax.inference import sampling as motion_sampling
from osmnet_jax.input import pipeline as input_pipeline
from osmnet_jax.metrics import head_motion
from osmnet_jax.models import motion as motion_models


def _redraws(clips: list[dict], num: int, seed: int) -> np.ndarray | None:
  if not all("stress" in c and "framing" in c for c in clips):
    return None
  from data.synth_talk import clips as synth_clips

  return np.stack([synth_clips.redraw_for_example(c, num, seed=seed + 7 * i)
                   for i, c in enumerate(clips)])


def evaluate_motion(workdir: str, builder, num_samples: int = 8, split: str = "test",
                    seed: int = 0, diversity: float | None = None,
                    models: tuple[str, ...] = motion_models.MODELS) -> dict:
  """Head-motion metrics of every trained motion model in ``workdir`` (DESIGN.md §7 format)."""
  stats = builder.info.metadata["pose_stats"]
  mean, std = input_pipeline.pose_stats(builder)
  trained = [m for m in workdir_lib.trained_motion_models(workdir) if m in models]
  loaded = {m: workdir_lib.load_motion(workdir, m) for m in trained}
  need_source = any(motion.uses_source for motion in loaded.values())
  clips = clips_lib.load_clips(builder, split, frames="first" if need_source else "none")
  lengths = {len(c["pose"]) for c in clips}
  if len(lengths) != 1:  # [ours] batching needs one length; synth_talk clips share theirs
    keep = max(lengths, key=lambda n: sum(len(c["pose"]) == n for c in clips))
    clips = [c for c in clips if len(c["pose"]) == keep]
  mel = np.stack([audio_lib.mel_windows(c["mel"]) for c in clips])  # [C, L, 20, 80]
  source = np.stack([c["source"] for c in clips]) if need_source else None
  real = np.stack([c["pose"] for c in clips])[:, None]  # [C, 1, L, 6] the recorded motion
  true = _redraws(clips, num_samples, seed=10_000 + seed)
  skipped = {} if true is not None else {
      k: "no ground-truth re-draws (dataset has no stress/framing)"
      for k in ("true_diversity", "diversity_ratio")}
  reference = true if true is not None else real
  results = {}
  for name, motion in loaded.items():
    sigma_stats = motion.stats
    sample = motion_sampling.make_sampler(motion, motion.params, sigma_stats)
    rng = jax.random.PRNGKey(seed)
    poses = np.asarray(sample(mel, source, rng, num_samples=num_samples, diversity=diversity))
    poses = poses * std + mean  # [C, N, L, 6] in dataset units
    hm = head_motion.head_motion_metrics(poses, true, stats, real=reference)
    meta = {"split": split, "num_clips": len(clips), "num_samples": num_samples,
            "num_frames": int(mel.shape[1]), "clip_frames": int(motion.cfg.num_frames),
            "checkpoint": motion.checkpoint_dir,
            "checkpoint_step": sigma_stats.get("checkpoint_step"),
            "diversity_knob": float(motion.cfg.diversity if diversity is None else diversity),
            "reference": {
                "true_out_of_range_frac": head_motion.out_of_range_frac(reference, stats),
                "true_pose_std": head_motion.pose_std(reference),
                "true_pose_velocity": head_motion.pose_velocity(reference),
                "recorded_out_of_range_frac": head_motion.out_of_range_frac(real, stats)}}
    if name == "osmnet":
      meta["sigma"] = sigma_stats.get("sigma")
      at0 = np.asarray(sample(mel, source, rng, num_samples=2, diversity=0.0))
      meta["diversity_at_r0"] = head_motion.diversity(at0 * std + mean)
    if skipped:
      meta["skipped"] = skipped
    results[name] = {"head_motion": hm, "meta": meta}
  return results


def main(argv):
  del argv
  from absl import flags

  from configs import default
  from osmnet_jax.input import datasets

  f = flags.FLAGS
  cfg = default.get_config()
  if f.data_dir:
    cfg.data.data_dir = f.data_dir
  cfg.data.builder_config = f.builder_config
  builder = datasets.get_builder(cfg.data)
  out = evaluate_motion(f.workdir, builder, f.num_samples, split=f.split, seed=f.seed,
                        diversity=f.diversity)
  os.makedirs(os.path.join(f.workdir, "eval"), exist_ok=True)
  path = os.path.join(f.workdir, "eval", "head_motion.json")
  with open(path, "w") as fh:
    json.dump(out, fh, indent=2)
  print(json.dumps(out, indent=2))
  print("wrote", path)


if __name__ == "__main__":
  from absl import app, flags

  flags.DEFINE_string("workdir", None, "Workdir with checkpoints/motion[_<baseline>].")
  flags.DEFINE_string("data_dir", "", "TFDS data dir (default: $TFDS_DATA_DIR or ~/...).")
  flags.DEFINE_string("builder_config", "64px", "synth_talk config.")
  flags.DEFINE_string("split", "test", "Split to evaluate.")
  flags.DEFINE_integer("num_samples", 8, "Samples per audio.")
  flags.DEFINE_integer("seed", 0, "Sampling seed.")
  flags.DEFINE_float("diversity", None, "Diversity knob r (default: the trained config's).")
  flags.mark_flag_as_required("workdir")
  app.run(main)
