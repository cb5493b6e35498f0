"""What the eval hook computes for paired translation (task=paired_translation): how close G's
translations of held-out inputs are to their targets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ganexp.config import RunConfig
from ganexp.data.images import to_signed_unit
from ganexp.data.translation import garments_config, held_out_pairs
from ganexp.hooks import generate
from ganexp.metrics.extractors import (
    FeatureExtractor,
    build_extractor,
    inception_weights_at_hand,
    to_uint8,
)
from ganexp.train import StopRequested

BATCH = 500


class PairedEvaluator:
    """On the first ``metrics.num_samples`` held-out pairs (A, B): ``l1`` (mean |G(A) - B|),
    ``psnr`` and ``ssim`` (torchmetrics, per image, then averaged), all with pixels in [0, 1];
    and, given a feature extractor, the Frechet distance of the translations to the targets
    (``fd_<extractor>``, or ``fid``). Headed by ``l1``, lower is better.

    The metrics are torchmetrics' functional ``peak_signal_noise_ratio`` and
    ``structural_similarity_index_measure`` (an 11-pixel Gaussian window, sigma 1.5)."""

    headline = "l1"
    maximize = False

    def __init__(
        self,
        held_out: tuple[torch.Tensor, torch.Tensor, str],
        num_samples: int,
        z_dim: int,
        seed: int,
        device: torch.device,
        extractor: FeatureExtractor | None,
    ) -> None:
        """``held_out``: uint8 inputs, uint8 targets and what they are; ``extractor``: features
        for the distance, or None (a folder of pairs has no classifier)."""
        inputs, targets, self.split = held_out
        self.inputs, self.targets = inputs[:num_samples], targets[:num_samples]
        self.device = device
        self.extractor = extractor
        generator = torch.Generator().manual_seed(seed + 1)
        self.noise = torch.randn(len(self.inputs), z_dim, generator=generator)
        self._fd = None  # the real side (the targets') is computed at the first evaluation

    def setup(self) -> dict[str, Any]:
        """What the run config records about evaluation."""
        record = {
            "features_reason": f"L1, PSNR and SSIM of translations of {self.split}",
            "paired_split": self.split,
            "num_pairs": len(self.inputs),
            "headline": f"eval/{self.headline}",
        }
        if self.extractor is None:
            record["features_reason"] += (
                "; no Frechet distance (pairs without classes have no classifier: "
                "metrics.features=inception with its weights gives the FID)"
            )
        else:
            record |= {"features": self.extractor.name, "features_sha256": self.extractor.sha256}
        return record

    def _distance(self) -> Any:
        from ganexp.metrics.distances import FrechetDistance

        if self._fd is None:
            self._fd = FrechetDistance(self.extractor)
            for start in range(0, len(self.targets), BATCH):
                self._fd.update(self.targets[start : start + BATCH].to(self.device), real=True)
        return self._fd

    def __call__(
        self, generator: nn.Module, should_stop: Callable[[], bool] | None = None
    ) -> dict[str, float]:
        """The metrics of ``generator``; ``should_stop`` is asked between batches, and a yes
        abandons the evaluation (StopRequested)."""
        from torchmetrics.functional.image import (
            peak_signal_noise_ratio,
            structural_similarity_index_measure,
        )

        fd = self._distance() if self.extractor is not None else None
        sums = {"l1": 0.0, "psnr": 0.0, "ssim": 0.0}
        try:
            for start in range(0, len(self.inputs), BATCH):
                if should_stop is not None and should_stop():
                    raise StopRequested
                window = slice(start, start + BATCH)
                inputs = to_signed_unit(self.inputs[window].to(self.device))
                outputs = generate(generator, self.noise[window].to(self.device), inputs)
                translated = to_uint8(outputs.float())
                if fd is not None:
                    fd.update(translated)
                made = translated.float() / 255
                wanted = self.targets[window].to(self.device).float() / 255
                n = len(made)
                sums["l1"] += float((made - wanted).abs().mean()) * n
                psnr = peak_signal_noise_ratio(
                    made, wanted, data_range=1.0, dim=(1, 2, 3), reduction="sum"
                )
                sums["psnr"] += float(psnr)
                ssim = structural_similarity_index_measure(
                    made, wanted, data_range=1.0, reduction="sum"
                )
                sums["ssim"] += float(ssim)
        except StopRequested:
            if fd is not None:
                fd.reset_fake()
            raise
        results = {key: total / len(self.inputs) for key, total in sums.items()}
        if fd is not None:
            name = self.extractor.name
            results["fid" if name == "inception" else f"fd_{name}"] = fd.compute()
        return results


def build_paired_evaluator(cfg: RunConfig, device: torch.device) -> PairedEvaluator:
    """The evaluator of ``cfg``'s held-out pairs. The distance's features: the Fashion-MNIST
    classifier's for fashion_edges; for a folder of pairs, which has no classes to train one
    on, Inception's where ``metrics.features`` takes it (its weights at hand), else none."""
    data, features = cfg.data, cfg.metrics.features
    weights = cfg.metrics.inception_weights
    if data.name == "fashion_edges":
        data = garments_config(data)
    elif features == "auto" and not (device.type == "cuda" and inception_weights_at_hand(weights)):
        data = None
    extractor = None
    if data is not None:
        cuda = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):  # draws nothing from the run's stream
            extractor = build_extractor(features, data.name, device, data, weights).to(device)
    held_out = held_out_pairs(cfg.data)
    n, z_dim = cfg.metrics.num_samples, cfg.trainer.z_dim
    return PairedEvaluator(held_out, n, z_dim, cfg.seed, device, extractor)
