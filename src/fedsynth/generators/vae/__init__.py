"""The ``dp-vae/1`` family (SGDE's per-class DP β-VAE); see :mod:`.family`."""
