"""Evaluation metrics (image quality here; lip sync, identity and head motion join later)."""
