"""Face photo + speech -> talking-head videos (DESIGN.md §6: ``generate.talking_head``).

  python -m osmnet_jax.generate --workdir W --image face.jpg --audio speech.wav --out DIR
"""
from osmnet_jax.generate.pipeline import GenerateError, Generator, talking_head

__all__ = ["GenerateError", "Generator", "talking_head"]
