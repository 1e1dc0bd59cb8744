"""Renderer (stage A) losses: perceptual pyramid, equivariance, GAN."""
