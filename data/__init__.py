"""Dataset builders (TFDS) and preprocessing for osmnet_jax.

- ``data.synth_talk``: the procedural talking-head dataset (embedded default).
- ``data.schema``: the example format every builder writes (DESIGN.md §2).
"""
