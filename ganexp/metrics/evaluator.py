"""What the eval hook computes for a run's data: mode statistics for toy mixtures."""

from __future__ import annotations

import torch

from ganexp.config import RunConfig
from ganexp.data import mode_centers
from ganexp.hooks import generate
from ganexp.metrics.toy import mode_stats
from ganexp.train import Trainer


class ToyEvaluator:
    """Modes covered, high-quality fraction and reverse KL of fresh samples (fixed noise)."""

    headline = "modes_covered"
    maximize = True

    def __init__(self, cfg: RunConfig) -> None:
        self.centers = mode_centers(cfg.data)
        self.std = cfg.data.std
        self.noise = torch.randn(
            cfg.metrics.num_samples,
            cfg.trainer.z_dim,
            generator=torch.Generator().manual_seed(cfg.seed + 1),
        )

    def __call__(self, trainer: Trainer) -> dict[str, float]:
        samples = generate(trainer, self.noise.to(trainer.device), None)
        return mode_stats(samples, self.centers, self.std)
