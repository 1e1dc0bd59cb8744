"""Fits on sweep results: the compute frontier, the compute-optimal size, seed bootstrap.

  frontier: L(C) = a * C^-b + c through the lower envelope (the best run at each budget),
            least squares on log L so every budget counts alike (c = 0 with 2 budgets);
  N_opt(C): per budget, the minimum of a parabola in log N through the best size and up to
            two sizes either side (the best size itself when fewer than 3), then
            log N_opt = k log C + const  ->  k;
  bootstrap: resample the seeds of every (size, budget) cell with replacement, refit; the
            spread of a, b, c, k is the seed uncertainty.
Points are dicts with params, flops (actual), loss, seed, budget (the run's nominal budget).
"""
from __future__ import annotations

import collections

import numpy as np
from scipy import optimize


def _mean_cells(points: list[dict]) -> dict:
  """(params, budget) -> (mean flops, mean loss) over the seeds of that cell."""
  cells = collections.defaultdict(list)
  for p in points:
    cells[(p["params"], p["budget"])].append((p["flops"], p["loss"]))
  return {k: tuple(np.mean(v, axis=0)) for k, v in cells.items()}


def envelope(points: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per budget the best cell: (flops [n], loss [n], params [n]) sorted by flops."""
  best = {}
  for (n, budget), (c, loss) in _mean_cells(points).items():
    if budget not in best or loss < best[budget][1]:
      best[budget] = (c, loss, n)
  rows = sorted(best.values())
  return tuple(np.array([r[i] for r in rows], np.float64) for i in range(3))


def fit_power_law(c: np.ndarray, loss: np.ndarray) -> dict:
  """a, b, c of L = a C^-b + c (0 <= c < min L), least squares in log L. With only 2 budgets
  the floor is fixed at c = 0 (two points fix a pure power law)."""
  if len(c) < 2:
    raise ValueError(f"the frontier fit needs >= 2 budgets with a finished run; got {len(c)}")
  x = np.log(c / c[0])  # C in units of the smallest budget: a stays O(loss)
  if len(c) == 2:
    b = -np.log(loss[1] / loss[0]) / x[1]
    return {"a": float(loss[0] * c[0] ** b), "b": float(b), "c": 0.0, "rmse_log": 0.0}
  lmin = float(loss.min())

  def model(theta):
    log_a, b, c0 = theta
    return np.log(np.exp(log_a) * np.exp(-b * x) + c0)

  best = None
  for c_frac in (0.0, 0.5, 0.9):
    for b0 in (0.1, 0.5, 1.0):
      c0 = c_frac * lmin
      a0 = max(float(loss[0]) - c0, 1e-12)
      res = optimize.least_squares(
          lambda th: model(th) - np.log(loss), (np.log(a0), b0, c0),
          bounds=([-np.inf, 0.0, 0.0], [np.inf, 10.0, lmin * (1 - 1e-6)]))
      if best is None or res.cost < best.cost:
        best = res
  log_a, b, c0 = best.x
  # Back to C in FLOPs: a' C^-b with a' = a * C0^b.
  return {"a": float(np.exp(log_a + b * np.log(c[0]))), "b": float(b), "c": float(c0),
          "rmse_log": float(np.sqrt(np.mean(best.fun ** 2)))}


def n_opt(points: list[dict]) -> tuple[np.ndarray, np.ndarray]:
  """(budget flops [m], N_opt [m]) for every budget with >= 2 sizes."""
  by_budget = collections.defaultdict(list)
  for (n, budget), (c, loss) in _mean_cells(points).items():
    by_budget[budget].append((n, c, loss))
  cs, ns = [], []
  for budget, rows in sorted(by_budget.items()):
    rows.sort()
    if len(rows) < 2:
      continue
    logn = np.log([r[0] for r in rows])
    loss = np.array([r[2] for r in rows])
    i = int(np.argmin(loss))
    best = logn[i]
    lo, hi = max(0, i - 2), min(len(rows), i + 3)  # the best size and up to 2 either side
    if hi - lo >= 3:
      k2, k1, _ = np.polyfit(logn[lo:hi], loss[lo:hi], 2)
      if k2 > 0:  # a real minimum; kept inside the sampled sizes
        best = float(np.clip(-k1 / (2 * k2), logn[lo], logn[hi - 1]))
    cs.append(np.mean([r[1] for r in rows]))
    ns.append(np.exp(best))
  return np.array(cs), np.array(ns)


def fit_n_opt(points: list[dict]) -> dict:
  """k and the prefactor of N_opt = n0 * C^k (least squares in log-log)."""
  cs, ns = n_opt(points)
  if len(cs) < 2:
    return {"k": None, "n0": None, "points": []}
  k, logn0 = np.polyfit(np.log(cs), np.log(ns), 1)
  return {"k": float(k), "n0": float(np.exp(logn0)),
          "points": [[float(c), float(n)] for c, n in zip(cs, ns)]}


def bootstrap(points: list[dict], samples: int = 200, seed: int = 0) -> dict:
  """Seed-resampling percentiles (2.5, 50, 97.5) of a, b, c and k; {} with one seed per cell."""
  cells = collections.defaultdict(list)
  for p in points:
    cells[(p["params"], p["budget"])].append(p)
  if max(len(v) for v in cells.values()) < 2:
    return {}
  rng = np.random.default_rng(seed)
  draws = collections.defaultdict(list)
  for _ in range(samples):
    resampled = [v[i] for v in cells.values() for i in rng.integers(0, len(v), len(v))]
    try:
      fr = fit_power_law(*envelope(resampled)[:2])
    except (ValueError, RuntimeError):
      continue
    for k in ("a", "b", "c"):
      draws[k].append(fr[k])
    k = fit_n_opt(resampled)["k"]
    if k is not None:
      draws["k"].append(k)
  return {k: [float(x) for x in np.percentile(v, [2.5, 50, 97.5])] for k, v in draws.items()}
