"""osmnet_jax: JAX/Flax OSM-Net (one-to-many one-shot talking-head generation)."""

__version__ = "0.1.0"
