r"""Does metrics/mesh_rotation recover yaw and pitch from 64 px frames? Frames of KNOWN pose.

  python benchmarks/bench_yaw_pitch_pixels.py [--clips 32] [--blur 0.5,1.0,1.5] [--only-blur]

Four checks, each printed as Pearson r and amplitude ratio (std measured / std asked) of the
re-estimated track against the pose the frames were drawn with (metrics/pixel_motion.agreement):
  sinusoid   synth_talk faces (3 identities) turning with a sinusoidal yaw, then pitch, of two
             amplitudes, mouth closed; and a yaw drawn at 0.3x the asked one (must read ~0.3x);
  still      a still head that talks and blinks (synth_talk tracks): the std of the estimate is
             the noise floor (degrees);
  clips      synth_talk 64px test clips (data/synth_talk/clips.py, no TFDS build needed): the
             true frames against their true pose, all axes moving, mouth talking — what eval.py's
             ``real`` row measures;
  blurred    the same test clips' true frames under a Gaussian blur of each ``--blur`` sigma
             (pixels): the motion is the truth's, only the sharpness falls, so any drop is the
             estimator's sensitivity to soft frames (``--blur`` empty: skipped);
  photo      scikit-image's astronaut at 64 px turned by a 2.5-D warp: the photo on an ellipsoid
             head whose depth is half the face width, yaw then pitch. The warp's depth is an
             assumption, so its amplitude ratio is indicative; r tests a real face's texture.
"""
from __future__ import annotations

import argparse
import functools
import time

import cv2
import numpy as np

from data.synth_talk import clips as synth_clips
from data.synth_talk import face_render
from osmnet_jax.face import landmarks as landmark_backends
from osmnet_jax.metrics import mesh_rotation
from osmnet_jax.metrics import pixel_motion as pm

T, S = 40, 64


def _fmt(a: dict) -> str:
  return f"r {a['r']:.3f} ratio {a['amplitude_ratio']:.2f}"


def sinusoid() -> None:
  t = np.arange(T)
  z = np.zeros(T)
  for seed in (3, 5, 7):
    ident = face_render.Identity.sample(np.random.default_rng(seed))
    for axis, name, amp in ((0, "yaw", 0.2), (1, "pitch", 0.12), (0, "yaw", 0.06),
                            (1, "pitch", 0.06)):
      pose = np.tile(np.r_[0.0, 0.0, 0.0, ident.framing], (T, 1))
      pose[:, axis] = amp * np.sin(2 * np.pi * t / 20)
      frames, lm = face_render.render_frames(ident, pose, z, z, z, S)
      got = pm.head_motion_in_pixels(frames, pose, lm[0])
      print(f"sinusoid id{seed} {name} {amp:.2f} rad: {_fmt(got[name])}", flush=True)
    pose = np.tile(np.r_[0.0, 0.0, 0.0, ident.framing], (T, 1))
    pose[:, 0] = 0.2 * np.sin(2 * np.pi * t / 20)
    shown = pose * [0.3, 1, 1, 1, 1, 1]
    frames, lm = face_render.render_frames(ident, shown, z, z, z, S)
    got = pm.head_motion_in_pixels(frames, pose, lm[0])
    print(f"sinusoid id{seed} yaw drawn at 0.3x: {_fmt(got['yaw'])}", flush=True)


def still(num: int) -> None:
  spec = synth_clips.SynthSpec()
  for i in range(num):
    ex = synth_clips.generate_clip(spec, "test", i, tracks=True)
    tr = ex["_tracks"]
    pose = np.tile(ex["pose"][:1], (len(ex["pose"]), 1))
    pose[:, :3] = 0.0
    frames, lm = face_render.render_frames(tr["identity"], pose, ex["mouth_open"],
                                           tr["mouth_round"], tr["blink"], S)
    seen = mesh_rotation.yaw_pitch(frames, lm[0])
    print(f"still, talking, clip {i}: std yaw {np.rad2deg(seen['yaw'].std()):.2f} deg, "
          f"pitch {np.rad2deg(seen['pitch'].std()):.2f} deg", flush=True)


@functools.cache
def _test_clips(num: int) -> tuple[dict, ...]:
  """The first ``num`` synth_talk test clips, generated once for the checks that read them."""
  spec = synth_clips.SynthSpec()
  return tuple(synth_clips.generate_clip(spec, "test", i) for i in range(num))


def clips(num: int) -> None:
  rows = []
  for ex in _test_clips(num):
    row = pm.clip_scores(ex["frames"], ex["pose"], ex["landmarks"], ex["audio"])
    row["asked_pitch_std_deg"] = float(np.rad2deg(ex["pose"][:, 1].std()))
    rows.append(row)
  med = pm.median_scores(rows)
  big = pm.median_scores([r for r in rows if r["asked_pitch_std_deg"] > 3.0])
  print(f"clips (true frames, {num}): yaw r {med['yaw_r']:.2f} ratio {med['yaw_amplitude']:.2f}; "
        f"pitch r {med['pitch_r']:.2f} ratio {med['pitch_amplitude']:.2f} (clips whose pitch std "
        f"> 3 deg: r {big['pitch_r']:.2f} ratio {big['pitch_amplitude']:.2f}); roll r "
        f"{med['roll_r']:.2f} ratio {med['roll_amplitude']:.2f}; skipped: "
        f"{med['yaw_pitch_skipped']}", flush=True)


def blurred(num: int, sigmas: list[float]) -> None:
  for sigma in sigmas:
    rows = [pm.clip_scores(np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in ex["frames"]]),
                           ex["pose"], ex["landmarks"], ex["audio"]) for ex in _test_clips(num)]
    med = pm.median_scores(rows)
    print(f"blurred true frames, sigma {sigma:.2f} px ({num} clips): yaw r {med['yaw_r']:.2f} "
          f"ratio {med['yaw_amplitude']:.2f}; pitch r {med['pitch_r']:.2f} ratio "
          f"{med['pitch_amplitude']:.2f}; roll r {med['roll_r']:.2f} ratio "
          f"{med['roll_amplitude']:.2f}; mouth vs true r {med['mouth_landmark_r']:.2f}",
          flush=True)


def photo() -> None:
  from skimage import data
  img = data.astronaut()[:320, 96:416]
  det = landmark_backends.FdliteBackend()
  face = det.detect(img)[0]
  lm = det.mesh(img, face.box, face.eyes)[landmark_backends.MESH_TO_IBUG68, :2]
  lo, hi = lm.min(0), lm.max(0)
  side = 1.9 * (hi - lo).max()  # the face fills ~half the crop, as in the dataset
  x0, y0 = (lo + hi) / 2 - side / 2
  k = S / side
  crop = cv2.warpAffine(img, np.array([[k, 0, -x0 * k], [0, k, -y0 * k]]), (S, S),
                        flags=cv2.INTER_AREA)
  lm = (lm - [x0, y0]) * k
  c = (lm.min(0) + lm.max(0)) / 2
  a, b = 1.05 * (lm.max(0) - lm.min(0))[0] / 2, 1.3 * (lm.max(0) - lm.min(0))[1] / 2
  yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
  depth = a * np.sqrt(np.clip(1 - ((xx - c[0]) / a) ** 2 - ((yy - c[1]) / b) ** 2, 0, 1))

  def view(yaw: float, pitch: float) -> np.ndarray:
    # Each output pixel shows the surface point that the turn brought there (small angles):
    # yaw > 0 moves the front to the right, pitch > 0 (chin down) moves it down.
    mx, my = xx - depth * np.sin(yaw), yy - depth * np.sin(pitch)
    return cv2.remap(crop, mx.astype(np.float32), my.astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)

  t = np.arange(T)
  for axis, name, amp in ((0, "yaw", 0.2), (1, "pitch", 0.12), (0, "yaw", 0.06),
                          (1, "pitch", 0.06)):
    asked = amp * np.sin(2 * np.pi * t / 20)
    frames = np.stack([view(*((v, 0.0) if axis == 0 else (0.0, v))) for v in asked])
    seen = mesh_rotation.yaw_pitch(frames, lm)
    print(f"photo {name} {amp:.2f} rad: {_fmt(pm.agreement(seen[name], asked))}", flush=True)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--clips", type=int, default=32, help="synth_talk test clips to measure")
  ap.add_argument("--blur", default="0.5,1.0,1.5",
                  help="comma-separated Gaussian sigmas (px) for the blurred-frames check")
  ap.add_argument("--only-blur", action="store_true", help="run the blurred-frames check only")
  args = ap.parse_args()
  sigmas = [float(x) for x in args.blur.split(",") if x.strip()]
  t0 = time.perf_counter()
  if args.only_blur:
    blurred(args.clips, sigmas)
    print(f"{time.perf_counter() - t0:.0f} s")
    return
  sinusoid()
  still(6)
  clips(args.clips)
  blurred(args.clips, sigmas)
  photo()
  print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
  main()
