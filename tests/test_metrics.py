"""ganexp.metrics: distances, manifold metrics, class coverage, toy modes, the reference cache.

The extractor here is a small real one: a fixed random projection of the pixels, with the top-left
pixel as a confident class prediction. FD is checked against an independent float64 scipy sqrtm.
"""

from __future__ import annotations

import gc
import math
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from helpers import torch_threads
from torch import Tensor, nn

from ganexp.config import DataConfig
from ganexp.data import mode_centers
from ganexp.errors import ConfigError
from ganexp.metrics.coverage import class_histogram, class_kl
from ganexp.metrics.distances import FrechetDistance, InceptionScore, kernel_distance
from ganexp.metrics.manifold import ManifoldMetrics, knn_radii
from ganexp.metrics.reference import load_reference, reference_key
from ganexp.metrics.toy import mode_stats


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """The tensors here are tiny: extra threads only add OpenMP synchronisation, which on a busy
    2-core machine costs seconds per call (KID's 300 kernels took 17 s instead of 0.1 s)."""
    with torch_threads(1):
        yield


class Projection(nn.Module):
    """Features: a fixed random projection of the flattened pixels scaled to [0, 1].
    Logits: class (top-left pixel mod num_classes), with a margin of 20 (p > 0.99999)."""

    name = "projection"

    def __init__(self, sha256: str = "0" * 64, num_features: int = 16, size: int = 8) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        weight = torch.randn(size * size, num_features, generator=g) / size
        self.register_buffer("weight", weight)
        self.num_features, self.num_classes, self.input_size = num_features, 10, size
        self.sha256 = sha256

    def forward(self, images: Tensor) -> Tensor:
        return (images.flatten(1).float() / 255) @ self.weight

    def logits(self, images: Tensor) -> Tensor:
        classes = images[:, 0, 0, 0].long() % self.num_classes
        return 20.0 * F.one_hot(classes, self.num_classes).float()


class Features(nn.Module):
    """An extractor whose inputs are already the features."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


def images(n: int, seed: int, low: int = 0, high: int = 256) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (n, 1, 8, 8), generator=g, dtype=torch.uint8)


def fd(real: Tensor, fake: Tensor) -> float:
    metric = FrechetDistance(Features(real.shape[1]))
    metric.update(real, real=True)
    metric.update(fake)
    return metric.compute()


def scipy_fd(real: Tensor, fake: Tensor) -> float:
    x, y = real.double().numpy(), fake.double().numpy()
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def exact_normal(n: int, d: int, seed: int) -> Tensor:
    """float64 samples whose sample mean is 0 and sample covariance (over n - 1) is I."""
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = x - x.mean(0)
    chol = torch.linalg.cholesky(x.T @ x / (n - 1))
    return torch.linalg.solve_triangular(chol, x.T, upper=False).T


def test_frechet_distance_matches_scipy_sqrtm() -> None:
    g = torch.Generator().manual_seed(1)
    real = torch.randn(3000, 24, generator=g) @ torch.randn(24, 24, generator=g)
    fake = 0.7 * torch.randn(2000, 24, generator=g) @ torch.randn(24, 24, generator=g) + 0.5
    assert fd(real, fake) == pytest.approx(scipy_fd(real, fake), rel=1e-6)


def test_frechet_distance_closed_forms() -> None:
    x = exact_normal(4000, 8, seed=2)
    mu = torch.arange(8, dtype=torch.float64) / 4
    assert fd(x, x + mu) == pytest.approx(float(mu.square().sum()), rel=1e-9)
    assert fd(x, 0.5 * x) == pytest.approx(8 * (1 - 0.5) ** 2, rel=1e-9)
    assert abs(fd(x, x)) < 1e-9


def test_frechet_distance_of_a_set_to_itself_is_zero_and_same_distribution_shrinks_with_n() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2000, 16, generator=g)
    assert abs(fd(x, x)) < 1e-4
    values = [
        fd(torch.randn(n, 16, generator=g), torch.randn(n, 16, generator=g))
        for n in (100, 1000, 10000)
    ]
    assert values[0] > values[1] > values[2] > 0
    assert values[2] < 0.1


def test_cached_real_state_gives_the_same_distance_and_only_the_generated_side_resets() -> None:
    extractor = Projection()
    first = FrechetDistance(extractor)
    features = first.update(images(500, seed=1), real=True)
    assert features.shape == (500, 16)
    first.update(images(400, seed=2, high=200))
    expected = first.compute()
    second = FrechetDistance(extractor)
    second.load_real_state(first.real_state())
    second.update(images(400, seed=2, high=200))
    assert second.compute() == pytest.approx(expected, rel=1e-6)
    first.update(images(400, seed=2, high=200))  # the real side survived compute()'s reset
    assert first.compute() == pytest.approx(expected, rel=1e-6)


def _live_tensors() -> tuple[int, int]:
    gc.collect()
    tensors = [o for o in gc.get_objects() if issubclass(type(o), Tensor)]
    return len(tensors), sum(t.untyped_storage().nbytes() for t in tensors)


def test_repeated_evaluation_keeps_memory_flat() -> None:
    extractor = Projection(num_features=64)
    metric = FrechetDistance(extractor)
    metric.update(images(256, seed=0), real=True)
    batches = [images(128, seed=s, high=200) for s in range(4)]

    def evaluate() -> float:
        for batch in batches:
            metric.update(batch)
        return metric.compute()

    for _ in range(3):  # warm-up: lazily built caches
        evaluate()
    tracemalloc.start()
    before, before_bytes = _live_tensors()
    python_before = tracemalloc.get_traced_memory()[0]
    values = [evaluate() for _ in range(20)]
    after, after_bytes = _live_tensors()
    python_growth = tracemalloc.get_traced_memory()[0] - python_before
    tracemalloc.stop()
    assert len(set(values)) == 1
    assert (after, after_bytes) == (before, before_bytes)
    assert python_growth < 64 * 1024


def test_knn_radii_exclude_the_point_itself() -> None:
    points = torch.tensor([[0.0], [1.0], [3.0], [6.0]])
    first, second = knn_radii(points, (1, 2), block_size=3)
    assert first.tolist() == [1.0, 1.0, 2.0, 3.0]
    assert second.tolist() == [3.0, 2.0, 3.0, 5.0]


def test_density_and_coverage_on_one_distribution_and_blocks_do_not_matter() -> None:
    g = torch.Generator().manual_seed(4)
    real, fake = torch.randn(2000, 16, generator=g), torch.randn(2000, 16, generator=g)
    result = ManifoldMetrics(real).compute(fake)
    assert result["density"] == pytest.approx(1.0, abs=0.1)
    assert result["coverage"] == pytest.approx(1 - 2**-5, abs=0.02)
    assert result["precision"] > 0.6 and result["recall"] > 0.6
    assert ManifoldMetrics(real, block_size=333).compute(fake) == result


def test_manifold_metrics_are_zero_on_disjoint_distributions() -> None:
    g = torch.Generator().manual_seed(5)
    real, fake = torch.randn(500, 16, generator=g), torch.randn(500, 16, generator=g) + 100
    result = ManifoldMetrics(real).compute(fake)
    assert result == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


@pytest.fixture
def ring8(tmp_path: Path) -> Tensor:
    cfg = DataConfig(
        name="ring8", modes=8, radius=1.0, std=0.01, num_classes=0, cache_dir=str(tmp_path)
    )
    return mode_centers(cfg)


def test_true_toy_samples_cover_every_mode_with_the_gaussian_high_quality_fraction(
    ring8: Tensor,
) -> None:
    g = torch.Generator().manual_seed(6)
    modes = torch.randint(8, (20000,), generator=g)
    samples = ring8[modes] + 0.01 * torch.randn(20000, 2, generator=g)
    stats = mode_stats(samples, ring8, std=0.01)
    assert stats["modes_covered"] == 8
    assert stats["high_quality"] == pytest.approx(1 - math.exp(-4.5), abs=0.004)
    assert stats["reverse_kl"] < 0.005


def test_a_collapsed_toy_generator_covers_one_mode(ring8: Tensor) -> None:
    samples = ring8[3] + 0.01 * torch.randn(1000, 2, generator=torch.Generator().manual_seed(7))
    stats = mode_stats(samples, ring8, std=0.01)
    assert stats["modes_covered"] == 1
    assert stats["reverse_kl"] == pytest.approx(math.log(8))
    far = mode_stats(torch.full((10, 2), 5.0), ring8, std=0.01)
    assert far == {
        "modes_covered": 0.0,
        "modes_recovered": 0.0,
        "high_quality": 0.0,
        "reverse_kl": math.log(8),
    }


def test_class_coverage_from_the_classifier_predictions() -> None:
    classifier = Projection()
    uniform = torch.arange(1000).remainder(10).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 8, 8)
    data = torch.full((10,), 0.1)
    predicted = class_histogram(classifier.logits(uniform).argmax(1), 10)
    assert predicted.tolist() == pytest.approx([0.1] * 10)
    assert class_kl(predicted, data) == pytest.approx(0.0, abs=1e-12)
    collapsed = class_histogram(torch.full((1000,), 3), 10)
    assert class_kl(collapsed, data) == pytest.approx(math.log(10), abs=1e-5)
    assert math.isfinite(class_kl(data, collapsed))  # empty data classes: large but finite


class Stream:
    """A counted callable yielding distinct real batches (up to ``total`` images)."""

    def __init__(self, total: int = 1000) -> None:
        self.calls, self.total = 0, total

    def __call__(self) -> Iterator[Tensor]:
        self.calls += 1
        pixels = images(self.total, seed=11)
        yield from pixels.split(96)


def test_reference_is_cached_keyed_and_carries_a_floor(tmp_path: Path) -> None:
    stream, extractor = Stream(), Projection()

    def load(n: int, net: nn.Module = extractor) -> object:
        return load_reference(
            net,
            stream,
            dataset="toy",
            split="train",
            num_samples=n,
            image_size=8,
            cache_dir=tmp_path,
        )

    first = load(300)
    assert stream.calls == 1
    assert first.features.shape == (300, 16) and first.features.dtype == torch.float32
    assert int(first.fd_state["real_features_num_samples"]) == 300
    assert set(first.floor) == {"fd", "kid"} and first.floor["fd"] >= 0
    again = load(300)
    assert stream.calls == 1
    assert again.floor == first.floor
    assert torch.equal(again.features, first.features)
    assert len(list((tmp_path / "reference").iterdir())) == 1

    load(400)
    assert stream.calls == 2
    load(300, Projection(sha256="1" * 64))
    assert stream.calls == 3
    keys = {
        reference_key("toy", "train", "projection", sha, n, 8)
        for sha, n in [("0" * 64, 300), ("0" * 64, 400), ("1" * 64, 300)]
    }
    assert len(keys) == 3
    assert sorted(p.stem for p in (tmp_path / "reference").iterdir()) == sorted(keys)


def test_reference_state_gives_the_distance_of_a_fresh_computation(tmp_path: Path) -> None:
    extractor = Projection()
    reference = load_reference(
        extractor,
        Stream(),
        dataset="toy",
        split="train",
        num_samples=300,
        image_size=8,
        cache_dir=tmp_path,
    )
    fresh = FrechetDistance(extractor)
    fresh.update(images(1000, seed=11)[:300], real=True)
    cached = FrechetDistance(extractor)
    cached.load_real_state(reference.fd_state)
    for metric in (fresh, cached):
        metric.update(images(200, seed=12, high=128))
    assert cached.compute() == pytest.approx(fresh.compute(), rel=1e-9)


def test_reference_without_enough_real_images(tmp_path: Path) -> None:
    def load(n: int) -> object:
        return load_reference(
            Projection(),
            Stream(total=500),
            dataset="toy",
            split="test",
            num_samples=n,
            image_size=8,
            cache_dir=tmp_path,
        )

    assert load(300).floor == {}
    with pytest.raises(ConfigError, match=r"metrics\.num_samples"):
        load(600)


def test_kid_runs_through_torchmetrics_on_extractor_features() -> None:
    extractor = Projection()
    real, same, other = (
        extractor(images(300, seed=s, high=h)) for s, h in ((1, 256), (2, 256), (3, 64))
    )
    same_mean, same_std = kernel_distance(real, same)
    other_mean, _ = kernel_distance(real, other)
    assert all(math.isfinite(v) for v in (same_mean, same_std, other_mean))
    assert abs(same_mean) < 0.01 < other_mean
    assert kernel_distance(real, other) == (other_mean, _)  # seeded subsets


def test_inception_score_of_uniformly_confident_predictions_is_the_class_count() -> None:
    score = InceptionScore(Projection())
    balanced = (
        torch.arange(10000).remainder(10).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 8, 8)
    )
    for batch in balanced.split(1000):
        score.update(batch)
    mean, std = score.compute()
    assert mean == pytest.approx(10, abs=0.1) and math.isfinite(std)
    score.update(torch.zeros(100, 1, 8, 8, dtype=torch.uint8))  # one class only, after the reset
    assert score.compute()[0] == pytest.approx(1, abs=1e-3)
