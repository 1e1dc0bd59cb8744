"""FLOPs per train step: XLA's cost analysis of the compiled step, cross-checked analytically.

    cost = step_cost("motion", cfg)   # {"flops", "flops_analytic", "params", ...}

The step is the stage's own jitted train step as `osmnet_jax.aot.compile.build` lowers it (the
step train.py runs, shape-only: no arrays), compiled for ONE device with the stage's global
batch, so ``flops`` is the whole step's work whatever mesh the run trains on.

The analytic count walks the step's jaxpr (forward, backward and optimizer; every nested jit,
custom_vjp, remat and scan body, the latter times its length) and adds 2 * MACs of every
``dot_general`` and ``conv_general_dilated`` from their shapes. It ignores elementwise work
(activations, normalisation, grid_sample, the losses, Adam), which XLA counts, so
``analytic / xla`` lies below 1; ``ANALYTIC_RANGE`` is the accepted band (a ratio outside it
means one of the two counts misses work, e.g. a loop body counted once).
"""
from __future__ import annotations

import math

import jax
import numpy as np
from jax.extend import core as jex_core

from osmnet_jax.scaling import sweep

# analytic / xla. Above 1: XLA dropped matmul work. Far below: elementwise-dominated steps or
# work XLA counts but the walk misses; the stages' steps measure inside this band
# (BENCHMARKS.md "Scaling experiments").
ANALYTIC_RANGE = (0.6, 1.02)


CHEAP_CPU_CODEGEN = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


class FlopsMismatch(ValueError):
  pass


def _valid_pairs(n_in: int, n_out: int, k: int, stride: int, pad_lo: int, lhs_dil: int,
                 rhs_dil: int) -> int:
  """(output position, kernel tap) pairs of one spatial dim that read a real input element
  (not padding, not a hole of lhs dilation): XLA counts only these."""
  o = np.arange(n_out)[:, None]
  t = np.arange(k)[None, :]
  pos = o * stride - pad_lo + t * rhs_dil          # position in the dilated, padded input
  ok = (pos >= 0) & (pos <= (n_in - 1) * lhs_dil) & (pos % lhs_dil == 0)
  return int(ok.sum())


def _conv_flops(eqn) -> float:
  p = eqn.params
  dn = p["dimension_numbers"]
  lhs, rhs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
  out = eqn.outvars[0].aval.shape
  pairs = 1
  for i in range(len(dn.lhs_spec) - 2):
    pairs *= _valid_pairs(lhs[dn.lhs_spec[2 + i]], out[dn.out_spec[2 + i]], rhs[dn.rhs_spec[2 + i]],
                          p["window_strides"][i], p["padding"][i][0], p["lhs_dilation"][i],
                          p["rhs_dilation"][i])
  # Per (batch, out feature): in-features-per-group MACs at every valid (position, tap) pair.
  batch_features = out[dn.out_spec[0]] * out[dn.out_spec[1]]
  return 2.0 * batch_features * rhs[dn.rhs_spec[1]] * pairs


def _dot_flops(eqn) -> float:
  (lhs_contract, _), _ = eqn.params["dimension_numbers"]
  lhs = eqn.invars[0].aval.shape
  return 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in lhs_contract)


def _sub_jaxprs(eqn):
  """(jaxpr, multiplicity) of the eqn's nested programs."""
  p = eqn.params
  if eqn.primitive.name == "scan":
    return [(p["jaxpr"].jaxpr, p["length"])]
  if eqn.primitive.name == "cond":
    return [(max(p["branches"], key=lambda b: jaxpr_matmul_flops(b.jaxpr)).jaxpr, 1)]
  subs = []
  for v in p.values():
    for x in (v if isinstance(v, (tuple, list)) else (v,)):
      if isinstance(x, jex_core.ClosedJaxpr):
        subs.append((x.jaxpr, 1))
      elif isinstance(x, jex_core.Jaxpr):
        subs.append((x, 1))
  # custom_vjp/custom_jvp carry the forward and the rule: count the program that runs once.
  return subs[:1] if eqn.primitive.name.startswith("custom_") else subs


def jaxpr_matmul_flops(jaxpr) -> float:
  """2 * MACs of every dot_general / conv_general_dilated in ``jaxpr`` (recursively)."""
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      total += _dot_flops(eqn)
    elif name == "conv_general_dilated":
      total += _conv_flops(eqn)
    else:
      total += sum(n * jaxpr_matmul_flops(j) for j, n in _sub_jaxprs(eqn))
  return total


def _param_count(state) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(state.params)))


def step_cost(stage: str, cfg, check: bool = True) -> dict:
  """The stage's train step under ``cfg``: XLA FLOPs, analytic FLOPs, their ratio, params."""
  from osmnet_jax.aot import compile as aot_compile

  device = jax.devices()[0]
  prog = aot_compile.build(stage, cfg, [device], sweep.batch_size(cfg, stage))
  # Cheap XLA:CPU codegen: the cost analysis reads the optimised HLO, which these backend
  # options leave as it is (same FLOPs); they only skip slow LLVM work.
  opts = CHEAP_CPU_CODEGEN if device.platform == "cpu" else None
  compiled = prog.fn.lower(*prog.args).compile(compiler_options=opts)
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  xla = float(cost["flops"])
  analytic = jaxpr_matmul_flops(jax.make_jaxpr(prog.fn)(*prog.args).jaxpr)
  ratio = analytic / xla if xla else float("nan")
  if check and not ANALYTIC_RANGE[0] <= ratio <= ANALYTIC_RANGE[1]:
    raise FlopsMismatch(
        f"{stage}: analytic matmul/conv FLOPs {analytic:.3g} vs XLA cost analysis {xla:.3g} "
        f"(ratio {ratio:.2f}, accepted {ANALYTIC_RANGE}); one count misses work "
        "(osmnet_jax/scaling/flops.py)")
  return {"flops": xla, "flops_analytic": analytic, "analytic_ratio": ratio,
          "params": _param_count(prog.args[0]), "batch": sweep.batch_size(cfg, stage)}


def steps_for_budget(budget: float, flops_per_step: float) -> int:
  """The step count whose total FLOPs is nearest ``budget`` (at least 1)."""
  return max(1, int(round(budget / flops_per_step)))
