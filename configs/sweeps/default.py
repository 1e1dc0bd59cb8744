r"""Embedded default sweep: the motion stage (configs/default.py, synth_talk) on 2 CPU cores.

  python -m osmnet_jax.scaling --sweep configs/sweeps/default.py --workdir runs/scaling --dry-run
  python -m osmnet_jax.scaling --sweep configs/sweeps/default.py --workdir runs/scaling

Axes: 3 widths (0.5x, 1x, 2x the motion model's hidden / audio widths) x 4 compute budgets on
200 train clips, seed 0; a second seed at the smallest budget (seed bootstrap); the 1x model
at 3e11 FLOPs on 50 and 100 train clips (data-size curve). The motion stage is the one
whose steps are cheap enough on CPU for a frontier over a decade of compute; the renderer and
expression stages run the same way (sweep.grid(stage="renderer" | "expression")).
Runtime and the resulting plot: BENCHMARKS.md "Scaling experiments", README.
"""
from osmnet_jax.scaling import sweep

BASE = "configs/default.py"
# 32-px frames: the motion stage reads only audio and poses, so the smallest standard build.
OVERRIDES = {"data.builder_config": "32px", "motion.sigma_passes": 1}
WIDTHS = (0.5, 1.0, 2.0)
BUDGETS = (3e10, 1e11, 3e11, 1e12)


def get_runs():
  main = sweep.grid(base=BASE, stage="motion", widths=WIDTHS, budgets=BUDGETS, seeds=(0,),
                    data_sizes=(200,), overrides=OVERRIDES)
  seeds = sweep.grid(base=BASE, stage="motion", widths=WIDTHS, budgets=BUDGETS[:1], seeds=(1,),
                     data_sizes=(200,), overrides=OVERRIDES)
  data = sweep.grid(base=BASE, stage="motion", widths=(1.0,), budgets=BUDGETS[2:3], seeds=(0,),
                    data_sizes=(50, 100), overrides=OVERRIDES)
  return main + seeds + data
