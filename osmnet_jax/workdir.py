r"""A train.py workdir W: every path in it, and the one loader of each trained part.

  W/config.json                         the run's config (train.py)
  W/pose_stats.json                     train poses' mean/std [6] (train.py; de-normalises poses)
  W/renderer_config.json                renderer model config + image size (renderer stage)
  W/checkpoints/renderer/               renderer stage (orbax; RendererState)
  W/checkpoints/expression/             expression stage: the state carries its frozen renderer
      expression_config.json, eval.json
  W/checkpoints/motion[_<baseline>]/    motion stage: motion_config.json, sigma.json
  W/converted/                          a converted renderer: `python -m osmnet_jax.convert
      config.json, converted              --from fomm|audio2head CKPT --out W/converted`
  W/samples/, W/eval/, W/tb/            sample videos, eval.py results, TensorBoard

Checkpoints hold the unreplicated state (one format, whatever the device count; see
checkpointing.py). Loaders restore the saved tree without a target, keep the parts inference
needs and trace the model on them once, so a checkpoint that does not fit its saved config fails
at load time, naming the file. Every missing part raises ``WorkdirError`` naming the file and
the command that writes it.

  rvars, rcfg = workdir.load_renderer(W)        # trained renderer, else W/converted
  expr = workdir.load_expression(W)              # Expression: params + frozen renderer
  motion = workdir.load_motion(W, "osmnet")      # Motion: module, params, sigma stats
  mean, std = workdir.load_pose_stats(W)

  python -m osmnet_jax.workdir upgrade W         # rewrite replicated (pmap) checkpoints
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

import jax
import ml_collections
import numpy as np

from osmnet_jax import checkpointing
from osmnet_jax.models import motion as motion_models

CONFIG = "config.json"
POSE_STATS = "pose_stats.json"
RENDERER_CONFIG = "renderer_config.json"
EXPRESSION_CONFIG = "expression_config.json"
MOTION_CONFIG = "motion_config.json"
SIGMA = "sigma.json"
CONVERTED = "converted"
SAMPLES = "samples"
EVAL = "eval"


class WorkdirError(RuntimeError):
  """A trained part is missing or unreadable; the message names the file and the fix."""


def checkpoint_dir(workdir: str, stage: str) -> str:
  """W/checkpoints/<stage>: 'renderer', 'expression', 'motion' or 'motion_<baseline>'."""
  return os.path.join(workdir, "checkpoints", stage)


def motion_dir(workdir: str, model: str) -> str:
  """checkpoints/motion for OSM-Net; checkpoints/motion_<model> for the baselines."""
  return checkpoint_dir(workdir, "motion" if model == "osmnet" else f"motion_{model}")


def trained_motion_models(workdir: str) -> tuple[str, ...]:
  """The motion models with a saved config in W, in motion_models.MODELS order."""
  return tuple(m for m in motion_models.MODELS
               if os.path.exists(os.path.join(motion_dir(workdir, m), MOTION_CONFIG)))


def train_hint(workdir: str) -> str:
  return f"train it with `python train.py --workdir {workdir} --config <config>`"


def _read_json(path: str, fix: str) -> dict:
  if not os.path.exists(path):
    raise WorkdirError(f"{path} missing: {fix}")
  with open(path) as f:
    return json.load(f)


def load_config(workdir: str) -> dict:
  """W/config.json as a dict (the workdir must exist and be a train.py workdir)."""
  if not os.path.isdir(workdir):
    raise WorkdirError(f"workdir {workdir} does not exist; {train_hint(workdir)}")
  return _read_json(os.path.join(workdir, CONFIG),
                    f"{workdir} is not a train.py workdir; {train_hint(workdir)}")


def load_pose_stats(workdir: str) -> tuple[np.ndarray, np.ndarray]:
  """(mean [6], std [6]) of the training dataset's poses, from W/pose_stats.json."""
  stats = _read_json(
      os.path.join(workdir, POSE_STATS),
      "these pose statistics (dataset mean/std that de-normalise poses) are written by train.py "
      f"at start; rerun `python train.py --workdir {workdir}` with the same config (trained "
      "stages resume at their last step) to write it")
  return np.asarray(stats["mean"], np.float32), np.asarray(stats["std"], np.float32)


def _config_summary(path: str, keys: tuple[str, ...]) -> str:
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError):
    return path
  flat = {**saved, **saved.get("renderer", {}), **saved.get("expression", {})}
  shown = ", ".join(f"{k}={flat[k]}" for k in keys if k in flat)
  return f"{path} ({shown})"


def _restore(ckdir: str, saved: dict, config_path: str) -> tuple[dict, dict]:
  """(saved state tree, meta) of the latest step in ``ckdir``."""
  if saved.get("replicas"):
    raise WorkdirError(
        f"{ckdir} holds replicated checkpoints (a leading pmap device axis, see 'replicas' in "
        f"{config_path}); checkpoints are now saved unreplicated. Convert them in place with "
        f"`python -m osmnet_jax.workdir upgrade {os.path.dirname(os.path.dirname(ckdir))}`")
  ck = checkpointing.Checkpointer(ckdir)
  try:
    if ck.latest_step() is None:
      raise WorkdirError(f"no checkpoint in {ckdir}")
    state, meta = ck.restore()
  finally:
    ck.close()
  return jax.device_get(state), meta


def _incompatible(ckdir: str, config_path: str, keys, e: Exception) -> WorkdirError:
  return WorkdirError(
      f"the checkpoint in {ckdir} is incompatible with the config it was saved with: it expects "
      f"{_config_summary(config_path, keys)} ({type(e).__name__}: {str(e)[:300]})")


# ----------------------------------------------------------------------------------------------
# Renderer.

def _renderer_variables(state: dict) -> dict:
  """Saved renderer state (params / batch_stats keyed by module) -> renderer API variables."""
  return {k: {"params": state["params"][k], "batch_stats": state.get("batch_stats", {}).get(k, {})}
          for k in ("kp_detector", "generator")}


def _check_renderer(variables: dict, cfg, size: int, where: str) -> dict:
  from osmnet_jax import renderer

  want = jax.eval_shape(lambda r: renderer.init(r, cfg, size, False), jax.random.PRNGKey(0))
  want = {k: want[k] for k in ("kp_detector", "generator")}
  got = {k: variables[k] for k in want}
  ok = jax.tree.structure(got) == jax.tree.structure(want) and all(
      np.shape(g) == w.shape for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)))
  if not ok:
    raise WorkdirError(f"the renderer in {where} does not match the renderer config saved with "
                       f"it ({cfg.get('num_kp')} keypoints, {size} px)")
  return jax.tree.map(lambda g, w: np.asarray(g, w.dtype), got, want)


def has_renderer(workdir: str) -> bool:
  return (os.path.exists(os.path.join(workdir, RENDERER_CONFIG)) or
          os.path.exists(os.path.join(workdir, CONVERTED, CONFIG)))


def load_renderer(workdir: str) -> tuple[dict, ml_collections.ConfigDict]:
  """({'kp_detector', 'generator'} variables, renderer model config): the renderer stage's
  latest checkpoint, else the converted renderer in W/converted."""
  path = os.path.join(workdir, RENDERER_CONFIG)
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    cfg = ml_collections.ConfigDict(saved["model"])
    ckdir = checkpoint_dir(workdir, "renderer")
    state, _ = _restore(ckdir, saved, path)
    return _check_renderer(_renderer_variables(state), cfg, int(saved["image_size"]), ckdir), cfg
  converted = os.path.join(workdir, CONVERTED)
  if os.path.exists(os.path.join(converted, CONFIG)):
    return load_converted(converted)
  raise WorkdirError(
      f"no renderer in {workdir}: neither {path} (train the renderer stage: `python train.py "
      f"--workdir {workdir}`) nor {converted}/ (`python -m osmnet_jax.convert --from fomm CKPT "
      f"--out {converted}`)")


def save_converted(variables: dict, cfg, out_dir: str) -> str:
  """Writes `out_dir/converted` (orbax) and `out_dir/config.json`; returns the checkpoint path."""
  import orbax.checkpoint as ocp

  out_dir = os.path.abspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, CONVERTED)
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(path, variables, force=True)
  ckptr.wait_until_finished()
  with open(os.path.join(out_dir, CONFIG), "w") as f:
    f.write(cfg.to_json(indent=2, sort_keys=True))
  return path


def load_converted(out_dir: str) -> tuple[dict, ml_collections.ConfigDict]:
  """Reads what `save_converted` wrote: (variables, renderer config)."""
  import orbax.checkpoint as ocp

  out_dir = os.path.abspath(out_dir)
  fix = f"write it with `python -m osmnet_jax.convert --out {out_dir}`"
  cfg = ml_collections.ConfigDict(_read_json(os.path.join(out_dir, CONFIG), fix))
  variables = ocp.StandardCheckpointer().restore(os.path.join(out_dir, CONVERTED))
  return variables, cfg


# ----------------------------------------------------------------------------------------------
# Expression model and motion models.

@dataclasses.dataclass
class Expression:
  """A trained expression stage: ExpressionEncoder + KeypointPredictor params and the frozen
  renderer they drive (``renderer_variables``, ``renderer_cfg``) at ``image_size``."""

  cfg: ml_collections.ConfigDict            # cfg.expression it was trained with
  renderer_cfg: ml_collections.ConfigDict
  image_size: int
  params: Any                               # {'expression': ..., 'keypoints': ...}
  renderer_variables: dict                  # {'kp_detector', 'generator'}
  step: int
  checkpoint_dir: str


def load_expression(workdir: str, stage: str | None = None) -> Expression:
  """The latest checkpoint of W/checkpoints/<stage>: ``"joint"`` (the expression models
  fine-tuned through the renderer, stages/joint.py) or ``"expression"``; None takes joint when
  that stage has a checkpoint, else expression."""
  from osmnet_jax.inference import keypoints

  if stage is None:
    joint = checkpoint_dir(workdir, "joint")
    done = os.path.isdir(joint) and any(d.isdigit() for d in os.listdir(joint))
    stage = "joint" if done else "expression"
  if stage not in ("joint", "expression"):
    raise WorkdirError(f"load_expression: stage={stage!r}; use 'joint' or 'expression'")
  ckdir = checkpoint_dir(workdir, stage)
  path = os.path.join(ckdir, EXPRESSION_CONFIG)
  saved = _read_json(path, f"no expression checkpoint in {ckdir}: the expression stage has not "
                           f"been trained in this workdir; {train_hint(workdir)}")
  state, meta = _restore(ckdir, saved, path)
  expr = Expression(ml_collections.ConfigDict(saved["expression"]),
                    ml_collections.ConfigDict(saved["renderer"]), int(saved["image_size"]),
                    state["params"], state["renderer"], int(meta["step"]), ckdir)
  try:
    keypoints.check(expr)
  except Exception as e:  # flax: a param's shape or name differs from what the config builds
    raise _incompatible(ckdir, path, ("image_size", "expression_dim", "kp_hidden", "num_kp",
                                      "identity"), e) from e
  return expr


@dataclasses.dataclass
class Motion:
  """A trained motion model: its linen module, params and residual statistics (sigma.json)."""

  name: str
  cfg: ml_collections.ConfigDict            # cfg.motion it was trained with
  model: Any                                # models/motion.from_config(cfg)
  params: Any
  stats: dict                               # sigma.json + checkpoint_step
  checkpoint_dir: str

  @property
  def uses_source(self) -> bool:
    return self.cfg.identity == "image"


def load_motion(workdir: str, model: str = "osmnet") -> Motion:
  """Motion model ``model`` (osmnet or a baseline) from W/checkpoints/motion[_<model>]."""
  from osmnet_jax.inference import sampling

  if model not in motion_models.MODELS:
    raise WorkdirError(f"unknown motion model {model!r}; one of {motion_models.MODELS}")
  ckdir = motion_dir(workdir, model)
  path = os.path.join(ckdir, MOTION_CONFIG)
  saved = _read_json(path, f"no motion checkpoint in {ckdir}; {train_hint(workdir)}")
  state, meta = _restore(ckdir, saved, path)
  cfg = ml_collections.ConfigDict({k: v for k, v in saved.items()
                                   if k not in ("parallel", "replicas")})
  stats_path = os.path.join(ckdir, SIGMA)
  stats = {}
  if os.path.exists(stats_path):
    with open(stats_path) as f:
      stats = json.load(f)
  if model == "osmnet" and "sigma" not in stats:
    raise WorkdirError(f"{stats_path} missing: rerun the motion stage to estimate sigma")
  stats["checkpoint_step"] = int(meta["step"])
  motion = Motion(model, cfg, motion_models.from_config(cfg), state["params"], stats, ckdir)
  try:
    sampling.check(motion)
  except Exception as e:
    raise _incompatible(ckdir, path, ("model", "num_frames", "num_bases", "motion_dim",
                                      "identity"), e) from e
  return motion


# ----------------------------------------------------------------------------------------------
# Conversion of replicated checkpoints.

def upgrade(workdir: str) -> list[str]:
  """Rewrites every replicated (pmap, leading device axis) checkpoint of W unreplicated, in
  place (same steps and metadata); returns the folders rewritten."""
  import shutil

  done = []
  for name in sorted(os.listdir(os.path.join(workdir, "checkpoints"))):
    if name.endswith((".old", ".upgrade")):  # leftovers of an interrupted upgrade
      continue
    ckdir = checkpoint_dir(workdir, name)
    config = next((os.path.join(ckdir, f) for f in (EXPRESSION_CONFIG, MOTION_CONFIG)
                   if os.path.exists(os.path.join(ckdir, f))), None)
    if config is None:
      continue
    with open(config) as f:
      saved = json.load(f)
    if not saved.get("replicas"):
      continue
    src = checkpointing.Checkpointer(ckdir)
    steps = {s: src.restore(step=s) for s in src.all_steps()}
    src.close()
    tmp = ckdir + ".upgrade"
    shutil.rmtree(tmp, ignore_errors=True)
    dst = checkpointing.Checkpointer(tmp, max_to_keep=max(1, len(steps)), async_save=False)
    for s, (state, meta) in sorted(steps.items()):
      dst.save(s, jax.tree.map(lambda x: np.asarray(x)[0], state), meta, force=True)
    dst.close()
    for f in os.listdir(ckdir):  # the JSON files beside the step folders
      if f.endswith(".json"):
        shutil.copy(os.path.join(ckdir, f), tmp)
    saved.pop("replicas")
    with open(os.path.join(tmp, os.path.basename(config)), "w") as f:
      json.dump(saved, f, indent=2)
    # Swap by renames, so a crash at any point leaves a complete copy (ckdir or ckdir.old).
    old = ckdir + ".old"
    shutil.rmtree(old, ignore_errors=True)
    os.replace(ckdir, old)
    os.replace(tmp, ckdir)
    shutil.rmtree(old)
    done.append(ckdir)
  return done


def main(argv=None) -> int:
  import argparse

  p = argparse.ArgumentParser(prog="python -m osmnet_jax.workdir",
                              description="Workdir maintenance.")
  sub = p.add_subparsers(dest="command", required=True)
  up = sub.add_parser("upgrade", help="rewrite replicated (pmap) checkpoints unreplicated")
  up.add_argument("workdir")
  args = p.parse_args(argv)
  done = upgrade(os.path.abspath(args.workdir))
  for d in done:
    print("rewrote", d)
  if not done:
    print("nothing to upgrade")
  return 0


if __name__ == "__main__":
  sys.exit(main())
