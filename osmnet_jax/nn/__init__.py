"""Layers with PyTorch semantics used by the FOMM-compatible renderer (NHWC)."""
