"""cfg.motion -> the linen module of a motion model: OSM-Net's motion space or a pose baseline."""
from __future__ import annotations

from osmnet_jax.models import motion_space, pose_baselines
from osmnet_jax.nn import precision

MODELS = ("osmnet",) + pose_baselines.MODELS


def from_config(mcfg):
  """cfg.motion (stages/motion.motion_config) -> the linen module for ``mcfg.model``."""
  if mcfg.model == "osmnet":
    return motion_space.OSMNetMotion(
        num_frames=mcfg.num_frames, num_bases=mcfg.num_bases, motion_dim=mcfg.motion_dim,
        hidden=mcfg.hidden, depth=mcfg.depth, audio_dim=mcfg.audio_dim,
        audio_channels=tuple(mcfg.audio_channels), rhythm_dim=mcfg.rhythm_dim,
        identity=mcfg.identity,
        # Absent from the motion_config.json of checkpoints written before these fields.
        encoder=mcfg.get("encoder", "conv"), decoder_skip=mcfg.get("decoder_skip", False),
        dtype=precision.compute_dtype(mcfg), remat=bool(mcfg.get("remat", False)))
  if mcfg.model in pose_baselines.MODELS:
    return pose_baselines.PoseRegressor(
        audio_dim=mcfg.audio_dim, audio_channels=tuple(mcfg.audio_channels),
        hidden=mcfg.hidden, layers=mcfg.lstm_layers,
        noise_dim=mcfg.noise_dim if mcfg.model == "noise_sampler" else 0,
        identity=mcfg.identity)
  raise ValueError(f"cfg.motion.model={mcfg.model!r}: use one of {MODELS}")
