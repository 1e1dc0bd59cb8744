"""``python -m osmnet_jax.generate``: see osmnet_jax/generate/cli.py."""
import sys

from osmnet_jax.generate.cli import main

if __name__ == "__main__":
  sys.exit(main())
