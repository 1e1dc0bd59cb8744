"""Test clips of a prepared dataset as numpy dicts: the one loader every evaluation uses."""
from __future__ import annotations

from typing import Iterator

import numpy as np


def iter_clips(builder, split: str = "test", max_clips: int = 0, frames: str = "all"
               ) -> Iterator[dict]:
  """Examples of ``split`` in order, the first ``max_clips`` (0 = all), as numpy dicts
  (frames uint8 [T,H,W,3], landmarks [T,68,2] px, mel [4T,80], audio int16 [640T], pose [T,6],
  ...). ``frames``: "all" decodes every frame; "first" decodes only frame 0, as "source"
  [H,W,3], and drops "frames"; "none" drops them (no video decoding)."""
  import tensorflow_datasets as tfds

  if frames not in ("all", "first", "none"):
    raise ValueError(f"frames={frames!r}: use 'all', 'first' or 'none'")
  if max_clips < 0:
    raise ValueError(f"max_clips={max_clips}: use 0 (all clips) or a positive count")
  decoders = None if frames == "all" else {"frames": tfds.decode.SkipDecoding()}
  # No auto-cache: TFDS caches a small split in memory when read whole, and take() reads only
  # part of it, which tf.data reports as a cache the iterator did not fill.
  ds = builder.as_dataset(split=split, shuffle_files=False, decoders=decoders,
                          read_config=tfds.ReadConfig(try_autocache=False))
  if max_clips:
    ds = ds.take(max_clips)
  if frames == "all":
    yield from (dict(ex) for ex in tfds.as_numpy(ds))
    return
  feature = builder.info.features["frames"]
  for ex in ds:
    item = {k: np.asarray(v) for k, v in ex.items() if k != "frames"}
    if frames == "first":
      item["source"] = np.asarray(feature.decode_example(ex["frames"][:1]))[0]
    yield item


def load_clips(builder, split: str = "test", max_clips: int = 0, frames: str = "all"
               ) -> list[dict]:
  """``iter_clips`` as a list."""
  return list(iter_clips(builder, split, max_clips, frames))
