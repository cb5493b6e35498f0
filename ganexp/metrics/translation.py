"""What the eval hook computes for translation: for paired translation how close G's
translations of held-out inputs are to their targets; for unpaired, how well each translator
moves held-out images into the other domain, and back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ganexp.config import RunConfig
from ganexp.data.images import to_signed_unit, to_uint8
from ganexp.data.translation import garments_config, held_out_domains, held_out_pairs
from ganexp.errors import StopRequested
from ganexp.metrics.extractors import FeatureExtractor, build_extractor, inception_available
from ganexp.models.common import generate

BATCH = 500
GARMENT_DATA = ("fashion_edges", "fashion_domains")  # Fashion-MNIST's: its classifier's features


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
                "metrics.features=inception gives the FID)"
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


class UnpairedEvaluator:
    """On up to ``metrics.num_samples`` held-out images of each domain, G_AB's translations of
    A and G_BA's of B: ``cycle_l1`` (mean |G_BA(G_AB(a)) - a| and |G_AB(G_BA(b)) - b|, pixels
    in [0, 1], over both); given a feature extractor, the Frechet distance of each direction's
    translations to the real images of its target domain (``fd_<extractor>_ab``, ``_ba``); and
    given the domains' classes, ``transfer_accuracy``: the fraction of translations the data's
    classifier calls the target domain's class (``_ab``, ``_ba`` and their mean, the headline).
    Without classes the headline is ``cycle_l1``."""

    def __init__(
        self,
        held_out: tuple[torch.Tensor, torch.Tensor, str],
        num_samples: int,
        device: torch.device,
        extractor: FeatureExtractor | None,
        classes: tuple[int, int] | None,
    ) -> None:
        a, b, self.split = held_out
        self.domains = (a[:num_samples], b[:num_samples])
        self.device = device
        self.extractor = extractor
        self.classes = classes if extractor is not None else None
        self.headline = "transfer_accuracy" if self.classes else "cycle_l1"
        self.maximize = self.classes is not None
        self._fds: list | None = None  # one per direction, real sides at the first evaluation

    def setup(self) -> dict[str, Any]:
        """What the run config records about evaluation."""
        record = {
            "features_reason": f"translations of the held-out {self.split}",
            "unpaired_split": self.split,
            "headline": f"eval/{self.headline}",
        }
        if self.extractor is not None:
            record |= {"features": self.extractor.name, "features_sha256": self.extractor.sha256}
        return record

    def _distances(self) -> list:
        from ganexp.metrics.distances import FrechetDistance

        if self._fds is None:
            self._fds = []
            for target in (self.domains[1], self.domains[0]):  # A -> B is judged against B
                fd = FrechetDistance(self.extractor)
                for start in range(0, len(target), BATCH):
                    fd.update(target[start : start + BATCH].to(self.device), real=True)
                self._fds.append(fd)
        return self._fds

    def __call__(
        self, generator: nn.Module, should_stop: Callable[[], bool] | None = None
    ) -> dict[str, float]:
        """The metrics of ``generator`` (a
        :class:`~ganexp.tasks.unpaired_translation.CycleGenerators`)."""
        fds = self._distances() if self.extractor is not None else [None, None]
        nets = ((generator.g_ab, generator.g_ba), (generator.g_ba, generator.g_ab))
        results, cycle, right = {}, 0.0, []
        try:
            for k, (there, back) in enumerate(nets):
                images, hits = self.domains[k], 0
                for start in range(0, len(images), BATCH):
                    if should_stop is not None and should_stop():
                        raise StopRequested
                    real = images[start : start + BATCH].to(self.device)
                    translated = generate(there, None, to_signed_unit(real))
                    returned = to_uint8(generate(back, None, translated).float())
                    made = to_uint8(translated.float())
                    cycle += float((returned.float() - real.float()).abs().sum()) / 255
                    if fds[k] is not None:
                        fds[k].update(made)
                    if self.classes is not None:
                        predicted = self.extractor.logits(made).argmax(1)
                        hits += int((predicted == self.classes[1 - k]).sum())
                right.append(hits / len(images))
        except StopRequested:
            for fd in fds:
                if fd is not None:
                    fd.reset_fake()
            raise
        pixels = sum(d[0].numel() * len(d) for d in self.domains)
        results["cycle_l1"] = cycle / pixels
        if self.extractor is not None:
            name = "fid" if self.extractor.name == "inception" else f"fd_{self.extractor.name}"
            results[f"{name}_ab"], results[f"{name}_ba"] = (fd.compute() for fd in fds)
        if self.classes is not None:
            results["transfer_accuracy_ab"], results["transfer_accuracy_ba"] = right
            results["transfer_accuracy"] = sum(right) / 2
        return results


def translation_features(cfg: RunConfig, device: torch.device) -> FeatureExtractor | None:
    """The features a translation's held-out images are compared in: the Fashion-MNIST
    classifier's for Fashion-MNIST's edges and domains; for folders, which have no classes to
    train one on, Inception's where ``metrics.features`` takes it (``auto``: on a GPU), else
    none."""
    data, features = cfg.data, cfg.metrics.features
    weights = cfg.metrics.inception_weights
    if data.name in GARMENT_DATA:
        data = garments_config(data)
    elif features == "auto" and not (device.type == "cuda" and inception_available(weights)):
        return None
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):  # draws nothing from the run's stream
        return build_extractor(features, data.name, device, data, weights).to(device)


def paired_evaluator(cfg: RunConfig, device: torch.device) -> PairedEvaluator:
    """The evaluator of ``cfg``'s held-out pairs (task=paired_translation)."""
    extractor = translation_features(cfg, device)
    held_out = held_out_pairs(cfg.data)
    n = cfg.metrics.num_samples
    return PairedEvaluator(held_out, n, cfg.trainer.z_dim, cfg.seed, device, extractor)


def unpaired_evaluator(cfg: RunConfig, device: torch.device) -> UnpairedEvaluator:
    """The evaluator of ``cfg``'s held-out domains (task=unpaired_translation); the transfer
    accuracy where the features are the Fashion-MNIST classifier's."""
    extractor = translation_features(cfg, device)
    classifier = cfg.data.name in GARMENT_DATA and extractor is not None
    classifier = classifier and extractor.name == "classifier"
    classes = tuple(cfg.data.domain_classes) if classifier else None
    domains = held_out_domains(cfg.data)
    return UnpairedEvaluator(domains, cfg.metrics.num_samples, device, extractor, classes)
