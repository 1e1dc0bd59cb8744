r"""Does the renderer show the whole head roll when its keypoints turn exactly with the head?

  python benchmarks/inplane_keypoint_ceiling.py --workdir W [--clips 16]

For each held-out synth_talk clip, frame 0 is animated twice by W's renderer and both videos are
scored on their pixels by `metrics/pixel_motion.clip_scores` (what `eval.py --mode
reconstruction` reports) against the clip's true pose and landmarks:

  detector   the keypoints the renderer's own detector finds on every true frame (FOMM's
             reconstruction; the expression stage distils its KeypointPredictor on these);
  similarity frame 0's keypoints and Jacobians moved by the image-plane similarity (rotation,
             scale, shift) that best maps frame 0's rigid landmarks (jaw, brows, nose, eyes: no
             mouth) onto frame t's. In-plane motion only: no yaw, pitch or mouth.
  local      each anchored keypoint (renderer.train.anchor_landmarks) and its Jacobian moved by
             the affine map that best carries the landmarks *around its own landmark* (Gaussian
             weights, std ``--local-sigma`` in frame widths) from frame 0 to frame t; the others
             by the similarity. Keypoints whose motion and local deformation equal the true
             face's: yaw, pitch and the mouth included. If this video shows the nod and the
             detector video does not, the keypoints (or their Jacobians) lose it, not the
             generator.

If the similarity video shows the roll at its true amplitude while the detector video falls
short, the renderer can render the turn and the loss is in the keypoints; that is the case for
`expression.inplane_pose="geometric"` (models/keypoint_predictor.py). Output: one line of median
scores per variant.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

RIGID = list(range(0, 48))  # iBUG jaw 0-16, brows 17-26, nose 27-35, eyes 36-47


def similarity(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Least-squares x -> A x + b with A = s R, from point sets [N, 2] -> (A [2, 2], b [2])."""
  ms, md = src.mean(0), dst.mean(0)
  s0, d0 = src - ms, dst - md
  n = (s0 ** 2).sum()
  c = (s0 * d0).sum() / n
  s = (s0[:, 0] * d0[:, 1] - s0[:, 1] * d0[:, 0]).sum() / n
  a = np.array([[c, -s], [s, c]])
  return a, md - a @ ms


def local_affine(src: np.ndarray, dst: np.ndarray, center: np.ndarray,
                 sigma: float) -> tuple[np.ndarray, np.ndarray]:
  """Weighted least-squares x -> A x + b from point sets [N, 2] (weights: a Gaussian of std
  ``sigma`` around ``center`` [2]) -> (A [2, 2], b [2])."""
  w = np.exp(-((src - center) ** 2).sum(-1) / (2.0 * sigma ** 2))
  x = np.concatenate([src, np.ones((len(src), 1))], 1)  # [N, 3]
  sol = np.linalg.lstsq(x * w[:, None] ** 0.5, dst * w[:, None] ** 0.5, rcond=None)[0]  # [3, 2]
  return sol[:2].T, sol[2]


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdir", required=True, help="a train.py workdir with a renderer checkpoint")
  p.add_argument("--clips", type=int, default=16, help="held-out clips (0 = all)")
  p.add_argument("--local-sigma", type=float, default=0.1,
                 help="'local' variant: std of the landmark weights, in frame widths")
  args = p.parse_args(argv)

  import jax
  import jax.numpy as jnp
  import ml_collections

  from osmnet_jax import media, renderer
  from osmnet_jax import workdir as workdir_lib
  from osmnet_jax.evaluation import clips
  from osmnet_jax.inference import render
  from osmnet_jax.input import datasets
  from osmnet_jax.losses import landmark_anchors as la
  from osmnet_jax.metrics import pixel_motion as pm

  variables, mcfg = workdir_lib.load_renderer(args.workdir)
  with open(os.path.join(args.workdir, "config.json")) as f:
    cfg = ml_collections.ConfigDict(json.load(f))
  builder = datasets.get_builder(cfg.data)
  rend = render.sequence_renderer(mcfg, uint8=False)
  anchors = list(cfg.renderer.train.get("anchor_landmarks", ()))[:mcfg.num_kp]
  rows = {"detector": [], "similarity": [], "local": []}
  for ex in clips.iter_clips(builder, "test", args.clips):
    frames = ex["frames"]
    kp_det = render.detect_sequence(variables, mcfg, frames)      # [T, K, ...]
    kp_src = jax.tree.map(lambda x: x[:1], kp_det)
    lm = np.asarray(la.to_unit(ex["landmarks"], frames.shape[1]), np.float64)  # [T, 68, 2]
    v0 = np.asarray(kp_src["value"][0], np.float64)
    j0 = np.asarray(kp_src["jacobian"][0], np.float64)
    maps = [similarity(lm[0, RIGID], lm[t, RIGID]) for t in range(len(frames))]
    sim_values = np.stack([v0 @ a.T + b for a, b in maps])                     # [T, K, 2]
    sim_jacobians = np.stack([np.einsum("ij,kjl->kil", a, j0) for a, _ in maps])  # [T, K, 2, 2]
    kp_sim = {"value": jnp.asarray(sim_values, jnp.float32),
              "jacobian": jnp.asarray(sim_jacobians, jnp.float32)}
    # local: the similarity's keypoints with the anchored ones replaced.
    values, jacobians = sim_values.copy(), sim_jacobians.copy()
    # Unit coordinates span 2 per frame width: sigma in widths -> * 2.
    for t in range(len(frames)):
      for k, i in enumerate(anchors):
        a, b = local_affine(lm[0], lm[t], lm[0, i], 2.0 * args.local_sigma)
        values[t, k] = a @ v0[k] + b
        jacobians[t, k] = a @ j0[k]
    kp_local = {"value": jnp.asarray(values, jnp.float32),
                "jacobian": jnp.asarray(jacobians, jnp.float32)}
    for name, kp in (("detector", kp_det), ("similarity", kp_sim), ("local", kp_local)):
      src_kp = kp_src
      if renderer.uses_landmarks(mcfg):  # a landmark-spline renderer: the clip's true landmarks
        src_kp = renderer.with_landmarks(kp_src, ex["landmarks"][:1], frames.shape[1])
        kp = renderer.with_landmarks(kp, ex["landmarks"], frames.shape[1])
      video = media.to_uint8(np.asarray(rend(variables, frames[0], src_kp, kp, 16)))
      rows[name].append(pm.clip_scores(video, ex["pose"], ex["landmarks"], ex.get("audio")))
  keys = ("roll_r", "roll_amplitude", "ty_r", "ty_amplitude", "yaw_r", "yaw_amplitude",
          "pitch_r", "pitch_amplitude", "mouth_landmark_r")
  print("| keypoints | " + " | ".join(keys) + " |")
  print("|---|" + "---:|" * len(keys))
  for name, r in rows.items():
    med = pm.median_scores(r)
    print(f"| {name} | " + " | ".join(
        "-" if med.get(k) is None else f"{med[k]:.2f}" for k in keys) + " |")


if __name__ == "__main__":
  main()
