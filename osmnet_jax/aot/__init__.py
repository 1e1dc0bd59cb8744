"""Ahead-of-time compilation for accelerators this machine does not have (TPU pods, NVIDIA
clusters): every stage's train step and generate's render call compiled for the target, priced
(memory vs HBM, FLOPs, collectives, roofline step time, MFU, max batch). CLI: python -m
osmnet_jax.aot (see __main__.py); needs the `aot` extra."""
