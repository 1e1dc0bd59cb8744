r"""Two-run test sweep: the motion stage of configs/tiny_test.py at two compute budgets.

  python -m osmnet_jax.scaling --sweep configs/sweeps/tiny.py --workdir /tmp/sw --dry-run
"""
from osmnet_jax.scaling import sweep


def get_runs():
  return sweep.grid(base="configs/tiny_test.py", stage="motion", widths=(0.5,),
                    budgets=(3e8, 6e8), seeds=(0,),
                    overrides={"motion.sigma_passes": 1})
