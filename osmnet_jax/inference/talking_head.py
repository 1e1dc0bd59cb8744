"""The talking-head inference pipeline of one workdir, shared by generation and evaluation.

  model = TalkingHead.load(W)                      # expression model + renderer, pose stats
  poses = model.sample_poses(mel, source_image, num_samples, seed, diversity)   # [N,T,6]
  frames = model.render(source, mel, poses)        # uint8 [N,T,H,W,3]

``source``: {"image": uint8 [S,S,3] crop, "landmarks": float32 [68,2] px}; ``mel``: per-frame
windows [T,20,80]; poses normalised with the dataset's pose statistics (``pose_mean``,
``pose_std`` de-normalise them). Driving keypoints of all N x T frames come from one jitted call
(inference/keypoints.py); frames are rendered in fixed jitted chunks (inference/render.py).
"""
from __future__ import annotations

import functools

import jax
import numpy as np

from osmnet_jax import workdir as workdir_lib
from osmnet_jax.inference import keypoints as keypoints_lib
from osmnet_jax.inference import render as render_lib
from osmnet_jax.inference import sampling


class TalkingHead:
  """Models of one workdir, loaded once; motion models load on first use."""

  def __init__(self, workdir: str, expression: workdir_lib.Expression, pose_mean: np.ndarray,
               pose_std: np.ndarray):
    self.workdir = workdir
    self.expression = expression
    self.params = expression.params  # {'expression', 'keypoints'}; replaceable (tests)
    self.pose_mean, self.pose_std = pose_mean, pose_std
    self._motions: dict = {}

  @classmethod
  def load(cls, workdir: str) -> "TalkingHead":
    """Raises workdir.WorkdirError naming what is missing."""
    workdir_lib.load_config(workdir)  # a train.py workdir at all?
    expression = workdir_lib.load_expression(workdir)
    mean, std = workdir_lib.load_pose_stats(workdir)
    return cls(workdir, expression, mean, std)

  @property
  def image_size(self) -> int:
    return self.expression.image_size

  def motion(self, method: str = "osmnet"):
    """(workdir.Motion, jitted sampler) of motion model ``method``, loaded on first use."""
    if method not in self._motions:
      motion = workdir_lib.load_motion(self.workdir, method)
      self._motions[method] = (motion, sampling.make_sampler(motion, motion.params, motion.stats))
    return self._motions[method]

  def sample_poses(self, mel_windows: np.ndarray, source_image: np.ndarray, num_samples: int,
                   seed: int, diversity: float | None = None, method: str = "osmnet"
                   ) -> np.ndarray:
    """mel windows [T,20,80] -> sampled normalised poses float32 [N,T,6]; ``diversity`` None
    uses the motion model's trained value."""
    motion, sample = self.motion(method)
    src = None
    if motion.uses_source:  # the mapper's identity input, at the motion model's image size
      import cv2

      s = int(motion.cfg.image_size)
      src = cv2.resize(source_image, (s, s), interpolation=cv2.INTER_AREA)[None]
    r = motion.cfg.diversity if diversity is None else diversity
    poses = sample(mel_windows[None], src, jax.random.PRNGKey(seed), num_samples=num_samples,
                   diversity=float(r))  # [1, N, T, 6]
    return np.asarray(poses[0], np.float32)

  @functools.cached_property
  def _keypoints_fn(self):
    fn = keypoints_lib.make_keypoints_fn(self.expression.cfg, self.expression.renderer_cfg)

    @jax.jit
    def first_source(params, rvars, batch):  # all N sequences share one source
      kp_src, kp = fn(params, rvars, batch)
      return jax.tree.map(lambda x: x[:1], kp_src), kp

    return first_source

  def keypoints(self, source: dict, mel_windows: np.ndarray, poses: np.ndarray):
    """-> (kp_src {'value' [1,K,2], 'jacobian' [1,K,2,2]}, driving kp [N,T,K,2] / [N,T,K,2,2])
    for normalised poses [N,T,6]: all N x T frames in one jitted call."""
    n = poses.shape[0]
    batch = {"source": np.broadcast_to(source["image"][None], (n,) + source["image"].shape),
             "source_landmarks": np.broadcast_to(source["landmarks"][None], (n, 68, 2)),
             "mel": np.broadcast_to(mel_windows[None], (n,) + mel_windows.shape),
             "pose": np.asarray(poses, np.float32)}
    return self._keypoints_fn(self.params, self.expression.renderer_variables, batch)

  def render(self, source: dict, mel_windows: np.ndarray, poses: np.ndarray, batch_size: int = 16,
             progress: bool = True) -> np.ndarray:
    """source, mel windows [T,20,80], normalised poses [N,T,6] -> uint8 frames [N,T,H,W,3]."""
    n, t = poses.shape[:2]
    kp_src, kp = self.keypoints(source, mel_windows, poses)
    flat = render_lib.fold_time(kp)  # [N*T, K, ...]
    frames = render_lib.sequence_renderer(self.expression.renderer_cfg)(
        self.expression.renderer_variables, source["image"], kp_src, flat, batch_size, progress)
    return frames.reshape((n, t) + frames.shape[1:])
