"""Scaling experiments: FLOP-budgeted sweeps over model size, compute, data and seeds, run
through train.py's stage code, with fitted frontiers (``python -m osmnet_jax.scaling``)."""
