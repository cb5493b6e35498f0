"""Generator and discriminator architectures, and the norm factory they share."""
