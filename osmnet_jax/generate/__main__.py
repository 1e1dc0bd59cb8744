"""``python -m osmnet_jax.generate``: see osmnet_jax/generate/__init__.py."""
import sys

from osmnet_jax.generate.pipeline import main

if __name__ == "__main__":
  sys.exit(main())
