"""Spread of metrics/pixel_motion's roll reading over synth_talk identities.

Renders the same 40-frame motion as tests/test_pixel_motion.py (roll +-0.2 rad, scaled by
--damp, plus a small translation) for identities 0..N-1 at 64 px, and reads it back from the
pixels. The test thresholds on that file cite this spread; run it again after changing the
metric or OpenCV.

  python benchmarks/pixel_motion_spread.py --identities 16 --damp 0.3   # ~30 s on 2 cores
"""
import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data.synth_talk import face_render  # noqa: E402
from osmnet_jax.metrics import pixel_motion as pm  # noqa: E402

T, S = 40, 64


def main():
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--identities", type=int, default=16)
  ap.add_argument("--damp", type=float, default=0.3, help="shown roll / asked roll")
  args = ap.parse_args()
  t = np.arange(T)
  rows = []
  for seed in range(args.identities):
    ident = face_render.Identity.sample(np.random.default_rng(seed))
    asked = np.tile(np.r_[0.0, 0.0, 0.0, ident.framing], (T, 1))
    asked[:, 2] = 0.2 * np.sin(2 * np.pi * t / 20)
    asked[:, 3] += 0.05 * np.sin(2 * np.pi * t / 13)
    asked[:, 4] += 0.04 * np.cos(2 * np.pi * t / 17)
    shown = asked.copy()
    shown[:, 2] *= args.damp
    z = np.zeros(T)
    frames, lm = face_render.render_frames(ident, shown, z, z, z, S)
    got = pm.head_motion_in_pixels(frames, asked, lm[0])["roll"]
    rows.append((seed, got["r"], got["amplitude_ratio"]))
  print(f"opencv {cv2.__version__}, damp {args.damp}")
  print("| identity | roll r | roll amplitude |\n|---:|---:|---:|")
  for seed, r, a in rows:
    print(f"| {seed} | {r:.3f} | {a:.3f} |")
  r, a = np.array([x[1] for x in rows]), np.array([x[2] for x in rows])
  print(f"r: min {r.min():.3f} median {np.median(r):.3f}; amplitude: {a.min():.3f}-{a.max():.3f}"
        f" (median {np.median(a):.3f})")


if __name__ == "__main__":
  main()
