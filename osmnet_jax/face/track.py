"""The face-detection pass over a video, and filling frames where something was not found.

Shared by data.prepare (talking_videos/process.py), generate's ``poses_from_video`` and the
generated-video evaluation, so training data and inference see the face the same way:

  ``track_video``: decode a downscaled copy of the video (long side <= ``max_side``), run the
  detector on every ``stride``-th frame, link the detections into the main face track
  (``crop.main_track``) and give one box per frame, held / interpolated where the face is lost.

  ``fill_missing``: [T, ...] values with the rows where nothing was found replaced by linear
  interpolation in time (held constant before the first / after the last found row).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from osmnet_jax import media
from osmnet_jax.face import crop as face_crop

# [ours] BlazeFace (full range) sees a 192x192 letterboxed copy of each frame, so a larger
# detection decode only costs time.
DETECT_MAX_SIDE = 320
DETECT_STRIDE = 2  # detector on every n-th frame, boxes interpolated in between
MAX_GAP = 12  # frames without the face before the track is split (0.5 s at 25 fps)


def fill_missing(values: np.ndarray, ok: np.ndarray) -> np.ndarray:
  """[T, ...] float values, bool [T] ``ok`` -> [T, ...] (same dtype) where the rows with ``ok``
  False are linearly interpolated in time from the ``ok`` rows (held at the ends).

  Raises ValueError when no row is ``ok`` (there is nothing to interpolate from).
  """
  values, ok = np.asarray(values), np.asarray(ok, bool)
  if ok.shape != values.shape[:1]:
    raise ValueError(f"fill_missing: ok has shape {ok.shape}, values {values.shape}")
  if ok.all():
    return values
  if not ok.any():
    raise ValueError(f"fill_missing: no valid row among {len(ok)}")
  t = np.arange(len(values))
  flat = values.reshape(len(values), -1).astype(np.float64)
  out = np.stack([np.interp(t, t[ok], flat[ok, j]) for j in range(flat.shape[1])], -1)
  return out.reshape(values.shape).astype(values.dtype)


def detection_size(width: int, height: int, max_side: int = DETECT_MAX_SIDE) -> tuple[int, int]:
  """(w, h) of the detection decode: long side <= max_side, even sides (ffmpeg's scaler)."""
  f = min(1.0, max_side / max(width, height))
  return max(2, int(round(width * f / 2)) * 2), max(2, int(round(height * f / 2)) * 2)


@dataclasses.dataclass(frozen=True)
class VideoTrack:
  """The main face of a video, per frame, in full-resolution pixels.

  ``boxes`` are defined for every frame once any face was seen (interpolated / held where it
  was lost); they are NaN everywhere when no face was found (``segments`` is then empty).
  """
  boxes: np.ndarray  # float64 [T, 4] (x0, y0, x1, y1)
  seen: np.ndarray  # bool [T]: frame inside a tracked segment
  segments: list[tuple[int, int]]  # [start, end) frame ranges where the face is tracked
  num_tracks: int  # distinct face tracks seen (1 = a single face)
  num_decoded: int  # frames the decode returned (before ``max_frames`` cut T)
  frame_size: tuple[int, int]  # (W, H) of the video

  @property
  def num_frames(self) -> int:
    return len(self.boxes)


def detect_video(path: str, detector, *, info: media.Probe | None = None,
                 stride: int = DETECT_STRIDE, max_side: int = DETECT_MAX_SIDE
                 ) -> tuple[dict[int, list[np.ndarray]], int]:
  """Faces on frames 0, stride, 2 stride, ... of a downscaled decode of ``path``.

  Returns ({t: [box float64 [4] in full-frame pixels, ...]}, number of frames decoded).
  ``detector.detect(image uint8 [h, w, 3], t)`` returns faces with a ``.box``.
  Raises media.MediaError when the file cannot be decoded.
  """
  info = info or media.probe(path)
  small = detection_size(info.width, info.height, max_side)
  scale = info.width / small[0]
  dets, num_decoded = {}, 0
  for t, frame in enumerate(media.iter_frames(path, size=small, info=info)):
    num_decoded = t + 1
    if t % stride == 0:
      dets[t] = [np.asarray(f.box, np.float64) * scale for f in detector.detect(frame, t)]
  return dets, num_decoded


def track_video(path: str, detector, *, info: media.Probe | None = None,
                stride: int = DETECT_STRIDE, max_side: int = DETECT_MAX_SIDE,
                max_gap: int = MAX_GAP, max_frames: int | None = None) -> VideoTrack:
  """``detect_video`` + ``crop.main_track`` -> the main face's box on every frame.

  Args:
    path: video file.
    detector: a landmarks backend (anything with ``detect(image, t)``); a backend that needs
      ``start_video`` must be started by the caller.
    info: ``media.probe(path)`` when the caller has it already.
    stride: detector on every ``stride``-th frame.
    max_side: long side of the detection decode in pixels.
    max_gap: frames without the face after which the track is split into segments.
    max_frames: cut the video to at most this many frames (e.g. the frames that have audio).

  Raises media.MediaError when the file cannot be decoded.
  """
  info = info or media.probe(path)
  dets, num_decoded = detect_video(path, detector, info=info, stride=stride, max_side=max_side)
  length = num_decoded if max_frames is None else max(0, min(num_decoded, max_frames))
  size = (info.width, info.height)
  track = face_crop.main_track(dets, length, size, max_gap=max_gap)
  seen = ~np.isnan(track.boxes[:, 0])
  boxes = track.boxes
  if seen.any():
    boxes = fill_missing(np.nan_to_num(boxes), seen)
  return VideoTrack(boxes, seen, track.segments, track.num_tracks, num_decoded, size)
