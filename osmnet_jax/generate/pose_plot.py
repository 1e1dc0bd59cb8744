"""PNG plot of head-pose sequences: yaw / pitch / roll (degrees) over time, one line per sample.

    pose_plot.plot_poses(poses, "poses.png", fps=25)   # poses float [N, T, 6] (head_pose units:
                                                        # radians, then tx, ty, scale)
Used by ``osmnet_jax.generate.io`` to show how the N sampled head motions differ for one audio.
"""
from __future__ import annotations

import os

import numpy as np

ANGLES = ("yaw", "pitch", "roll")


def plot_poses(poses: np.ndarray, path: str, fps: int = 25, title: str = "",
               labels: list[str] | None = None) -> str:
  """Writes a 3-row figure (yaw, pitch, roll in degrees vs seconds) to ``path``; returns it."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")  # files only: never needs a display
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  poses = np.asarray(poses, np.float64)
  if poses.ndim != 3 or poses.shape[-1] < 3:
    raise ValueError(f"plot_poses expects [N, T, 6] poses, got {poses.shape}")
  n, t = poses.shape[:2]
  seconds = np.arange(t) / float(fps)
  labels = labels or [f"sample {i}" for i in range(n)]
  fig, axes = plt.subplots(3, 1, figsize=(8, 6.5), sharex=True)
  for k, (ax, name) in enumerate(zip(axes, ANGLES)):
    for i in range(n):
      ax.plot(seconds, np.degrees(poses[i, :, k]), lw=1.2, label=labels[i])
    ax.set_ylabel(f"{name} (deg)")
    ax.grid(alpha=0.3)
  axes[-1].set_xlabel("time (s)")
  if n <= 10:
    axes[0].legend(loc="upper right", fontsize=7, ncol=min(n, 5))
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
