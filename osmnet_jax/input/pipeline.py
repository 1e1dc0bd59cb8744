"""tf.data input pipeline: TFDS clips -> random windows -> batches -> global jax Arrays.

Per example (one clip of L frames) the pipeline draws a window start ``s`` in ``[0, L - T]`` and
a source frame index, then slices (no expensive work: landmarks, pose and mel were precomputed
at build time):

  frames            uint8   [T, H, W, 3]   frames s .. s+T-1 (the driving frames)
  source            uint8   [H, W, 3]      a random frame of the same clip (identity input)
  source_landmarks  float32 [68, 2]
  mel               float32 [T, 20, 80]    +-2-frame mel window per frame (audio.mel_windows)
  landmarks         float32 [T, 68, 2]
  pose              float32 [T, 6]         normalised: (pose - mean) / std, train statistics
  clip_audio_mel    (not produced: clip-level audio is the window's own mel)

Batches are dicts of those with a leading per-process batch dimension. Frames stay uint8 until
they reach the device (4x less host->device traffic); models convert.

Determinism and resumption: element ``i`` of the stream (after the seeded shuffle) gets its
randomness from ``stateless`` ops seeded with ``(seed, i)``, so the stream is a function of the
seed alone; ``start_step`` skips ``start_step * batch`` elements *before* any frame is decoded
(frames are read with ``SkipDecoding`` and decoded after the skip), so resuming is cheap.

Multi-host: each process reads ``tfds.split_for_jax_process(split)`` and builds its part of the
global batch; ``DeviceIterator`` assembles global arrays with
``jax.make_array_from_process_local_data`` (jit layout) or per-device rows (pmap layout).
"""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from osmnet_jax import audio as audio_lib
from osmnet_jax.runtime import sharding as sharding_lib

Augment = Callable[[dict, tf.Tensor], dict]


def pose_stats(builder: tfds.core.DatasetBuilder) -> tuple[np.ndarray, np.ndarray]:
  """(mean [6], std [6]) of the train poses stored with the dataset."""
  stats = builder.info.metadata.get("pose_stats") if builder.info.metadata else None
  if not stats:
    raise ValueError(
        f"dataset {builder.info.full_name} in {builder.data_dir} has no pose_stats metadata; "
        "rebuild it with this version of osmnet_jax"
    )
  return np.asarray(stats["mean"], np.float32), np.asarray(stats["std"], np.float32)


def mel_windows_tf(mel: tf.Tensor, start: tf.Tensor, num_frames: int) -> tf.Tensor:
  """tf version of ``audio.mel_windows``: [4L, 80] -> [T, 20, 80], edge-padded."""
  pad = audio_lib.WINDOW_RADIUS * audio_lib.MEL_PER_FRAME
  padded = tf.concat([tf.repeat(mel[:1], pad, 0), mel, tf.repeat(mel[-1:], pad, 0)], 0)
  idx = ((tf.range(num_frames) + start) * audio_lib.MEL_PER_FRAME)[:, None] + tf.range(
      audio_lib.MEL_WINDOW)[None]
  return tf.gather(padded, idx)


def color_jitter(ex: dict, seed: tf.Tensor, strength: float = 0.1) -> dict:
  """Augmentation hook: one brightness/contrast change for source and frames alike."""
  s = tf.random.stateless_uniform([2], seed=seed, minval=-strength, maxval=strength)

  def f(x):
    x = tf.cast(x, tf.float32)
    x = (x - 127.5) * (1.0 + s[1]) + 127.5 + 255.0 * s[0]
    return tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8)

  return {**ex, "frames": f(ex["frames"]), "source": f(ex["source"])}


AUGMENTATIONS: dict[str, Augment] = {"color": color_jitter}


def make_window_fn(num_frames: int, mean: np.ndarray, std: np.ndarray,
                   frames_decoder, augment: tuple[str, ...] = ()) -> Callable:
  """Builds the per-element map ``(index, example) -> window dict`` (see module docstring)."""
  for name in augment:
    if name not in AUGMENTATIONS:
      raise ValueError(f"unknown augmentation {name!r}; known: {sorted(AUGMENTATIONS)}")
  mean = tf.constant(mean)
  std = tf.constant(std)

  def fn(seed: tf.Tensor, index: tf.Tensor, ex: dict) -> dict:
    el_seed = tf.stack([seed, tf.cast(index, tf.int64)])
    length = tf.shape(ex["pose"], out_type=tf.int64)[0]
    start = tf.random.stateless_uniform(
        [], seed=el_seed, minval=0, maxval=length - num_frames + 1, dtype=tf.int64)
    src = tf.random.stateless_uniform(
        [], seed=el_seed + [0, 1], minval=0, maxval=length, dtype=tf.int64)
    frames = frames_decoder(ex["frames"])  # uint8 [L, H, W, 3], decoded only now
    out = {
        "frames": frames[start:start + num_frames],
        "source": frames[src],
        "source_landmarks": ex["landmarks"][src],
        "mel": mel_windows_tf(ex["mel"], tf.cast(start, tf.int32), num_frames),
        "landmarks": ex["landmarks"][start:start + num_frames],
        "pose": (ex["pose"][start:start + num_frames] - mean) / std,
    }
    for k, name in enumerate(augment):
      out = AUGMENTATIONS[name](out, el_seed + [0, 2 + k])
    return out

  return fn


def make_dataset(
    builder: tfds.core.DatasetBuilder,
    split: str,
    batch_size: int,
    num_frames: int,
    seed: int = 0,
    start_step: int = 0,
    shuffle_buffer: int = 256,
    augment: tuple[str, ...] = (),
    repeat: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
    drop_remainder: bool = True,
) -> tf.data.Dataset:
  """Per-process tf.data pipeline of window batches (numpy-ready).

  Args:
    builder: a prepared TFDS builder (synth_talk, talking_videos, ...).
    split: TFDS split name; each process reads its own sub-split.
    batch_size: PER-PROCESS batch size.
    num_frames: window length T (clips shorter than T are dropped).
    seed: controls file order, shuffling, windows and augmentation.
    start_step: resume point: the first batch is the one a fresh pipeline yields at this step.
    shuffle_buffer: examples in the shuffle buffer (0 = no shuffling).
    augment: names from ``AUGMENTATIONS``.
    repeat: loop forever (training) or one pass (evaluation).
    drop_remainder: drop a last partial batch (keep it for evaluation passes).
  """
  if num_frames < 1:
    raise ValueError(f"num_frames={num_frames} must be >= 1")
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  sub_split = tfds.split_for_jax_process(
      split, process_index=process_index, process_count=process_count)
  mean, std = pose_stats(builder)
  # Seeds differ per process so hosts do not draw identical windows from different files.
  seed = int(seed) * 1000 + process_index
  # No per-iteration reshuffling: the stream must be the same every time the dataset object is
  # iterated (repeat() comes before the example shuffle, so epochs still differ in order).
  read_config = tfds.ReadConfig(shuffle_seed=seed, shuffle_reshuffle_each_iteration=False,
                                interleave_cycle_length=1)
  ds = builder.as_dataset(
      split=sub_split, shuffle_files=shuffle_buffer > 0, read_config=read_config,
      decoders={"frames": tfds.decode.SkipDecoding()},
  )
  ds = ds.filter(lambda ex: tf.shape(ex["pose"])[0] >= num_frames)
  ds = ds.map(lambda ex: {k: ex[k] for k in ("frames", "landmarks", "pose", "mel")})
  if repeat:
    ds = ds.repeat()
  if shuffle_buffer > 0:
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=False)
  ds = ds.enumerate()
  if start_step:
    ds = ds.skip(int(start_step) * batch_size)
  fn = make_window_fn(num_frames, mean, std, builder.info.features["frames"].decode_example,
                      augment)
  seed_t = tf.constant(seed, tf.int64)
  ds = ds.map(lambda i, ex: fn(seed_t, i, ex), num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=True)
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  options = tf.data.Options()
  options.deterministic = True
  options.threading.private_threadpool_size = 0
  return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


class DeviceIterator:
  """Wraps a per-process tf.data pipeline and yields batches of jax Arrays on devices.

  layout="jit": global arrays [global_batch, ...] sharded with ``batch_sharding(mesh)``.
  layout="pmap": local arrays [num_local_devices, per_device_batch, ...], row i on local
  device i (what ``jax.pmap`` consumes without a copy).
  A background thread keeps ``prefetch`` batches in flight; errors in the thread are re-raised
  in the consumer. ``step`` counts batches handed out (for checkpointing the data position).
  """

  def __init__(self, ds: tf.data.Dataset, mesh=None, layout: str = "jit", prefetch: int = 2,
               start_step: int = 0):
    if layout not in ("jit", "pmap"):
      raise ValueError(f"layout={layout!r}: use 'jit' or 'pmap'")
    if layout == "jit" and mesh is None:
      raise ValueError("layout='jit' needs a mesh")
    self._it = iter(tfds.as_numpy(ds))
    self._mesh, self._layout = mesh, layout
    self.step = start_step
    self._queue: queue.Queue = queue.Queue(maxsize=max(prefetch, 1))
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._fill, daemon=True)
    self._thread.start()

  def _to_device(self, batch: dict) -> dict:
    if self._layout == "jit":
      shard = sharding_lib.batch_sharding(self._mesh)
      return {k: jax.make_array_from_process_local_data(shard, v) for k, v in batch.items()}
    n = jax.local_device_count()
    shard = sharding_lib.pmap_sharding()

    def put(v):
      if v.shape[0] % n:
        raise ValueError(f"per-process batch {v.shape[0]} is not divisible by {n} local devices")
      return jax.device_put(v.reshape(n, v.shape[0] // n, *v.shape[1:]), shard)

    return {k: put(v) for k, v in batch.items()}

  def _fill(self):
    try:
      for batch in self._it:
        if self._stop.is_set():
          return
        self._queue.put(("ok", self._to_device(batch)))
      self._queue.put(("end", None))
    except Exception as e:  # surfaced in __next__
      self._queue.put(("error", e))

  def __iter__(self) -> Iterator[dict]:
    return self

  def __next__(self) -> dict:
    kind, value = self._queue.get()
    if kind == "end":
      self._queue.put(("end", None))
      raise StopIteration
    if kind == "error":
      raise value
    self.step += 1
    return value

  def close(self):
    self._stop.set()
    while not self._queue.empty():
      self._queue.get_nowait()
