r"""Renderer only, for a bounded CPU budget (< 20 min on 2 cores): the issue-4 acceptance run.

  python train.py --workdir runs/renderer_budget --config configs/renderer_cpu_budget.py
  python eval.py --workdir runs/renderer_budget --mode reconstruction

The default config's renderer stage alone: tiny model, 800 steps, batch 8, lr 1e-3, output_blend
"occlusion" ([ours]). Runtime and result: BENCHMARKS.md "Renderer: reconstruction vs copying the
source" (2026-11-29, 2-core AMD EPYC: 16 min; two runs: held-out PSNR 24.3 / 25.8 vs 23.1 dB
for copying the source frame, L1 -12 % / -28 %, SSIM 0.75 / 0.80 vs 0.71, LPIPS 0.044 / 0.042
vs 0.049; blurrier than the source (CPBD); large head tilts are still not reproduced).
FOMM's exact setting: add --config.renderer.overrides="{'train': {'scales': (1.0, 0.5, 0.25)}}"
(500 steps at lr 1e-3 gave L1 0.062 / PSNR 21.1).
"""
from configs import default


def get_config():
  c = default.get_config()
  c.stages = ("renderer",)
  c.renderer.keep = 3
  return c
