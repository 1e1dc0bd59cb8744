r"""The comparison table of eval.py's metrics.json, and the README results section made from it.

  python -m osmnet_jax.evaluation.table --metrics runs/demo/eval/metrics.json --readme README.md
  # rewrites only the text between <!-- results:start --> and <!-- results:end --> in README.md:
  # the table, the date of the metrics file and the commands that reproduce it.

  from osmnet_jax.evaluation import table as results_table
  print(results_table.markdown_table(json.load(open("W/eval/metrics.json"))))

eval.py prints the same table and writes it to W/eval/metrics.md. A null metric shows as "-".
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

START, END = "<!-- results:start -->", "<!-- results:end -->"
ROWS = ("osmnet", "audio2pose_lstm", "noise_sampler", "copy_source", "renderer", "real")
# (header, group, key, decimals): the key metrics of every DESIGN.md §7 group.
COLUMNS = (
    ("PSNR ↑", "image", "psnr", 2), ("SSIM ↑", "image", "ssim", 3),
    ("LPIPS ↓", "image", "lpips", 3), ("CPBD ↑", "image", "cpbd", 3),
    ("FID ↓", "image", "fid", 1), ("CSIM ↑", "identity", "csim", 3),
    ("LMD mouth ↓", "lip_sync", "lmd_mouth", 2),
    ("mouth-audio r ↑", "lip_sync", "mouth_audio_corr", 3),
    ("LSE-C ↑", "lip_sync", "lse_c", 2), ("LSE-D ↓", "lip_sync", "lse_d", 2),
    ("diversity ratio →1", "head_motion", "diversity_ratio", 2),
    ("pose FD ↓", "head_motion", "pose_fd", 3),
    ("out of range ↓", "head_motion", "out_of_range_frac", 3),
    ("yaw r (pixels) ↑", "motion_in_pixels", "yaw_r", 2),
    ("yaw amplitude (pixels) →1", "motion_in_pixels", "yaw_amplitude", 2),
    ("pitch r (pixels) ↑", "motion_in_pixels", "pitch_r", 2),
    ("pitch amplitude (pixels) →1", "motion_in_pixels", "pitch_amplitude", 2),
    ("roll r (pixels) ↑", "motion_in_pixels", "roll_r", 2),
    ("roll amplitude (pixels) →1", "motion_in_pixels", "roll_amplitude", 2),
    ("mouth (pixels) vs asked r ↑", "motion_in_pixels", "mouth_landmark_r", 2),
    ("mouth (pixels) vs audio r ↑", "motion_in_pixels", "mouth_audio_r", 2),
)


def cell(results: dict, method: str, group: str, key: str, decimals: int) -> str:
  value = ((results.get(method) or {}).get(group) or {}).get(key)
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return "-"
  return f"{value:.{decimals}f}"


def markdown_table(results: dict) -> str:
  """metrics.json dict -> a Markdown table: one row per method (ROWS first), "-" for null."""
  methods = [m for m in ROWS if m in results] + [m for m in results if m not in ROWS]
  lines = ["| method | " + " | ".join(h for h, *_ in COLUMNS) + " |",
           "|---|" + "---:|" * len(COLUMNS)]
  for m in methods:
    lines.append(f"| {m} | " + " | ".join(cell(results, m, *c[1:]) for c in COLUMNS) + " |")
  return "\n".join(lines)


def clips_note(results: dict) -> str:
  """One line: split, clips and samples the table was measured on (from the methods' meta)."""
  parts = []
  for m in [m for m in ROWS if m in results]:
    meta = results[m].get("meta") or {}
    if meta.get("num_clips") is not None:
      parts.append(f"{m}: {meta['num_clips']} {meta.get('split', '')} clips x "
                   f"{meta.get('num_samples', 1)} video(s)")
  return "; ".join(parts)


def section(results: dict, date: str, train_command: str, eval_command: str,
            metrics: str) -> str:
  """The README text that goes between the markers."""
  return "\n".join([
      f"Measured {date} ({clips_note(results)}). Reproduce with:",
      "",
      "```bash",
      train_command,
      eval_command,
      f"python -m osmnet_jax.evaluation.table --metrics {metrics} --readme README.md",
      "```",
      "",
      markdown_table(results),
      "",
      "Image metrics of a sampled head motion measure closeness to one real take of the audio; "
      "`-`: not computed (the reason is in metrics.json `meta.skipped`).",
  ])


def replace_between_markers(text: str, body: str) -> str:
  """``text`` with everything between the START and END markers replaced by ``body``."""
  if text.count(START) != 1 or text.count(END) != 1:
    raise ValueError(f"expected exactly one {START!r} and one {END!r} marker, found "
                     f"{text.count(START)} and {text.count(END)}")
  head, rest = text.split(START)
  if END not in rest:
    raise ValueError(f"{END!r} comes before {START!r}")
  _, tail = rest.split(END)
  return f"{head}{START}\n{body}\n{END}{tail}"


def update_readme(readme: str, metrics: str, train_command: str | None = None,
                  eval_command: str | None = None) -> str:
  """Rewrites the marked results section of ``readme`` from ``metrics``; returns the section."""
  with open(metrics) as f:
    results = json.load(f)
  workdir = os.path.dirname(os.path.dirname(os.path.normpath(metrics))) or "."
  recorded = next((r["meta"]["command"] for r in results.values()
                   if isinstance(r, dict) and (r.get("meta") or {}).get("command")), None)
  eval_command = eval_command or recorded or f"python eval.py --workdir {workdir}"
  train_command = train_command or f"python train.py --workdir {workdir}"
  date = datetime.datetime.fromtimestamp(os.path.getmtime(metrics), datetime.timezone.utc)
  body = section(results, date.strftime("%Y-%m-%d"), train_command, eval_command, metrics)
  with open(readme) as f:
    text = f.read()
  new = replace_between_markers(text, body)
  if new != text:
    tmp = readme + ".tmp"
    with open(tmp, "w") as f:
      f.write(new)
    os.replace(tmp, readme)
  return body


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m osmnet_jax.evaluation.table",
                              description="Write eval.py's comparison table into README.md "
                                          f"between {START} and {END}.")
  p.add_argument("--metrics", required=True, help="W/eval/metrics.json written by eval.py")
  p.add_argument("--readme", default="README.md", help="file with the two markers")
  p.add_argument("--train_command", default=None,
                 help="the train.py command that made W (default: python train.py --workdir W)")
  p.add_argument("--eval_command", default=None,
                 help="default: the command eval.py recorded in metrics.json")
  args = p.parse_args(argv)
  try:
    body = update_readme(args.readme, args.metrics, args.train_command, args.eval_command)
  except (OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(body)
  print(f"updated {args.readme}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
