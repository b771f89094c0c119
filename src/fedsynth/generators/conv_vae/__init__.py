"""The ``dp-conv-vae/1`` family: per-class DP convolutional β-VAEs for images (SGDE)."""
