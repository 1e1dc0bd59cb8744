"""Resolve ``config.data`` to a prepared TFDS builder (building synth_talk on demand)."""
from __future__ import annotations

import os

import tensorflow_datasets as tfds


def data_dir(data_cfg) -> str:
  return data_cfg.data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser(
      "~/tensorflow_datasets")


def get_builder(data_cfg) -> tfds.core.DatasetBuilder:
  """synth_talk: build it if missing (seconds); talking_videos: load what data.prepare wrote."""
  root = data_dir(data_cfg)
  if data_cfg.name == "synth_talk":
    return builder_lib_synth(data_cfg, root)
  if data_cfg.name == "talking_videos":
    if not os.path.isdir(root):
      raise FileNotFoundError(
          f"talking_videos: {root} does not exist; run `python -m data.prepare --videos DIR "
          f"--out {root}` first, then pass --config.data.data_dir={root}")
    # The TFDS version directory is the one holding dataset_info.json.
    for dirpath, _, files in sorted(os.walk(root)):
      if "dataset_info.json" in files:
        return tfds.builder_from_directory(dirpath)
    raise FileNotFoundError(
        f"talking_videos: no prepared TFDS dataset (dataset_info.json) under {root}; "
        f"run `python -m data.prepare --videos DIR --out {root}`")
  raise ValueError(f"config.data.name={data_cfg.name!r}: use 'synth_talk' or 'talking_videos'")


def builder_lib_synth(data_cfg, root: str):
  """The named synth_talk config, or a custom one when ``data_cfg.synth`` differs from it."""
  import dataclasses

  from data.synth_talk import builder

  named = {c.name: c for c in builder.SynthTalk.BUILDER_CONFIGS}
  if data_cfg.builder_config not in named:
    raise ValueError(f"config.data.builder_config={data_cfg.builder_config!r}: "
                     f"synth_talk has {sorted(named)}")
  spec = named[data_cfg.builder_config].spec
  overrides = dict(data_cfg.get("synth", {}))
  custom = dataclasses.replace(spec, **overrides)
  if custom == spec:
    return builder.build(data_cfg.builder_config, root)
  name = f"{custom.resolution}px_" + "_".join(
      f"{k}{v}" for k, v in sorted(overrides.items()) if getattr(spec, k) != v).replace(".", "p")
  return builder.build(builder.SynthTalkConfig(name=name, spec=custom), root)
