"""TFDS builder of ``synth_talk``, the procedural talking-head dataset (DESIGN.md §2).

Build (build times: BENCHMARKS.md)::

  python -m data.synth_talk --data_dir ~/tensorflow_datasets --config 64px

or from Python::

  builder = data.synth_talk.builder.SynthTalk(config="64px", data_dir=DIR)
  builder.download_and_prepare()
  ds = builder.as_dataset(split="train")

Configs: ``32px``, ``64px`` (default), ``128px`` — 200 train clips (40 identities) and 32 test
clips (8 other identities) of 2 s each. Tests pass their own tiny ``SynthTalkConfig``.

Metadata (``builder.info.metadata``): ``pose_stats`` (mean/std/p01/p99 of train poses, for
normalisation and the valid-range check) and ``spec`` (the generator parameters).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from data import schema
from data.synth_talk import clips

_DESCRIPTION = """Procedural talking heads: synthetic identities whose mouth follows
synthesised speech deterministically and whose head motion is drawn at random per clip, so each
audio has a known distribution of valid head motions (ground truth for one-to-many)."""


class SynthTalkConfig(tfds.core.BuilderConfig):
  """A ``synth_talk`` configuration: every field of ``clips.SynthSpec``."""

  def __init__(self, *, name: str, spec: clips.SynthSpec, description: str = "", **kwargs):
    spec.validate()
    super().__init__(name=name, description=description or str(spec), **kwargs)
    self.spec = spec


def _config(res: int) -> SynthTalkConfig:
  return SynthTalkConfig(name=f"{res}px", spec=clips.SynthSpec(resolution=res))


class SynthTalk(tfds.core.GeneratorBasedBuilder):
  """Synthetic talking-head clips with ground-truth landmarks, pose and mouth track."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [_config(64), _config(32), _config(128)]
  DEFAULT_CONFIG_NAME = "64px"

  @property
  def spec(self) -> clips.SynthSpec:
    return self.builder_config.spec

  def _info(self) -> tfds.core.DatasetInfo:
    spec = self.spec
    extra = {
        "mouth_open": tfds.features.Tensor(shape=(None,), dtype=np.float32),
        "stress": tfds.features.Tensor(shape=(None,), dtype=np.float32),
        "framing": tfds.features.Tensor(shape=(3,), dtype=np.float32),
    }
    return schema.LocalDatasetInfo(
        builder=self,
        description=_DESCRIPTION,
        features=schema.features(spec.resolution, extra),
        metadata=tfds.core.MetadataDict(spec=dataclasses.asdict(spec)),
        homepage="https://arxiv.org/abs/2309.16148",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # everything is generated locally
    # Pose statistics need only speech + motion (no rendering): cheap, computed first so the
    # metadata is complete before any example is written.
    poses = [clips.generate_clip(self.spec, "train", i, render=False)["pose"]
             for i in range(self.spec.num_train)]
    self.info.metadata["pose_stats"] = schema.pose_statistics(poses)
    splits = {"train": self._generate_examples("train")}
    if self.spec.num_test:
      splits["test"] = self._generate_examples("test")
    return splits

  def _generate_examples(self, split: str):
    # TFDS draws the progress bar ("Generating train examples...").
    for i in range(self.spec.count(split)):
      ex = clips.generate_clip(self.spec, split, i)
      schema.check_example(ex, self.spec.resolution)
      yield ex["clip_id"], ex


def build(config: str | SynthTalkConfig = "64px", data_dir: str | None = None) -> SynthTalk:
  """Build (if not already built: TFDS reuses a finished build) and return the builder."""
  builder = SynthTalk(config=config, data_dir=data_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False)
  )
  return builder
