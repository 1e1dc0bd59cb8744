"""``python -m osmnet_jax.convert``: see osmnet_jax/convert/__init__.py."""
import sys

from osmnet_jax.convert.fomm import main

if __name__ == "__main__":
  sys.exit(main())
