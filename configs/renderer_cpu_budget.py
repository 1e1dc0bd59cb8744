r"""Renderer only, for a bounded CPU budget (~17 min on 2 cores): the issue-4 acceptance run.

  python train.py --workdir runs/renderer_budget --config configs/renderer_cpu_budget.py
  python eval.py --workdir runs/renderer_budget --mode reconstruction

The default config's renderer stage alone: tiny model, 400 steps, lr 1e-3, output_blend
"occlusion" ([ours]). Runtime: ~17 min on a 2-core CPU. Result (BENCHMARKS.md, 2026-11-23):
held-out reconstruction L1 0.0270 / PSNR 23.79 / SSIM 0.731 vs copy_source 0.0282 / 23.05 /
0.706 (LPIPS 0.051 vs 0.049: slightly worse); the keypoints barely follow the head motion yet.
FOMM's exact setting: add --config.renderer.overrides="{'train': {'scales': (1.0, 0.5, 0.25)}}"
(500 steps at lr 1e-3 gave L1 0.062 / PSNR 21.1).
"""
from configs import default


def get_config():
  c = default.get_config()
  c.stages = ("renderer",)
  c.renderer.save_every = 100
  c.renderer.keep = 3
  return c
