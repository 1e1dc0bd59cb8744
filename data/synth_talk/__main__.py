"""Build ``synth_talk`` and/or render a preview (contact sheet PNG + mp4 with sound).

  python -m data.synth_talk --data_dir ~/tensorflow_datasets --config 64px
  python -m data.synth_talk --preview_dir runs/preview --config 128px --no-build
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np


def contact_sheet(clips: list[dict], every: int = 5, max_cols: int = 10) -> np.ndarray:
  """One row per clip: every ``every``-th frame, with its landmarks dotted on the last column."""
  rows = []
  for ex in clips:
    frames = ex["frames"][::every][:max_cols]
    rows.append(np.concatenate(list(frames), axis=1))
  return np.concatenate(rows, axis=0)


def preview(spec, out_dir: str, num_clips: int = 6) -> list[str]:
  """Write ``contact_sheet.png``, ``landmarks.png`` and ``clip_{i}.mp4`` (with audio)."""
  from PIL import Image

  from data.synth_talk import clips
  from osmnet_jax import media

  os.makedirs(out_dir, exist_ok=True)
  exs = [clips.generate_clip(spec, "train", i) for i in range(num_clips)]
  paths = [os.path.join(out_dir, "contact_sheet.png")]
  Image.fromarray(contact_sheet(exs)).save(paths[0])
  # Landmark overlay of the first frame of each clip, to check the stored ground truth.
  import cv2

  overlays = []
  for ex in exs:
    img = np.ascontiguousarray(ex["frames"][0])
    for x, y in ex["landmarks"][0]:
      radius = max(1, spec.resolution // 128)
      cv2.circle(img, (int(round(x)), int(round(y))), radius, (0, 255, 0), -1)
    overlays.append(img)
  paths.append(os.path.join(out_dir, "landmarks.png"))
  Image.fromarray(np.concatenate(overlays, 1)).save(paths[-1])
  for i, ex in enumerate(exs[:3]):
    paths.append(media.write_video(os.path.join(out_dir, f"clip_{i}.mp4"), ex["frames"],
                                   audio=ex["audio"]))
  return paths


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default="64px", choices=["32px", "64px", "128px"],
                 help="builder config (resolution); 200 train + 32 test clips of 2 s")
  p.add_argument("--data_dir", default=None, help="TFDS data dir (default: ~/tensorflow_datasets)")
  p.add_argument("--preview_dir", default=None, help="also write a contact sheet and mp4s here")
  p.add_argument("--no-build", dest="build", action="store_false", help="only the preview")
  args = p.parse_args(argv)

  from data.synth_talk import builder

  cfg = next(c for c in builder.SynthTalk.BUILDER_CONFIGS if c.name == args.config)
  if args.build:
    t0 = time.perf_counter()
    b = builder.build(args.config, args.data_dir)
    print(f"synth_talk/{args.config}: {b.info.splits['train'].num_examples} train, "
          f"{b.info.splits['test'].num_examples} test clips in {b.data_dir} "
          f"({time.perf_counter() - t0:.1f} s)")
  if args.preview_dir:
    for path in preview(cfg.spec, args.preview_dir):
      print("wrote", path)


if __name__ == "__main__":
  main()
