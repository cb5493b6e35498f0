"""What a run is composed of besides its networks: losses, optional loss terms, DiffAugment,
a user's own classes."""
