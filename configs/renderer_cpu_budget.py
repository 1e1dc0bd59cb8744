r"""Renderer only, for a bounded CPU budget (~20 min on 2 cores): the issue-4 acceptance run.

  python train.py --workdir runs/renderer_budget --config configs/renderer_cpu_budget.py
  python eval.py --workdir runs/renderer_budget --mode reconstruction

The default config's renderer with the three learning rates at 1e-3 (FOMM: 2e-4) and 500 steps.
Runtime: ~20 min on a 2-core CPU. Result (BENCHMARKS.md, 2026-11-23): held-out reconstruction
L1 0.062 / PSNR 21.1 vs copy_source 0.028 / 23.1 — not yet better than copying the source.
"""
from configs import default


def get_config():
  c = default.get_config()
  c.stages = ("renderer",)
  c.renderer.overrides = {"train": {"scales": (1.0, 0.5, 0.25), "lr_generator": 1e-3,
                                    "lr_kp_detector": 1e-3, "lr_discriminator": 1e-3}}
  c.renderer.steps = 500
  c.renderer.save_every = 250
  c.renderer.keep = 3
  return c
