"""The ``dp-diffusion/1`` family (class-conditional TabDDPM-style DP diffusion); see :mod:`.family`."""
