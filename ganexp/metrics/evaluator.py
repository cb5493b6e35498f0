"""What the eval hook computes: mode statistics or a sliced Wasserstein distance for toy data,
distances for images.

torchmetrics (with scipy) takes seconds to import, so the distances are imported at the first
evaluation rather than before the first training step.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ganexp.config import RunConfig
from ganexp.data import DataSpec, build_data, mode_centers
from ganexp.data.images import to_uint8
from ganexp.data.toy import mode_std, sample_toy
from ganexp.errors import StopRequested
from ganexp.metrics.coverage import class_histogram, class_kl
from ganexp.metrics.extractors import (
    FeatureExtractor,
    build_extractor,
    classifier_extractor,
    inception_cost,
)
from ganexp.metrics.manifold import ManifoldMetrics
from ganexp.metrics.toy import mode_stats, sliced_wasserstein
from ganexp.models.common import generate

if TYPE_CHECKING:
    from ganexp.metrics.distances import FrechetDistance
    from ganexp.metrics.reference import Reference


REFERENCE_SEED = 1234  # the real data a reference is computed from, the same for every run
BATCH = 500


class ToyEvaluator:
    """Toy data, on fresh samples of fixed noise. A mixture: its mode statistics, headed by
    ``modes_recovered``; data without modes (swissroll): ``sliced_wasserstein`` to as many
    real points. ``<key>_floor`` is the same for as many points drawn from the data itself."""

    def __init__(self, cfg: RunConfig, device: torch.device) -> None:
        self.device = device
        self.centers = mode_centers(cfg.data)
        self.std = mode_std(cfg.data)
        n = cfg.metrics.num_samples
        self.noise = torch.randn(
            n, cfg.trainer.z_dim, generator=torch.Generator().manual_seed(cfg.seed + 1)
        )
        # points drawn from the data itself (never the fixed training set)
        self.real = sample_toy(cfg.data, n, REFERENCE_SEED)
        if self.centers is None:
            self.headline, self.maximize = "sliced_wasserstein", False
            self._floor_points = sample_toy(cfg.data, n, REFERENCE_SEED + 1)  # a second real set
        else:
            self.headline, self.maximize = "modes_recovered", True
            self._floor_points = self.real
        self._floor: dict[str, float] | None = None  # at the first evaluation (scipy's import)

    def _stats(self, points: torch.Tensor) -> dict[str, float]:
        if self.centers is None:
            return {self.headline: sliced_wasserstein(points, self.real)}
        return mode_stats(points, self.centers, self.std)

    def floor(self) -> dict[str, float]:
        """The headline (and ``modes_covered``) of points drawn from the data: what a generator
        can hope for at this sample size."""
        if self._floor is None:
            stats = self._stats(self._floor_points)
            self._floor = {k: v for k, v in stats.items() if k in (self.headline, "modes_covered")}
        return self._floor

    def setup(self) -> dict[str, Any]:
        """What the run config records about evaluation."""
        reason = "toy mode statistics"
        if self.centers is None:
            reason = "sliced Wasserstein distance to real points (the data has no modes)"
        return {
            "features": "points",
            "features_reason": reason,
            "num_fake": len(self.noise),
            "headline": f"eval/{self.headline}",
        }

    def __call__(
        self, generator: nn.Module, should_stop: Callable[[], bool] | None = None
    ) -> dict[str, float]:
        samples = generate(generator, self.noise.to(self.device), None)
        return self._stats(samples) | {f"{k}_floor": v for k, v in self.floor().items()}


class DiracEvaluator:
    """The Dirac-GAN's state (ganexp.models.dirac): ``theta`` (G's one parameter), ``psi`` (D's,
    in the paper's sign) and the headline ``distance``, sqrt(theta^2 + psi^2), to the only
    equilibrium (0, 0). Lower is better; it reads parameters, so it costs nothing."""

    headline = "distance"
    maximize = False

    def __init__(self, critic: nn.Module) -> None:
        self.critic = critic

    def setup(self) -> dict[str, Any]:
        """What the run config records about evaluation."""
        reason = "the Dirac-GAN's parameters and their distance to the equilibrium (0, 0)"
        return {"features": "parameters", "features_reason": reason, "headline": "eval/distance"}

    def __call__(
        self, generator: nn.Module, should_stop: Callable[[], bool] | None = None
    ) -> dict[str, float]:
        theta, psi = generator.theta.item(), self.critic.psi.item()
        return {"theta": theta, "psi": psi, "distance": math.hypot(theta, psi)}


class _Side:
    """One feature extractor's part of an image evaluation: its real reference (cached on disk),
    Frechet distance and real k-NN radii, prepared at the first evaluation, and the keys its
    metrics are logged under (``fid`` with Inception features, otherwise ``fd_<extractor>``;
    ``kid_``, ``precision_``... with the extractor's name)."""

    def __init__(self, extractor: FeatureExtractor) -> None:
        self.extractor = extractor
        self.suffix = extractor.name
        self.distance = "fid" if extractor.name == "inception" else f"fd_{extractor.name}"
        self.reference: Reference | None = None
        self.fd: FrechetDistance | None = None
        self.manifold: ManifoldMetrics | None = None

    def prepare(self, load: Callable[[FeatureExtractor], Reference], shared: _Side | None) -> None:
        """The real side: ``shared``'s (a replica 0's), else ``load``'s; and a fresh distance."""
        from ganexp.metrics.distances import FrechetDistance

        if self.reference is None:
            if shared is not None:
                shared.prepare(load, None)
                self.reference, self.manifold = shared.reference, shared.manifold
            else:
                self.reference = load(self.extractor)
                self.manifold = ManifoldMetrics(self.reference.features)
            self.fd = FrechetDistance(self.extractor)
            self.fd.load_real_state(self.reference.fd_state)

    def results(self, fake: torch.Tensor) -> dict[str, float]:
        """Its metrics of the generated images whose features ``fake`` the distance has seen."""
        from ganexp.metrics.distances import kernel_distance

        assert self.reference is not None and self.fd is not None and self.manifold is not None
        s = self.suffix
        results = {self.distance: self.fd.compute()}
        results[f"kid_{s}"] = kernel_distance(self.reference.features, fake)[0]
        results |= {f"{k}_{s}": v for k, v in self.manifold.compute(fake).items()}
        if self.reference.floor:
            results[f"{self.distance}_floor"] = self.reference.floor["fd"]
            results[f"kid_{s}_floor"] = self.reference.floor["kid"]
        return results


class ImageEvaluator:
    """Frechet distance, IS, KID, precision/recall, density/coverage and class coverage of
    ``metrics.num_samples`` generated images against as many real training images.

    Keys follow DESIGN.md: ``fid`` only with Inception features, otherwise ``fd_<extractor>``,
    and ``is_``, ``kid_``, ``precision_``... with the extractor's name; ``..._floor`` is the same
    distance between two disjoint real sets of the same size. With Inception features on labelled
    data the classifier's metrics come beside the FID: the Inception file has no classifier layer,
    so the Inception Score and class coverage are the classifier's (``is_classifier``). The real
    side is computed once per (data, extractor, N) and cached, so an evaluation costs only the
    generated side.
    """

    maximize = False

    def __init__(
        self,
        cfg: RunConfig,
        spec: DataSpec,
        device: torch.device,
        real_side: ImageEvaluator | None = None,
    ) -> None:
        """``real_side``: an evaluator of the same data, extractor and N (replica 0's) whose
        extractors, references and real k-NN radii this one uses: replicas of one run load and
        compute them once, and hold one copy."""
        self.cfg = cfg
        self.spec = spec
        self.n = cfg.metrics.num_samples
        self.device = device
        self._real_side = real_side
        if real_side is not None:
            extractors = [side.extractor for side in real_side.sides]
        else:  # its layers' initialization draws nothing from the run's random stream
            features, weights = cfg.metrics.features, cfg.metrics.inception_weights
            cuda = [device] if device.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda):
                extractors = [build_extractor(features, cfg.data.name, device, cfg.data, weights)]
                if extractors[0].name == "inception" and spec.num_classes > 0:
                    extractors.append(classifier_extractor(cfg.data, device))
            extractors = [extractor.to(device) for extractor in extractors]
            if extractors[0].name == "inception" and device.type == "cpu":
                print(
                    f"ganexp: note: {inception_cost(self.n)} per evaluation, and "
                    f"{2 * self.n} real ones once per data set and size (cached)",
                    file=sys.stderr,
                )
        self.sides = [_Side(extractor) for extractor in extractors]
        self.extractor = extractors[0]
        self.headline = self.sides[0].distance
        self._labels_by = next((e for e in extractors if e.num_classes > 0), None)
        self.class_coverage = self._labels_by is not None and spec.num_classes > 0
        generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.noise = torch.randn(self.n, cfg.trainer.z_dim, generator=generator)
        self.labels = torch.arange(self.n) % spec.num_classes if cfg.conditional else None
        self._should_stop: Callable[[], bool] = lambda: False

    def setup(self) -> dict[str, Any]:
        """What the run config records about evaluation."""
        record = {
            "features": self.extractor.name,
            "features_reason": self.extractor.choice_reason,
            "features_sha256": self.extractor.sha256,
            "features_resize": self.extractor.input_size,
            "num_real": self.n,
            "num_fake": self.n,
            "reference_split": "train",
            "headline": f"eval/{self.headline}",
            "versions": {
                "torch": str(torch.__version__),  # with the build's local label (e.g. +cu132)
                "torchmetrics": version("torchmetrics"),
                "torchvision": version("torchvision"),
            },
        }
        if len(self.sides) > 1:
            record["features_beside"] = [side.extractor.name for side in self.sides[1:]]
        return record

    def _real_batches(self) -> Iterator[torch.Tensor]:
        """One epoch of real training images in a fixed order, as uint8 batches."""
        source = build_data(self.cfg.data, BATCH, self.device, REFERENCE_SEED)
        for start in range(0, self.spec.size, BATCH):  # a last batch past the epoch repeats images
            self._check_stop()
            yield to_uint8(source.next_batch()[0][: self.spec.size - start])

    def _check_stop(self) -> None:
        if self._should_stop():
            raise StopRequested

    def _load_reference(self, extractor: FeatureExtractor) -> Reference:
        from ganexp.metrics.reference import load_reference

        return load_reference(
            extractor,
            self._real_batches,
            dataset=self._dataset_id(),
            split="train",
            num_samples=self.n,
            image_size=self.cfg.data.image_size,
            cache_dir=self.cfg.data.cache_dir,
        )

    def _prepare(self) -> None:
        shared = self._real_side.sides if self._real_side is not None else [None] * len(self.sides)
        for side, twin in zip(self.sides, shared, strict=True):
            side.prepare(self._load_reference, twin)

    def _dataset_id(self) -> str:
        """Names the real images: a folder's path, and the subset when data.limit caps it."""
        data = self.cfg.data
        name = str(Path(data.root).resolve()) if data.name == "image_folder" else data.name
        return name if data.limit is None else f"{name}-limit{data.limit}"

    def __call__(
        self, generator: nn.Module, should_stop: Callable[[], bool] | None = None
    ) -> dict[str, float]:
        """The metrics of ``generator``; ``should_stop`` is asked between batches, and a yes
        abandons the evaluation (StopRequested)."""
        self._should_stop = should_stop or (lambda: False)
        try:
            return self._evaluate(generator)
        except StopRequested:
            for side in self.sides:
                if side.fd is not None:
                    side.fd.reset_fake()
            raise

    def _evaluate(self, generator: nn.Module) -> dict[str, float]:
        return self.score(self._generated(generator))

    def _generated(self, generator: nn.Module) -> Iterator[torch.Tensor]:
        """The fixed noise's images, as uint8 batches."""
        for start in range(0, self.n, BATCH):
            self._check_stop()
            z = self.noise[start : start + BATCH].to(self.device)
            labels = None if self.labels is None else self.labels[start : start + BATCH]
            yield to_uint8(generate(generator, z, None if labels is None else labels.to(z.device)))

    def score(self, batches: Iterable[torch.Tensor]) -> dict[str, float]:
        """The metrics of ``metrics.num_samples`` images given as uint8 batches (a generator's,
        or a folder's: ``ganexp-eval fake=DIR``) against the real side."""
        from ganexp.metrics.distances import InceptionScore

        self._prepare()
        by = self._labels_by
        inception_score = InceptionScore(by) if by is not None else None
        features: list[list[torch.Tensor]] = [[] for _ in self.sides]
        predictions = []
        for images in batches:
            images = images.to(self.device)
            for side, kept in zip(self.sides, features, strict=True):
                kept.append(side.fd.update(images).cpu())
            if inception_score is not None:
                inception_score.update(images)
            if self.class_coverage:
                predictions.append(by.logits(images).argmax(1).cpu())
        results: dict[str, float] = {}
        for side, kept in zip(self.sides, features, strict=True):
            results |= side.results(torch.cat(kept))
        if inception_score is not None:
            results[f"is_{by.name}"] = inception_score.compute()[0]
        if self.class_coverage:
            histogram = class_histogram(torch.cat(predictions), self.spec.num_classes)
            uniform = torch.full_like(histogram, 1 / self.spec.num_classes)
            results["class_kl"] = class_kl(histogram, uniform)
            results["classes_covered"] = float((histogram > 0).sum())
        return results
