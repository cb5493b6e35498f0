"""Toy 2-D Gaussian mixtures with PacGAN's parameters, sampled fresh on the device every batch.

ring8: ``data.modes`` (8) modes evenly spaced on a circle of ``data.radius`` (1.0).
grid25: a square grid of ``data.modes`` (25) modes ``data.spacing`` (2.0) apart, centred on 0,
so 5 x 5 modes at {-4, -2, 0, 2, 4}. Each mode is an isotropic Gaussian of ``data.std``.
``data.modes: 0`` means the count in the name.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ganexp.config import DataConfig
from ganexp.data.spec import DataSpec
from ganexp.distributed import World
from ganexp.errors import ConfigError

TOY_MODES = {"ring8": 8, "grid25": 25}
TOY_SPEC = DataSpec(kind="points", shape=(2,), num_classes=0, class_names=(), size=None)


def mode_centers(cfg: DataConfig) -> torch.Tensor:
    """The (K, 2) float32 mode centres of a toy mixture, on the CPU."""
    modes = cfg.modes or TOY_MODES[cfg.name]
    if modes < 1:
        raise ConfigError("data.modes", cfg.modes, "must be >= 1 (0: the count in the name)")
    if cfg.name == "ring8":
        angles = torch.arange(modes, dtype=torch.float64) * (2 * math.pi / modes)
        centers = cfg.radius * torch.stack([angles.cos(), angles.sin()], dim=1)
        return centers.float()
    side = math.isqrt(modes)
    if side * side != modes:
        raise ConfigError("data.modes", cfg.modes, "grid25 needs a square number of modes")
    coords = (torch.arange(side, dtype=torch.float64) - (side - 1) / 2) * cfg.spacing
    return torch.cartesian_prod(coords, coords).float()


class ToyMixture:
    """Unlabelled points: a uniformly chosen mode's centre plus Gaussian noise. Each of
    ``world.size`` processes draws its own ``batch_size / world.size`` points (seeded by rank)."""

    spec = TOY_SPEC

    def __init__(
        self,
        cfg: DataConfig,
        batch_size: int,
        device: torch.device,
        seed: int,
        world: World | None = None,
    ) -> None:
        world = world or World()
        self._centers = mode_centers(cfg).to(device)
        self._std = cfg.std
        self._batch_size = batch_size // world.size
        self._generator = torch.Generator(device=device).manual_seed(seed + world.rank)

    def next_batch(self) -> tuple[torch.Tensor, None]:
        g, n = self._generator, self._batch_size
        mode = torch.randint(len(self._centers), (n,), generator=g, device=g.device)
        noise = torch.randn(n, 2, generator=g, device=g.device)
        return self._centers[mode] + self._std * noise, None

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self._generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._generator.set_state(state["generator"].cpu())
