"""Flax models: the FOMM-compatible renderer (stage A) and the OSM-Net motion models (stage B)."""
