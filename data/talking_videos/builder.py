"""TFDS builder of ``talking_videos``: packs the clips data.prepare made into TFRecord shards.

The expensive per-video work (decode, face tracking, landmarks, pose, mel) is done beforehand by
``python -m data.prepare`` into ``WORK = DATA_DIR/work`` (one ``.npz`` + ``.json`` record per
video, see process.py); this builder only reads those, assigns splits and writes examples in the
schema.py format, in this process or, given Beam options (``build(beam_options=...)``), as a
Beam PTransform of one element per video (the same examples). Read it back with::

  builder = TalkingVideos(config=TalkingVideosConfig(size=256, work_dir=DATA_DIR + "/work"),
                          data_dir=DATA_DIR)          # or tfds.builder_from_directory(...)
  ds = builder.as_dataset(split="train")

Splits: speakers (``speaker`` = the identity of the record, the parent folder by default) are
sorted by a hash of their name; the first ``round(test_fraction * n)`` (at least 1 when there are
two or more speakers) go to ``test``, so no identity is in both splits and adding videos of known
speakers never moves them.

Metadata: ``pose_stats`` (schema.pose_statistics over the train split), ``options`` (the
preprocessing options), ``splits`` (speaker -> split), ``num_clips``.
"""
from __future__ import annotations

import hashlib
import json
import os

import tensorflow_datasets as tfds

from data import schema
from data.talking_videos import process, storage

_DESCRIPTION = """Real talking-head videos from a user folder: one stable square face crop per
clip, 68 landmarks, head pose (scaled-orthographic fit to the mean face) and log-mel per frame."""


class TalkingVideosConfig(tfds.core.BuilderConfig):
  """Crop size, where the prepared work records are, the split rule, and optionally which
  videos to include (data.prepare passes the videos now in the folder, so records of deleted
  videos left in WORK are not packed)."""

  def __init__(self, *, size: int, work_dir: str, test_fraction: float = 0.1,
               video_ids=None, beam: bool = False, **kwargs):
    super().__init__(name=f"{size}px", description=f"{size}x{size} face crops", **kwargs)
    self.size, self.work_dir, self.test_fraction = size, work_dir, test_fraction
    self.video_ids = None if video_ids is None else frozenset(video_ids)
    self.beam = beam  # examples made by a Beam PTransform (the same examples, written in parallel)


def assign_splits(speakers, test_fraction: float) -> dict[str, str]:
  """speaker -> 'train' | 'test' (deterministic, identity-disjoint)."""
  uniq = sorted(set(speakers), key=lambda s: (hashlib.sha1(s.encode()).hexdigest(), s))
  n_test = int(round(test_fraction * len(uniq)))
  if len(uniq) >= 2 and test_fraction > 0:
    n_test = min(max(n_test, 1), len(uniq) - 1)
  else:
    n_test = 0
  return {s: ("test" if i < n_test else "train") for i, s in enumerate(uniq)}


def finished_records(work_dir: str, video_ids=None) -> list[dict]:
  """The 'ok' records in WORK (of ``video_ids`` if given), sorted by video id."""
  out = []
  for path in storage.glob(storage.join(work_dir, "*.json")):
    if os.path.basename(path) == "options.json":
      continue
    with storage.open(path) as f:
      rec = json.load(f)
    if rec.get("status") == "ok" and rec.get("clips") and (
        video_ids is None or rec["video_id"] in video_ids):
      out.append(rec)
  return out


class TalkingVideos(tfds.core.GeneratorBasedBuilder):
  """Face-cropped real talking-head clips with landmarks, pose and mel."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  # Configs are made at run time (crop size, work dir): pass config=TalkingVideosConfig(...).
  BUILDER_CONFIGS = []

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    options = {}
    opt_path = storage.join(cfg.work_dir, "options.json") if cfg and cfg.work_dir else None
    if opt_path and storage.exists(opt_path):
      with storage.open(opt_path) as f:
        options = json.load(f)
    return schema.LocalDatasetInfo(
        builder=self,
        description=_DESCRIPTION,
        features=schema.features(cfg.size if cfg else 256),
        metadata=tfds.core.MetadataDict(options=options),
    )

  def _split_plan(self) -> tuple[dict[str, list[dict]], dict[str, str]]:
    records = finished_records(self.builder_config.work_dir, self.builder_config.video_ids)
    splits = assign_splits([r["speaker"] for r in records], self.builder_config.test_fraction)
    plan = {"train": [], "test": []}
    for r in records:
      plan[splits[r["speaker"]]].append(r)
    return plan, splits

  def _split_generators(self, dl_manager):
    del dl_manager  # everything is local
    plan, splits = self._split_plan()
    if not plan["train"]:
      raise ValueError(f"no finished clips in {self.builder_config.work_dir}; run data.prepare")
    # Pose statistics first (small arrays), so the metadata is complete before writing.
    poses = [p for r in plan["train"] for p in process.load_poses(self.builder_config.work_dir, r)]
    self.info.metadata["pose_stats"] = schema.pose_statistics(poses)
    self.info.metadata["splits"] = splits
    self.info.metadata["num_clips"] = {k: sum(len(r["clips"]) for r in v) for k, v in plan.items()}
    out = {"train": self._generate_examples(plan["train"])}
    if plan["test"]:
      out["test"] = self._generate_examples(plan["test"])
    return out

  def _generate_examples(self, records):
    cfg = self.builder_config
    if cfg.beam:  # one element per video; TFDS's Beam writer shuffles and shards them
      import apache_beam as beam  # pylint: disable=g-import-not-at-top

      return beam.Create(records) | beam.FlatMap(video_examples, cfg.work_dir, cfg.size)
    return (kv for r in records for kv in video_examples(r, cfg.work_dir, cfg.size))


def video_examples(record: dict, work_dir: str, size: int):
  """(key, example) of each clip of one finished video."""
  for ex in process.load_clips(work_dir, record):
    schema.check_example(ex, size)  # never write a malformed example
    yield ex["clip_id"], ex


def build(data_dir: str, size: int, work_dir: str | None = None, test_fraction: float = 0.1,
          video_ids=None, beam_runner=None, beam_options=None) -> TalkingVideos:
  """Build into DATA_DIR/talking_videos/<size>px/1.0.0 (an existing build is reused).

  Given ``beam_runner`` (a runner) or ``beam_options`` (PipelineOptions, which may name the
  runner), TFDS writes the examples with a Beam pipeline; the dataset is the same.
  """
  cfg = TalkingVideosConfig(size=size, work_dir=work_dir or storage.join(data_dir, "work"),
                            test_fraction=test_fraction, video_ids=video_ids,
                            beam=beam_runner is not None or beam_options is not None)
  builder = TalkingVideos(config=cfg, data_dir=data_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      try_download_gcs=False, beam_runner=beam_runner, beam_options=beam_options))
  return builder
