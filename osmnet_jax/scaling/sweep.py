"""Sweep configs -> named runs -> each run's full training config.

A sweep file (configs/sweeps/*.py) defines ``get_runs() -> list[Run]``, usually through ``grid``:

    def get_runs():
      return sweep.grid(base="configs/default.py", stage="motion", widths=(0.5, 1, 2),
                        depths=(1,), budgets=(1e11, 3e11), seeds=(0, 1))

Each run's config is the base config with the stage's widths and depths scaled (``scale_model``),
the sweep's ``overrides`` applied, ``stages`` set to that one stage and, once the FLOPs per step
are known (flops.py), the stage's step count set from the budget (``with_steps``).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import os
from typing import Any

import ml_collections

STAGES = ("renderer", "motion", "expression")
# Width and depth fields of each stage's model (dotted paths under the stage's config). Renderer
# depth: only the generator's bottleneck; the hourglass' num_blocks halve the resolution each,
# so they are tied to the image size and stay fixed.
WIDTH_FIELDS = {
    "renderer": ("kp_detector.block_expansion", "kp_detector.max_features",
                 "generator.block_expansion", "generator.max_features",
                 "generator.dense_motion_params.block_expansion",
                 "generator.dense_motion_params.max_features"),
    "motion": ("hidden", "audio_dim", "audio_channels"),
    "expression": ("expression_dim", "audio_dim", "audio_channels", "identity_dim",
                   "identity_channels", "landmark_hidden", "kp_hidden"),
}
DEPTH_FIELDS = {
    "renderer": ("generator.num_bottleneck_blocks",),
    "motion": ("depth", "lstm_layers"),
    "expression": ("temporal_layers", "landmark_depth", "kp_temporal_layers", "kp_head_depth"),
}
STEPS_FIELD = {"renderer": "renderer.steps", "motion": "motion.num_steps",
               "expression": "expression.num_steps"}
BATCH_FIELD = {"renderer": "batch_size", "motion": "motion.batch_size",
               "expression": "expression.batch_size"}


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of a sweep. Exactly one of ``flops_budget`` / ``steps`` is set."""
  name: str
  stage: str
  base: str                         # config file (path relative to the repo root or absolute)
  width: float = 1.0
  depth: float = 1.0
  flops_budget: float | None = None
  steps: int | None = None
  seed: int = 0
  data_size: int | None = None      # train clips (synth_talk); None: the base config's
  overrides: tuple[tuple[str, Any], ...] = ()   # (dotted key, value), applied after scaling

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["overrides"] = [list(kv) for kv in self.overrides]
    return d

  @classmethod
  def from_dict(cls, d: dict) -> Run:
    return cls(**{**d, "overrides": tuple((k, _tuple(v)) for k, v in d.get("overrides", ()))})


def _tuple(v):
  return tuple(_tuple(x) for x in v) if isinstance(v, list) else v


def _fmt(x: float) -> str:
  return f"{x:g}".replace("+", "")


def grid(*, base: str, stage: str, widths=(1.0,), depths=(1.0,), budgets=(), steps=(),
         seeds=(0,), data_sizes=(None,), overrides: dict | None = None,
         prefix: str = "") -> list[Run]:
  """Every combination of the axes as a Run named ``<prefix>w<w>_d<d>_C<budget>_n<data>_s<seed>``.

  ``budgets`` are FLOPs; ``steps`` (instead of budgets) fixes the step count."""
  if stage not in STAGES:
    raise ValueError(f"sweep stage {stage!r}: use one of {STAGES}")
  if bool(budgets) == bool(steps):
    raise ValueError("sweep: give exactly one of budgets (FLOPs) or steps")
  ov = tuple(sorted((overrides or {}).items()))
  runs = []
  for w, d, amount, n, s in itertools.product(widths, depths, budgets or steps, data_sizes,
                                              seeds):
    size = "C" + _fmt(amount) if budgets else f"S{int(amount)}"
    data = "" if n is None else f"_n{n}"
    runs.append(Run(
        name=f"{prefix}{stage}_w{_fmt(w)}_d{_fmt(d)}_{size}{data}_s{s}", stage=stage, base=base,
        width=float(w), depth=float(d), flops_budget=float(amount) if budgets else None,
        steps=int(amount) if steps else None, seed=int(s), data_size=n, overrides=ov))
  names = [r.name for r in runs]
  if len(set(names)) != len(names):
    raise ValueError("sweep: two runs got the same name; make the axis values distinct")
  return runs


def load_runs(path: str) -> list[Run]:
  """configs/sweeps/<name>.py -> its ``get_runs()`` (checked: stages, unique names)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"sweep file {path} does not exist (see configs/sweeps/)")
  spec = importlib.util.spec_from_file_location("_sweep_" + os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_runs"):
    raise ValueError(f"sweep file {path} defines no get_runs() -> list[Run]")
  runs = list(module.get_runs())
  names = [r.name for r in runs]
  if len(set(names)) != len(names):
    raise ValueError(f"sweep file {path}: run names are not unique")
  for r in runs:
    if r.stage not in STAGES:
      raise ValueError(f"sweep file {path}: run {r.name} has stage {r.stage!r}; use {STAGES}")
  return runs


def repo_root() -> str:
  return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_base(path: str) -> ml_collections.ConfigDict:
  """A config file's ``get_config()``; relative paths are taken from the repo root."""
  full = path if os.path.isabs(path) else os.path.join(repo_root(), path)
  if not os.path.exists(full):
    raise FileNotFoundError(f"base config {full} (from the sweep's base=) does not exist")
  spec = importlib.util.spec_from_file_location("_base_config", full)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _get(cfg, dotted: str):
  for k in dotted.split("."):
    cfg = cfg[k]
  return cfg


def _set(cfg, dotted: str, value) -> None:
  *parents, last = dotted.split(".")
  for k in parents:
    cfg = cfg[k]
  if last not in cfg:
    raise KeyError(f"config has no field {dotted!r} (sweep override or scaled field)")
  cfg[last] = value


def _scale(value, m: float, minimum: int):
  if isinstance(value, (tuple, list)):
    return tuple(_scale(v, m, minimum) for v in value)
  return max(minimum, int(round(value * m)))


def scale_model(cfg: ml_collections.ConfigDict, stage: str, width: float, depth: float
                ) -> ml_collections.ConfigDict:
  """A copy of ``cfg`` with the stage's width fields times ``width`` (rounded, >= 2) and depth
  fields times ``depth`` (rounded, >= 1). Channel tuples scale element-wise."""
  out = ml_collections.ConfigDict(cfg.to_dict())
  section = out[stage]
  for f in WIDTH_FIELDS[stage]:
    _set(section, f, _scale(_get(section, f), width, 2))
  for f in DEPTH_FIELDS[stage]:
    _set(section, f, _scale(_get(section, f), depth, 1))
  return out


def materialize(run: Run) -> ml_collections.ConfigDict:
  """The run's config without its step count: base -> scaled -> overrides, one stage."""
  cfg = scale_model(load_base(run.base), run.stage, run.width, run.depth)
  cfg.stages = (run.stage,)
  cfg.seed = run.seed
  if run.stage == "motion":
    cfg.motion_models = ("osmnet",)
  if run.data_size is not None:
    # Clips per identity stay as in the base config: more data is more identities too.
    synth = cfg.data.synth
    per_id = synth.num_train / synth.num_train_ids
    synth.num_train = int(run.data_size)
    synth.num_train_ids = max(1, int(round(run.data_size / per_id)))
  for k, v in run.overrides:
    _set(cfg, k, v)
  return cfg


def with_steps(cfg: ml_collections.ConfigDict, stage: str, steps: int
               ) -> ml_collections.ConfigDict:
  """``cfg`` training ``steps`` steps, saving every min(save_every, steps)."""
  out = ml_collections.ConfigDict(cfg.to_dict())
  _set(out, STEPS_FIELD[stage], int(steps))
  save = STEPS_FIELD[stage].rsplit(".", 1)[0] + ".save_every"
  _set(out, save, max(1, min(int(_get(out, save)), int(steps))))
  return out


def batch_size(cfg, stage: str) -> int:
  return int(_get(cfg, BATCH_FIELD[stage]))
