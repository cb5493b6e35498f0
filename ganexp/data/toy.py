"""Toy data: PacGAN's 2-D Gaussian mixtures, the WGAN-GP swiss roll and the Dirac-GAN's point 0
on the line (every sample 0: ``data.std`` 0), sampled on the device.

ring8: ``data.modes`` (8) modes evenly spaced on a circle of ``data.radius`` (1.0).
grid25: a square grid of ``data.modes`` (25) modes ``data.spacing`` (2.0) apart, centred on 0,
so 5 x 5 modes at {-4, -2, 0, 2, 4}. Each mode is an isotropic Gaussian of ``data.std``.
``data.modes: 0`` means the count in the name.
swissroll: sklearn's ``make_swiss_roll`` in the plane, as WGAN-GP's gan_toy.py uses it (below);
``data.std`` is its noise. It has no modes.

``data.scale``: every point is divided by it, so a preset writes a paper's numbers unchanged
(gan_toy.py divides its 8 Gaussians by 1.414, its 25 by 2.828 and its swiss roll by 7.5);
:func:`mode_centers` and :func:`mode_std` give the centres and std on that same scale.
``data.train_size``: 0 draws fresh points every batch; N > 0 draws a fixed set of N points once
and every batch from it uniformly with replacement (PacGAN resamples its fixed 100k set so;
gan_toy.py's 25 Gaussians are a fixed 100k set).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ganexp.config import DataConfig
from ganexp.data.spec import DataSpec, Shard
from ganexp.errors import ConfigError

# the toy data sets and their modes
TOY_MODES = {"ring8": 8, "grid25": 25, "swissroll": 0, "dirac": 1}
TOY_SPEC = DataSpec(kind="points", shape=(2,), num_classes=0, class_names=(), size=None)
DIRAC_SPEC = DataSpec(kind="points", shape=(1,), num_classes=0, class_names=(), size=None)


def toy_spec(cfg: DataConfig) -> DataSpec:
    """The spec of a toy data set: 2-D points, or the Dirac-GAN's 1-D point."""
    return DIRAC_SPEC if cfg.name == "dirac" else TOY_SPEC


TRAIN_SET_STREAM = 0x5E7  # tells the fixed training set's seed apart from the run's


def _unscaled_centers(cfg: DataConfig) -> torch.Tensor | None:
    """The (K, 2) float32 mode centres before ``data.scale``; None for the swiss roll."""
    if cfg.name == "swissroll":
        if cfg.modes:
            raise ConfigError("data.modes", cfg.modes, "swissroll has no modes; leave it 0")
        return None
    if cfg.name == "dirac":
        if cfg.modes not in (0, 1):
            raise ConfigError("data.modes", cfg.modes, "dirac is one point; leave it 0")
        return torch.zeros(1, 1)
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


def mode_centers(cfg: DataConfig) -> torch.Tensor | None:
    """The (K, 2) float32 mode centres of a toy mixture on the CPU, divided by ``data.scale``;
    None for data without modes (swissroll)."""
    centers = _unscaled_centers(cfg)
    return None if centers is None else centers / cfg.scale


def mode_std(cfg: DataConfig) -> float:
    """The standard deviation of each mode (the swiss roll's noise), divided by ``data.scale``."""
    return cfg.std / cfg.scale


def _draw(
    cfg: DataConfig, centers: torch.Tensor | None, n: int, generator: torch.Generator
) -> torch.Tensor:
    """``n`` fresh points on the generator's device; ``centers`` (unscaled) are there too."""
    device = generator.device
    if centers is None:
        # sklearn.datasets.make_swiss_roll written out (sklearn is not a dependency): the roll's
        # x and z columns, the two gan_toy.py keeps, are (t cos t, t sin t) plus N(0, noise^2) each
        t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator, device=device))
        points = torch.stack([t * t.cos(), t * t.sin()], dim=1)
    else:
        mode = torch.randint(len(centers), (n,), generator=generator, device=device)
        points = centers[mode]
    noise = torch.randn(n, points.shape[1], generator=generator, device=device)
    return (points + cfg.std * noise) / cfg.scale


def sample_toy(cfg: DataConfig, n: int, seed: int) -> torch.Tensor:
    """``n`` fresh points of the toy distribution on the CPU, never the fixed training set: the
    real side of the toy metrics."""
    return _draw(cfg, _unscaled_centers(cfg), n, torch.Generator().manual_seed(seed))


def train_set(cfg: DataConfig, seed: int) -> torch.Tensor:
    """The fixed training set of ``data.train_size`` points for the run's ``seed``, on the CPU.

    It is the data, so it depends on the seed alone (not the rank or the device), and a resumed
    run draws it again. Its generator's seed is mixed from the run's seed: seeded with the seed
    itself, it would replay the random stream of the batch sampler (seed + rank), and fresh or
    drawn points would repeat its members."""
    mixed = int(np.random.SeedSequence([TRAIN_SET_STREAM, seed]).generate_state(1)[0])
    return sample_toy(cfg, cfg.train_size, mixed)


class ToyMixture:
    """Unlabelled toy points (a Gaussian mixture or the swiss roll). Each of ``world.size``
    processes draws its own ``batch_size / world.size`` points (seeded by rank): fresh ones, or
    with ``data.train_size`` indices into a fixed set that every process shares."""

    def __init__(
        self,
        cfg: DataConfig,
        batch_size: int,
        device: torch.device,
        seed: int,
        world: Shard | None = None,
    ) -> None:
        world = world or Shard()
        self.spec = toy_spec(cfg)
        self._cfg = cfg
        centers = _unscaled_centers(cfg)
        self._centers = None if centers is None else centers.to(device)
        self._batch_size = batch_size // world.size
        self._generator = torch.Generator(device=device).manual_seed(seed + world.rank)
        self._train_set = train_set(cfg, seed).to(device) if cfg.train_size else None

    def next_batch(self) -> tuple[torch.Tensor, None]:
        g, n = self._generator, self._batch_size
        if self._train_set is None:
            return _draw(self._cfg, self._centers, n, g), None
        index = torch.randint(len(self._train_set), (n,), generator=g, device=g.device)
        return self._train_set[index], None

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self._generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._generator.set_state(state["generator"].cpu())
