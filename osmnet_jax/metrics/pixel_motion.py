"""Motion measured on the rendered pixels, independently of the model under test.

A talking-head model can predict the right poses and mouth shapes and still render a still face;
these measurements look only at the frames:

- ``register_to_first``: every frame is registered to the first one with OpenCV's ECC
  (Euclidean motion: in-plane rotation + translation) inside a face region. The rotation is the
  head roll the video shows, the translation its shift. No landmarks, no model.
- ``mouth_opening``: each frame is moved back onto the first frame's geometry with that
  registration (so head motion does not count); the mouth regions' first principal component
  over time, signed so that a darker (open) mouth scores higher, is the opening track.
- ``agreement``: Pearson r and amplitude ratio (std of the measured / std of the asked track,
  both about their means) between a measured and a requested track. A renderer that shows the
  asked roll at a third of its size has r ~ 1 and amplitude ratio ~ 0.33.

Yaw and pitch are not in-plane motions: ``head_motion_in_pixels`` takes them from an independent
face mesh registered rigidly to frame 0 (``metrics/mesh_rotation.py``). Conventions: angles in
radians with the signs of ``osmnet_jax.face.geometry``, translations in crop units
(pixels * 2 / size, the pose convention of ``face.geometry.project``).
"""
from __future__ import annotations

import cv2
import numpy as np

from osmnet_jax import audio as audio_lib
from osmnet_jax.face import geometry as fg
from osmnet_jax.metrics import mesh_rotation


def _gray(frame: np.ndarray) -> np.ndarray:
  g = cv2.cvtColor(np.asarray(frame, np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
  # A light blur widens ECC's basin of convergence on small (64 px) frames.
  return cv2.GaussianBlur(g, (0, 0), max(0.5, g.shape[0] / 128.0))


def face_mask(size: int, landmarks: np.ndarray | None = None) -> np.ndarray:
  """uint8 [size, size] region to register on: the face inside the jaw line and brows of
  [68, 2] landmarks, or the central 60 % of the crop without landmarks. Static background and
  torso would pull the registration towards no motion, so they are left out."""
  m = np.zeros((size, size), np.uint8)
  if landmarks is None:
    a, b = int(0.2 * size), int(0.8 * size)
    m[a:b, a:b] = 1
    return m
  outline_idx = np.r_[fg.JAW, fg.RIGHT_BROW[::-1], fg.LEFT_BROW[::-1]]
  outline = np.asarray(landmarks, np.float64)[outline_idx]
  cv2.fillConvexPoly(m, np.round(cv2.convexHull(outline.astype(np.float32))).astype(np.int32), 1)
  return m


def register_to_first(frames: np.ndarray, mask: np.ndarray | None = None,
                      center: tuple[float, float] | None = None, iterations: int = 200,
                      eps: float = 1e-6) -> dict:
  """Frames uint8 [T, S, S, 3] -> per-frame Euclidean motion relative to frame 0.

  Returns ``{"roll": [T] radians, "tx": [T], "ty": [T] (crop units), "ok": [T] bool,
  "warps": [T, 2, 3]}``. ``warps[t]`` maps frame-0 coordinates to frame-t coordinates (the
  form ``cv2.warpAffine(..., WARP_INVERSE_MAP)`` takes to bring frame t back onto frame 0).
  The translation is that of ``center`` (pixels of frame 0; default: the mask's centroid): a
  head turns about its own origin, so measure the shift there.
  A frame where ECC does not converge keeps the previous frame's motion and ``ok`` False.
  Each frame starts from the previous frame's warp: head motion is smooth in time.
  """
  frames = np.asarray(frames)
  t_len, size = frames.shape[0], frames.shape[1]
  mask = face_mask(size) if mask is None else mask.astype(np.uint8)
  ref = _gray(frames[0])
  warps = np.zeros((t_len, 2, 3), np.float32)
  warps[:] = np.eye(2, 3, dtype=np.float32)
  ok = np.ones(t_len, bool)
  crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, eps)
  for t in range(1, t_len):
    w = warps[t - 1].copy()
    try:
      _, w = cv2.findTransformECC(ref, _gray(frames[t]), w, cv2.MOTION_EUCLIDEAN, crit, mask, 1)
      warps[t] = w
    except cv2.error:
      warps[t], ok[t] = warps[t - 1], False
  # warps[t] takes frame-0 pixel coordinates (y down) to frame t; atan2(w10, w00) is the
  # on-screen rotation, which has the opposite sign of face.geometry's roll (project() flips y).
  roll = -np.arctan2(warps[:, 1, 0], warps[:, 0, 0])
  if center is None:
    ys, xs = np.nonzero(mask)
    center = (xs.mean(), ys.mean())
  c = np.array([center[0], center[1], 1.0], np.float32)
  moved = warps @ c  # [T, 2]
  shift = (moved - c[:2]) * 2.0 / size
  return {"roll": roll.astype(np.float64), "tx": shift[:, 0].astype(np.float64),
          "ty": shift[:, 1].astype(np.float64), "ok": ok, "warps": warps}


def mouth_box(landmarks: np.ndarray, size: int, margin: float = 0.35) -> tuple[int, int, int, int]:
  """(x0, y0, x1, y1) around the outer lips of [68, 2] landmarks, grown by ``margin``."""
  lips = np.asarray(landmarks, np.float64)[fg.OUTER_LIPS]
  lo, hi = lips.min(0), lips.max(0)
  pad = margin * (hi - lo).max()
  x0, y0 = np.clip(np.floor(lo - pad), 0, size - 1).astype(int)
  x1, y1 = np.clip(np.ceil(hi + pad), 1, size).astype(int)
  return int(x0), int(y0), int(max(x1, x0 + 1)), int(max(y1, y0 + 1))


def mouth_regions(frames: np.ndarray, box: tuple[int, int, int, int],
                  warps: np.ndarray | None = None) -> np.ndarray:
  """Frames uint8 [T, S, S, 3], a mouth box in frame 0's coordinates -> float32 [T, h, w]: the
  gray mouth region of every frame moved back onto frame 0's geometry by ``warps``."""
  frames = np.asarray(frames)
  size = frames.shape[1]
  x0, y0, x1, y1 = box
  regions = []
  for t, f in enumerate(frames):
    g = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    if warps is not None and t > 0:
      g = cv2.warpAffine(g, warps[t], (size, size),
                         flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REPLICATE)
    regions.append(g[y0:y1, x0:x1])
  return np.stack(regions)


def mouth_opening(frames: np.ndarray, box: tuple[int, int, int, int],
                  warps: np.ndarray | None = None) -> np.ndarray:
  """-> float64 [T]: how open the mouth looks in each frame, in the video's own units.

  The registered mouth regions [T, h*w] are centred over time and projected on their first
  principal component: the one pattern of change that explains most of what the mouth region
  does (opening and closing, in a talking face). Its sign is chosen so that frames far from the
  mouth's usual look (the per-pixel temporal median: a talking mouth rests closed more than it
  opens wide) score higher; colour cannot decide it (teeth lighten a mouth, its interior darkens
  it). A region that does not change gives zeros. Only r against a track is meaningful, not the
  scale."""
  regions = mouth_regions(frames, box, warps)
  x = regions.reshape(len(regions), -1).astype(np.float64)
  x = x - x.mean(0)
  if not np.abs(x).max() > 1e-9:
    return np.zeros(len(regions))
  u, sv, _ = np.linalg.svd(x, full_matrices=False)
  score = u[:, 0] * sv[0]
  away = np.abs(regions - np.median(regions, 0)).mean(axis=(1, 2))  # [T]
  return -score if (score * (away - away.mean())).sum() < 0 else score


def pearson(a: np.ndarray, b: np.ndarray) -> float | None:
  """Correlation over frames; None where either track is constant (r is undefined)."""
  a = np.asarray(a, np.float64).ravel()
  b = np.asarray(b, np.float64).ravel()
  a, b = a - a.mean(), b - b.mean()
  den = np.sqrt((a * a).sum() * (b * b).sum())
  return float((a * b).sum() / den) if den > 1e-12 else None


def agreement(measured: np.ndarray, asked: np.ndarray) -> dict:
  """``{"r", "amplitude_ratio"}`` of a measured track against the asked one ([T] each).
  amplitude_ratio = std(measured) / std(asked); None when the asked track does not move."""
  measured = np.asarray(measured, np.float64)
  asked = np.asarray(asked, np.float64)
  sa = asked.std()
  return {"r": pearson(measured, asked),
          "amplitude_ratio": float(measured.std() / sa) if sa > 1e-12 else None}


def head_motion_in_pixels(frames: np.ndarray, asked_pose: np.ndarray,
                          landmarks0: np.ndarray | None = None) -> dict:
  """Frames uint8 [T, S, S, 3] rendered for ``asked_pose`` [T, 6] (face.geometry convention)
  -> ``{"roll"|"tx"|"ty"|"yaw"|"pitch": {r, amplitude_ratio}, "yaw_pitch_skipped",
  "ecc_ok_frac", "warps"}`` (``warps``: the registration, which ``mouth_in_pixels`` can reuse).

  The asked pose is taken relative to its first frame (both measures are relative to frame 0).
  Translation is measured at the head origin of frame 0 (where the asked pose puts it:
  ``face.geometry.project`` of the origin); both y axes point down. Yaw and pitch need frame 0's
  [68, 2] ``landmarks0`` to find the face; where they cannot be measured their r and ratio are
  None and ``yaw_pitch_skipped`` says why (else it is None).
  """
  size = frames.shape[1]
  asked = np.asarray(asked_pose, np.float64)
  origin = (asked[0, 3:5] + 1.0) * size / 2.0 - 0.5
  reg = register_to_first(frames, face_mask(size, landmarks0), center=tuple(origin))
  asked = asked - asked[:1]
  out = {"roll": agreement(reg["roll"], asked[:, 2]),
         "tx": agreement(reg["tx"], asked[:, 3]),
         "ty": agreement(reg["ty"], asked[:, 4]),
         "ecc_ok_frac": float(reg["ok"].mean()), "warps": reg["warps"]}
  none = {"r": None, "amplitude_ratio": None}
  out.update(yaw=none, pitch=none, yaw_pitch_skipped=None)
  if landmarks0 is None:
    out["yaw_pitch_skipped"] = "no frame-0 landmarks to find the face"
    return out
  try:
    seen = mesh_rotation.yaw_pitch(frames, landmarks0)
  except mesh_rotation.Unavailable as e:
    out["yaw_pitch_skipped"] = str(e)
    return out
  out.update(yaw=agreement(seen["yaw"], asked[:, 0]), pitch=agreement(seen["pitch"], asked[:, 1]))
  return out


def mouth_in_pixels(frames: np.ndarray, landmarks0: np.ndarray, audio: np.ndarray | None = None,
                    mouth_landmarks: np.ndarray | None = None,
                    warps: np.ndarray | None = None) -> dict:
  """The mouth opening seen on the frames (``mouth_opening``) against the audio energy under each
  frame (``audio`` int16 or float [>= 640 T]) and against the mouth opening of landmarks the
  model predicted (``mouth_landmarks`` [T, 68, 2]) -> ``{"audio_r", "landmark_r"}`` (None
  where not given). ``warps``: ``head_motion_in_pixels``'s registration of the same frames
  (the same face region), or None to register here."""
  size = frames.shape[1]
  if warps is None:
    warps = register_to_first(frames, face_mask(size, landmarks0))["warps"]
  act = mouth_opening(frames, mouth_box(landmarks0, size), warps)
  out = {"audio_r": None, "landmark_r": None}
  if audio is not None:
    out["audio_r"] = pearson(act, audio_lib.frame_energy(audio, len(frames)))
  if mouth_landmarks is not None:
    out["landmark_r"] = pearson(act, fg.mouth_opening(mouth_landmarks))
  return out


def clip_scores(frames: np.ndarray, asked_pose: np.ndarray, landmarks: np.ndarray,
                audio: np.ndarray | None = None) -> dict:
  """One rendered clip against what it was asked to show -> a flat dict of the group's metrics:
  ``{yaw,pitch,roll,tx,ty}_{r,amplitude}`` and ``yaw_pitch_skipped`` (head_motion_in_pixels) and
  ``mouth_{audio,landmark}_r`` (mouth_in_pixels with ``landmarks`` [T, 68, 2] as the asked mouth;
  frame 0's give the regions and find the face).
  """
  head = head_motion_in_pixels(frames, asked_pose, landmarks[0])
  mouth = mouth_in_pixels(frames, landmarks[0], audio=audio, mouth_landmarks=landmarks,
                          warps=head["warps"])
  out = {f"{k}_{m}": head[k][n] for k in ("yaw", "pitch", "roll", "tx", "ty")
         for m, n in (("r", "r"), ("amplitude", "amplitude_ratio"))}
  out.update(yaw_pitch_skipped=head["yaw_pitch_skipped"], mouth_audio_r=mouth["audio_r"],
             mouth_landmark_r=mouth["landmark_r"])
  return out


def median_scores(rows: list[dict]) -> dict:
  """Per-key median over clips, ignoring None (undefined r); None where no clip has a value.
  Text values (the reason a measure was skipped) become "<clips>/<all> clips: <reasons>"."""
  out = {}
  for k in rows[0] if rows else ():
    vals = [r[k] for r in rows if r.get(k) is not None]
    if vals and all(isinstance(v, str) for v in vals):
      out[k] = f"{len(vals)}/{len(rows)} clips: " + "; ".join(sorted(set(vals)))
    else:
      out[k] = float(np.median(vals)) if vals else None
  return out
