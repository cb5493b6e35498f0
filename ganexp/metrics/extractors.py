"""Feature extractors for Frechet distance, KID, precision/recall and the Inception Score.

Two kinds, behind one interface (:class:`FeatureExtractor`: uint8 images in, float32 features or
logits out), usable as the ``feature=`` module of torchmetrics' FrechetInceptionDistance,
KernelInceptionDistance and (through :class:`ganexp.metrics.distances.Logits`) InceptionScore:

- ``inception``: the FID Inception v3 of torchmetrics / torch-fidelity (2048 pool features, 1008
  logits), the standard for comparing with published numbers. Its weights come from
  ``metrics.inception_weights``, else torch hub's cache, else one short download attempt; when
  none works the error says which file to fetch and where to put it. Slow without a GPU.
- ``classifier``: a small CNN trained on the data set's own labels
  (:mod:`ganexp.metrics.classifier`): meaningful on 28x28 grayscale data and fast on a CPU.
  Fashion-MNIST's ships with ganexp (checked against the sha256 in its JSON record); other labelled
  data sets train theirs on first use and cache it under ``<data.cache_dir>/classifiers``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
from typing import Any

import torch
from torch import nn

from ganexp.config import DataConfig
from ganexp.data.files import try_download
from ganexp.errors import ConfigError
from ganexp.metrics.classifier import ARCH, Classifier, check_uint8, record_path, sha256_file

FEATURES = ("auto", "inception", "classifier")
ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
SHIPPED = ("fashion_mnist",)  # data sets whose classifier is in ASSETS

# The weights torch-fidelity (and so torchmetrics) downloads: TF's 2015-12-05 Inception, as used
# by the original FID code, converted to PyTorch.
INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
    "weights-inception-2015-12-05-6726825d.pth"
)
INCEPTION_SIZE = 299
INCEPTION_FEATURES = 2048
INCEPTION_CLASSES = 1008


class FeatureExtractor(nn.Module):
    """uint8 images ``(N, C, H, W)``, any size, 1 or 3 channels -> float32 features.

    ``name`` is "inception" or "classifier"; ``num_features`` the size of :meth:`forward`'s
    output (torchmetrics reads it instead of probing); ``num_classes`` that of :meth:`logits`;
    ``input_size`` the side images are resized to; ``sha256`` that of the weights file;
    ``choice_reason`` one line on why :func:`build_extractor` chose this extractor.
    It stays in eval mode and computes no gradients.
    """

    def __init__(
        self,
        name: str,
        net: nn.Module,
        num_features: int,
        num_classes: int,
        input_size: int,
        sha256: str,
        choice_reason: str = "",
    ) -> None:
        super().__init__()
        self.name = name
        self.net = net
        self.num_features = num_features
        self.num_classes = num_classes
        self.input_size = input_size
        self.sha256 = sha256
        self.choice_reason = choice_reason
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FeatureExtractor:
        """Always eval mode: a metric's ``.train()`` must not switch on batch-norm updates."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.features(images).float()

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.logits(images).float()


class _Inception(nn.Module):
    """torchmetrics' FID Inception: pool features, and logits as its Inception Score uses them
    (``logits_unbiased``: the final layer without its bias)."""

    def __init__(self, weights: str) -> None:
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        try:
            self.net = NoTrainInceptionV3(
                name="inception-v3-compat",
                features_list=[str(INCEPTION_FEATURES)],
                feature_extractor_weights_path=weights,
            )
        except (RuntimeError, OSError, KeyError, ValueError, pickle.UnpicklingError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(
                "metrics.inception_weights", weights, f"not the FID Inception weights: {first}"
            ) from None

    def features(self, images: torch.Tensor) -> torch.Tensor:
        check_uint8(images)
        return self.net(images if images.shape[1] == 3 else images.expand(-1, 3, -1, -1))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images) @ self.net.fc.weight.T


def inception_cache_file() -> str:
    """Where torch hub (and so torch-fidelity) keeps the weights: under ``$TORCH_HOME/hub``."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(INCEPTION_URL))


def _fetch(url: str, path: str) -> None:
    torch.hub.download_url_to_file(url, path, progress=False)


def inception_weights_at_hand(weights_path: str | None) -> str | None:
    """``metrics.inception_weights`` (which must exist), else the hub cache file, else None."""
    if weights_path:
        path = os.path.expanduser(weights_path)
        if not os.path.isfile(path):
            raise ConfigError(
                "metrics.inception_weights", weights_path, "no such file; " + _howto()
            )
        return path
    cached = inception_cache_file()
    return cached if os.path.isfile(cached) else None


def _howto() -> str:
    return (
        f"download {INCEPTION_URL} and set metrics.inception_weights=PATH to it, or put it at "
        f"{inception_cache_file()} (torch hub's cache, which torch-fidelity reads), "
        "or use metrics.features=classifier"
    )


def inception_weights(weights_path: str | None) -> str:
    """The Inception weights file, fetched into torch hub's cache by one short attempt if needed."""
    path = inception_weights_at_hand(weights_path)
    if path is not None:
        return path
    cached = inception_cache_file()
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    reason = try_download(lambda: _fetch(INCEPTION_URL, cached))
    if reason is None and os.path.isfile(cached):
        return cached
    raise ConfigError(
        "metrics.inception_weights",
        weights_path,
        f"the FID Inception weights are not at hand (download failed: {reason}); " + _howto(),
    )


def inception_extractor(weights_path: str | None, device: torch.device) -> FeatureExtractor:
    """The FID Inception v3 (torch-fidelity's, through torchmetrics) on ``device``."""
    weights = inception_weights(weights_path)
    if importlib.util.find_spec("torch_fidelity") is None:
        raise ConfigError(
            "metrics.features",
            "inception",
            "needs the torch-fidelity package: pip install torch-fidelity (or torchmetrics[image])",
        )
    return FeatureExtractor(
        "inception",
        _Inception(weights).to(device),
        INCEPTION_FEATURES,
        INCEPTION_CLASSES,
        INCEPTION_SIZE,
        sha256_file(weights),
    )


def load_classifier(path: str, device: torch.device) -> tuple[Classifier, dict[str, Any]]:
    """A classifier checkpoint and its JSON record, after checking the file's sha256."""
    record_file = record_path(path)
    fix = "reinstall ganexp" if path.startswith(ASSETS) else "delete it and its .json to retrain"
    try:
        with open(record_file) as f:
            record = json.load(f)
        actual = sha256_file(path)
    except (OSError, ValueError) as err:
        raise ConfigError("metrics.features", "classifier", f"cannot read {err}; {fix}") from None
    if actual != record.get("sha256"):
        raise ConfigError(
            "metrics.features",
            "classifier",
            f"{path} has sha256 {actual}, but {record_file} records {record.get('sha256')}: "
            f"the file is corrupt or was replaced; {fix}",
        )
    if record.get("arch") != ARCH:
        raise ConfigError(
            "metrics.features",
            "classifier",
            f"{path} holds network {record.get('arch')!r}, this ganexp builds {ARCH!r}; {fix}",
        )
    model = Classifier(record["channels"], record["num_classes"])
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.to(device).eval(), record


def classifier_extractor(data_cfg: DataConfig, device: torch.device) -> FeatureExtractor:
    """The shipped classifier of ``data_cfg.name``, or one trained on first use and cached."""
    if data_cfg.name in SHIPPED:
        path = os.path.join(ASSETS, f"classifier_{data_cfg.name}.pt")
    else:
        from ganexp.metrics.train_classifier import cache_path, train_classifier

        path = cache_path(data_cfg)
        if not (os.path.isfile(path) and os.path.isfile(record_path(path))):
            print(f"ganexp: training a {data_cfg.name} feature classifier once, cached as {path}")
            train_classifier(data_cfg, path, device=device, command="first use by a run")
    model, record = load_classifier(path, device)
    return FeatureExtractor(
        "classifier",
        model,
        model.num_features,
        model.num_classes,
        model.input_size,
        record["sha256"],
    )


def build_extractor(
    features: str,
    dataset: str,
    device: torch.device,
    data_cfg: DataConfig,
    inception_weights: str | None,
) -> FeatureExtractor:
    """The extractor ``metrics.features`` asks for; ``choice_reason`` says why, in one line.

    ``auto`` takes Inception when its weights are at hand (no download) and ``device`` is a GPU,
    else the classifier of ``dataset`` (``data.name``; ``data_cfg`` finds and shapes its data).
    """
    if features not in FEATURES:
        raise ConfigError("metrics.features", features, "allowed: " + ", ".join(FEATURES))
    if data_cfg.name != dataset:
        raise ValueError(f"dataset {dataset!r} is not data_cfg.name {data_cfg.name!r}")
    if features == "auto":
        weights = inception_weights_at_hand(inception_weights)
        if weights is not None and device.type == "cuda":
            features, reason = "inception", f"auto: Inception on the GPU, weights {weights}"
        else:
            why = "no GPU" if device.type != "cuda" else "no Inception weights at hand"
            features, reason = "classifier", f"auto: the {dataset} classifier ({why})"
    else:
        reason = f"metrics.features={features}"
    if features == "inception":
        extractor = inception_extractor(inception_weights, device)
    else:
        extractor = classifier_extractor(data_cfg, device)
    extractor.choice_reason = reason
    return extractor
