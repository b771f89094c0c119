"""The ``dp-gan/1`` family (conditional GAN, DP-SGD on the discriminator); see :mod:`.family`."""
