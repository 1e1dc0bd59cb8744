"""``python -m osmnet_jax.convert --from fomm|audio2head CKPT --out W``: a PyTorch checkpoint ->
W/converted (orbax) + W/config.json. Exit status 2, with one message, for a missing, unsafe or
mismatched checkpoint."""
import argparse
import sys

import jax

from osmnet_jax.convert import audio2head, fomm, torch_state


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m osmnet_jax.convert",
      description="Converts a FOMM or Audio2Head PyTorch checkpoint to osmnet_jax variables.")
  parser.add_argument("--from", dest="src", choices=["fomm", "audio2head"], required=True)
  parser.add_argument("ckpt")
  parser.add_argument("--out", required=True)
  args = parser.parse_args(argv)
  load = audio2head.load_audio2head if args.src == "audio2head" else fomm.load_fomm
  try:
    variables, cfg = load(args.ckpt)
  except (FileNotFoundError, torch_state.CheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  path = fomm.save_converted(variables, cfg, args.out)
  n = sum(x.size for x in jax.tree.leaves(variables))
  print(f"converted {args.ckpt} ({n} values, modules {sorted(variables)}) -> {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
