"""ganexp: a Hydra-configured GAN experiment runner."""
