r"""Renderer only, for a bounded CPU budget: the default config's renderer stage.

  python train.py --workdir runs/renderer_budget --config configs/renderer_cpu_budget.py
  python eval.py --workdir runs/renderer_budget --mode reconstruction

Runtime and results: BENCHMARKS.md "Renderer: reconstruction vs copying the source".
FOMM's exact objective: add --config.renderer.generator.output_blend=none and
--config.renderer.train.lr_generator=2e-4 --config.renderer.train.lr_kp_detector=2e-4.
"""
from configs import default


def get_config():
  c = default.get_config()
  c.stages = ("renderer",)
  c.renderer.keep = 3
  return c
