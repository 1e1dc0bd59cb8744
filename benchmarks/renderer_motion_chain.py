r"""Where along the renderer does the head's and the mouth's motion get lost?

  python benchmarks/renderer_motion_chain.py --workdirs W1,W2 [--clips 16]

For each workdir's renderer, on the held-out synth_talk clips (every clip reconstructed from its
frame 0 with the keypoints the detector finds on each frame, as `eval.py --mode reconstruction`
does), three links of the chain, each against the clip's true landmarks:

  keypoints  the detector's anchored keypoints (config.renderer.train.anchor_landmarks) vs their
             landmarks: the in-plane rotation frame 0 -> t of the keypoint set against the
             landmark set's (Procrustes angle; r and amplitude = std ratio), the inner-lip
             keypoint distance against the 62-66 landmark distance (r, amplitude), and the
             mean anchor error in pixels; and the pitch cue: the nose-tip keypoint's vertical
             offset from the eye-corner keypoints' midpoint, frame 0 -> t, against the same
             offset of landmarks 30 and 36/45 (r, amplitude). A nod moves the protruding nose
             tip vertically against the eyes (parallax); on synth_talk this offset follows the
             true pitch at r 0.99 but moves only ~0.4 px (std) at 64 px, so it is the part of
             the head motion that needs sub-pixel keypoints (BENCHMARKS.md
             "Pitch and lost keypoints").
  flow       the dense flow's error at the driving landmarks (where it reads the source, vs the
             source landmarks) divided by the identity flow's error: 1 = the flow does not move,
             0 = it carries every landmark home (frames 4, 8, ... of each clip).
  lip flow   the mouth opening the flow carries: it reads the source at flow(62), flow(66) of
             the driving inner lips; the opening explained (driving gap - read gap) against the
             true one (driving gap - source gap), r and amplitude. 0 amplitude = the flow keeps
             the mouth as the source has it, whatever the lip keypoints do.
  mask       the dense-motion mask's background (identity) weight at the driving landmarks:
             near 1 = the flow over the face is the identity whatever the keypoints do (the
             "stalled" runs of BENCHMARKS.md), near 0 = the face follows the keypoint motions.
  lip mask   the mask's share of the lip keypoints' motions (anchored to 48, 54, 62, 66) at
             the inner lips (60-67): near 0 = the mask blends other motions over the mouth
             (BENCHMARKS.md "The mouth is lost in the mask").
  occlusion  the mean occlusion map: with output_blend="occlusion", 1 = every pixel is the warped
             source and the decoder paints nothing (so no mouth interior can appear).

The pixels themselves are measured by `eval.py --mode reconstruction` (group
motion_in_pixels); this script explains those figures. Nothing here trains. Output: one
markdown row per workdir on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def procrustes_angle(a: np.ndarray, b: np.ndarray) -> float:
  """Degrees of the similarity rotation that best takes point set a [N, 2] onto b [N, 2]."""
  a = a - a.mean(0)
  b = b - b.mean(0)
  num = (a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]).sum()
  return float(np.degrees(np.arctan2(num, (a * b).sum())))


def vertical_parallax(points: np.ndarray, eyes: tuple[int, int], tip: int) -> np.ndarray:
  """points [T, N, 2] (x, y; y down) -> [T]: the vertical offset of points[:, tip] from the
  midpoint of points[:, eyes], minus frame 0's (positive: the tip moved down against the eyes)."""
  pts = np.asarray(points, np.float64)
  off = pts[:, tip, 1] - pts[:, list(eyes), 1].mean(1)
  return off - off[0]


def _r_amp(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
  """(Pearson r, std ratio) of x against the reference y: `pixel_motion.agreement` (the
  project's one such measure), with NaN where it is undefined (a constant track)."""
  from osmnet_jax.metrics.pixel_motion import agreement

  a = agreement(x, y)
  return tuple(float("nan") if v is None else v for v in (a["r"], a["amplitude_ratio"]))


def chain(workdir: str, clips_n: int, split: str = "test") -> dict:
  import jax
  import jax.numpy as jnp
  import ml_collections

  from osmnet_jax import renderer
  from osmnet_jax import workdir as workdir_lib
  from osmnet_jax.evaluation import clips
  from osmnet_jax.inference import render
  from osmnet_jax.input import datasets
  from osmnet_jax.losses import landmark_anchors as la
  from osmnet_jax.nn.keypoints import make_coordinate_grid

  variables, mcfg = workdir_lib.load_renderer(workdir)
  with open(os.path.join(workdir, "config.json")) as f:
    cfg = ml_collections.ConfigDict(json.load(f))
  builder = datasets.get_builder(cfg.data)
  anchors = list(cfg.renderer.train.anchor_landmarks)
  a = len(anchors)
  i62, i66 = anchors.index(62), anchors.index(66)
  has_nose = all(i in anchors for i in (30, 36, 45))
  lips = [anchors.index(i) for i in (48, 54, 62, 66) if i in anchors]
  rows = {k: [] for k in ("rot_r", "rot_amp", "mouth_r", "mouth_amp", "nose_r", "nose_amp",
                          "anchor_px", "flow", "lip_flow_r", "lip_flow_amp", "mask_bg",
                          "mask_lips", "occ")}
  for ex in clips.iter_clips(builder, split, clips_n):
    frames = ex["frames"]
    size = frames.shape[1]
    kp_all = render.detect_sequence(variables, mcfg, frames)      # every frame, once
    kp = np.asarray(kp_all["value"])                                # [T, K, 2]
    lm = np.asarray(la.to_unit(ex["landmarks"], size), np.float64)  # [T, 68, 2] normalised
    rot_kp = np.array([procrustes_angle(kp[0, :a], kp[t, :a]) for t in range(len(kp))])
    rot_lm = np.array([procrustes_angle(lm[0, anchors], lm[t, anchors]) for t in range(len(kp))])
    r, amp = _r_amp(rot_kp, rot_lm)
    rows["rot_r"].append(r)
    rows["rot_amp"].append(amp)
    m_kp = np.linalg.norm(kp[:, i62] - kp[:, i66], axis=-1)
    m_lm = np.linalg.norm(lm[:, 62] - lm[:, 66], axis=-1)
    r, amp = _r_amp(m_kp, m_lm)
    rows["mouth_r"].append(r)
    rows["mouth_amp"].append(amp)
    if has_nose:
      k_eyes = (anchors.index(36), anchors.index(45))
      r, amp = _r_amp(vertical_parallax(kp, k_eyes, anchors.index(30)),
                      vertical_parallax(lm, (36, 45), 30))
      rows["nose_r"].append(r)
      rows["nose_amp"].append(amp)
    rows["anchor_px"].append(float(np.abs(kp[:, :a] - lm[:, anchors]).mean() * (size - 1) / 2))

    fr = jnp.asarray(frames[::4], jnp.float32) / 255.0
    marks = jnp.asarray(ex["landmarks"][::4], jnp.float32)
    kp_d = jax.tree.map(lambda x: jnp.asarray(x[::4]), kp_all)
    if renderer.uses_landmarks(mcfg):  # a landmark-spline renderer reads the clip's landmarks
      kp_d = renderer.with_landmarks(kp_d, marks, size)
    kp_s = jax.tree.map(lambda x: jnp.broadcast_to(x[:1], x.shape), kp_d)
    out = renderer.render(variables, mcfg, jnp.broadcast_to(fr[:1], fr.shape), kp_s, kp_d)
    d = out["deformation"][1:]
    ident = jnp.broadcast_to(make_coordinate_grid(d.shape[1], d.shape[2])[None], d.shape)
    src_marks = jnp.broadcast_to(marks[:1], marks.shape)[1:]
    err = float(la.flow_anchor_loss(d, marks[1:], src_marks, size))
    err0 = float(la.flow_anchor_loss(ident, marks[1:], src_marks, size))
    rows["flow"].append(err / max(err0, 1e-12))
    # The mouth opening the flow carries: it reads the source at flow(62), flow(66) of the
    # driving inner lips; a perfect flow reads the source's gap, the identity the driving gap.
    # Opening explained (driving gap - read gap) against the true one (driving - source gap).
    read = np.asarray(la.sample_flow(d.astype(jnp.float32), la.to_unit(marks[1:], size)))
    lm_d = np.asarray(la.to_unit(marks, size))
    gap_d = np.linalg.norm(lm_d[1:, 62] - lm_d[1:, 66], axis=-1)
    gap_s = np.linalg.norm(lm_d[0, 62] - lm_d[0, 66])
    r, amp = _r_amp(gap_d - np.linalg.norm(read[:, 62] - read[:, 66], axis=-1), gap_d - gap_s)
    rows["lip_flow_r"].append(r)
    rows["lip_flow_amp"].append(amp)
    rows["mask_bg"].append(float(la.mask_background_weight(out["mask"][1:], marks[1:],
                                                           size).mean()))
    # Which motions the mask blends at the inner lips (60-67): the share of the lip keypoints'
    # motions (mask channel k + 1 is keypoint k's motion; channel 0 the identity).
    if lips:
      m = np.asarray(la.sample_flow(out["mask"][1:].astype(jnp.float32),
                                    la.to_unit(marks[1:, 60:68], size)))
      rows["mask_lips"].append(float(m[..., [k + 1 for k in lips]].sum(-1).mean()))
    if "occlusion_map" in out:
      rows["occ"].append(float(out["occlusion_map"].mean()))
  return {k: float(np.nanmedian(v)) if v else float("nan") for k, v in rows.items()}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdirs", required=True, help="comma-separated training workdirs")
  p.add_argument("--clips", type=int, default=16, help="held-out clips per workdir")
  p.add_argument("--split", default="test", help="dataset split ('train': the faces it saw)")
  args = p.parse_args(argv)
  print("| workdir | keypoint roll r | keypoint roll amplitude | inner-lip keypoints r | "
        "inner-lip amplitude | nose parallax r (pitch cue) | nose parallax amplitude | "
        "anchor error px | flow error / identity's | lip opening in the flow r | "
        "lip opening in the flow amplitude | mask background weight at the landmarks | "
        "mask share of the lip keypoints at the inner lips | mean occlusion |")
  print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
  for w in filter(None, args.workdirs.split(",")):
    c = chain(w, args.clips, args.split)
    print(f"| {w} | {c['rot_r']:.2f} | {c['rot_amp']:.2f} | {c['mouth_r']:.2f} | "
          f"{c['mouth_amp']:.2f} | {c['nose_r']:.2f} | {c['nose_amp']:.2f} | "
          f"{c['anchor_px']:.2f} | {c['flow']:.2f} | {c['lip_flow_r']:.2f} | "
          f"{c['lip_flow_amp']:.2f} | {c['mask_bg']:.2f} | {c['mask_lips']:.2f} | "
          f"{c['occ']:.3f} |",
          flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
