r"""What can a 2-D warp of the source frame show? The ceiling of a warp-based renderer.

  python benchmarks/landmark_warp_ceiling.py --workdir W [--clips 16] [--noise_px 0.3,0.6]

FOMM moves the source frame by a flow built from keypoint motions; it cannot paint what the
source does not show. This script asks how much of the held-out clips' motion a *perfect*
landmark-driven warp would put on the pixels: every frame t of a clip is frame 0 moved by a
piecewise-affine map (scikit-image) through the true landmarks of frame t (to where they are in
frame 0), plus the 8 frame-border points held fixed. Rows:

  real              the clip's own frames (the measure's ceiling);
  warp, 68 points   through all 68 landmarks;
  warp, anchors     through only the renderer's anchor landmarks
                    (config.renderer.train.anchor_landmarks: what its keypoints are tied to);
  ... + noise       the same with independent Gaussian noise of that many pixels on every
                    driving point, frame by frame (a keypoint detector's jitter);
  warp, keypoints   through the renderer's own detector keypoints (frame 0's -> frame t's):
                    the same keypoints the renderer reconstruction is driven by, with the
                    dense-motion network's flow replaced by an exact interpolation of them;
  renderer          the workdir's renderer reconstruction (as `eval.py --mode reconstruction`).

Each is scored by PSNR against the true frames (frames 1.., mean per clip) and by
`metrics.pixel_motion.clip_scores` (roll by ECC registration, yaw / pitch by
the independent face mesh, mouth by the registered mouth region), median over clips. Nothing
here trains. Output: a markdown table on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

KEYS = ("psnr", "yaw_r", "yaw_amplitude", "pitch_r", "pitch_amplitude", "roll_r",
        "roll_amplitude", "mouth_landmark_r", "mouth_audio_r")


def psnr(frames: np.ndarray, truth: np.ndarray) -> float:
  """Mean PSNR (dB, uint8 frames [T, S, S, 3]) of frames 1.. against the true ones (frame 0 is
  the source itself in every row)."""
  err = (frames[1:].astype(np.float64) - truth[1:].astype(np.float64)) ** 2
  return float(np.mean(10.0 * np.log10(255.0 ** 2 / np.maximum(err.mean(axis=(1, 2, 3)), 1e-10))))


def border_points(size: int) -> np.ndarray:
  """The 4 corners and 4 edge midpoints of an S x S frame, pixels (x, y) [8, 2]."""
  e, m = size - 1, size // 2
  return np.array([[0, 0], [e, 0], [0, e], [e, e], [m, 0], [0, m], [e, m], [m, e]], np.float64)


def warp_through_points(source: np.ndarray, src_pts: np.ndarray, drv_pts: np.ndarray
                        ) -> np.ndarray:
  """source uint8 [S, S, 3]; src_pts, drv_pts [N, 2] pixels (x, y) -> uint8 [S, S, 3]: the
  source moved so that what is at src_pts lands on drv_pts (piecewise affine over a Delaunay
  triangulation of the points and the frame border; the border stays put)."""
  from skimage import transform

  from osmnet_jax import media

  size = source.shape[0]
  border = border_points(size)
  # skimage's warp wants the map from output pixels (the driving frame) to input pixels.
  drv = np.concatenate([np.asarray(drv_pts, np.float64), border])
  src = np.concatenate([np.asarray(src_pts, np.float64), border])
  if hasattr(transform.PiecewiseAffineTransform, "from_estimate"):  # scikit-image >= 0.26
    tf = transform.PiecewiseAffineTransform.from_estimate(drv, src)
    ok = bool(tf)
  else:
    tf = transform.PiecewiseAffineTransform()
    ok = tf.estimate(drv, src)
  if not ok:
    raise ValueError("piecewise-affine fit failed: degenerate points")
  out = transform.warp(source.astype(np.float64) / 255.0, tf, order=1, mode="edge")
  return media.to_uint8(out)


def warp_clip(frames: np.ndarray, landmarks: np.ndarray, points: list[int], noise_px: float = 0.0,
              rng: np.random.Generator | None = None) -> np.ndarray:
  """frames uint8 [T, S, S, 3], landmarks [T, 68, 2] -> frame 0 warped to every frame's
  landmarks[:, points] (+ noise on the driving points), uint8 [T, S, S, 3]; frame 0 unchanged."""
  lm = np.asarray(landmarks, np.float64)[:, points]
  rng = rng or np.random.default_rng(0)
  out = [frames[0]]
  for t in range(1, len(frames)):
    drv = lm[t] + (rng.normal(0.0, noise_px, lm[t].shape) if noise_px else 0.0)
    out.append(warp_through_points(frames[0], lm[0], drv))
  return np.stack(out)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True,
                 help="a training workdir: its config.json names the dataset and the anchors; "
                      "its renderer checkpoint gives the 'renderer' row (skipped if none)")
  p.add_argument("--clips", type=int, default=16, help="held-out clips")
  p.add_argument("--noise_px", default="0.3,0.6",
                 help="comma-separated jitter (pixels) for the anchor warps; '' for none")
  p.add_argument("--split", default="test")
  args = p.parse_args(argv)

  import ml_collections

  from osmnet_jax import media
  from osmnet_jax import workdir as workdir_lib
  from osmnet_jax.evaluation import clips, reconstruction
  from osmnet_jax.inference import render
  from osmnet_jax.input import datasets
  from osmnet_jax.metrics import pixel_motion

  with open(os.path.join(args.workdir, "config.json")) as f:
    cfg = ml_collections.ConfigDict(json.load(f))
  anchors = list(cfg.renderer.train.anchor_landmarks)
  noises = [float(v) for v in args.noise_px.split(",") if v.strip()]
  variants = {"warp, 68 points": (list(range(68)), 0.0), "warp, anchors": (anchors, 0.0)}
  variants.update({f"warp, anchors + {n:g} px noise": (anchors, n) for n in noises})
  try:
    variables, mcfg = workdir_lib.load_renderer(args.workdir)
  except workdir_lib.WorkdirError as e:
    print(f"no renderer row: {e}", file=sys.stderr)
    variables = None
  rows: dict[str, list] = {"real": [], **{k: [] for k in variants}}
  if variables is not None:
    rows["warp, keypoints"] = []
    rows["renderer"] = []
  rng = np.random.default_rng(0)
  for ex in clips.iter_clips(datasets.get_builder(cfg.data), args.split, args.clips):
    fr, lm, pose, audio = ex["frames"], ex["landmarks"], ex["pose"], ex.get("audio")
    movies = {"real": fr}
    for name, (pts, noise) in variants.items():
      movies[name] = warp_clip(fr, lm, pts, noise, rng)
    if variables is not None:
      # Keypoints are FOMM's normalised (x, y), pixel j at 2 j / (S - 1) - 1.
      kp = (np.asarray(render.detect_sequence(variables, mcfg, fr)["value"], np.float64) + 1.0
            ) * (fr.shape[1] - 1) / 2.0
      movies["warp, keypoints"] = np.stack(
          [fr[0]] + [warp_through_points(fr[0], kp[0], kp[t]) for t in range(1, len(fr))])
      pred = reconstruction.reconstruct_clip(variables, mcfg, fr, landmarks=lm)
      movies["renderer"] = media.to_uint8(pred)
    for name, movie in movies.items():
      row = pixel_motion.clip_scores(movie, pose, lm, audio)
      row["psnr"] = None if name == "real" else psnr(movie, fr)
      rows[name].append(row)
  print(f"anchors: {anchors}; {len(rows['real'])} {args.split} clips; median over clips")
  print("| frames | " + " | ".join(KEYS) + " |")
  print("|---|" + "---:|" * len(KEYS))
  for name, r in rows.items():
    m = pixel_motion.median_scores(r)
    cells = ["-" if m.get(k) is None else f"{m[k]:.2f}" for k in KEYS]
    print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
