"""Face photo + speech -> talking-head videos (DESIGN.md §6: ``generate.talking_head``).

  python -m osmnet_jax.generate --workdir W --image face.jpg --audio speech.wav --out DIR

pipeline.py: the Generator (orchestration) and ``talking_head``; io.py: reading the photo and
speech, writing videos and poses; cli.py: the command line.
"""
from osmnet_jax.generate.io import GenerateError
from osmnet_jax.generate.pipeline import Generator, load_cached, talking_head

__all__ = ["GenerateError", "Generator", "load_cached", "talking_head"]
