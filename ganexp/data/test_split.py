"""The held-out split of a labelled data set (its test split, else training examples), on which
a classifier's accuracy is measured: the shipped classifiers', the semi-supervised critic's and
the translation tasks' held-out images."""

from __future__ import annotations

import os

import torch
from torchvision import datasets

from ganexp.config import DataConfig
from ganexp.data import build_data, cifar, data_spec, mnist
from ganexp.data.files import (
    IMAGES_MAGIC,
    LABELS_MAGIC,
    cache_root,
    data_size,
    local_places,
    read_dims,
    stage,
)
from ganexp.data.images import fit_all, to_uint8

_EVAL_EXAMPLES = 10_000  # training examples scored when a data set has no test split
_T10K = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class _TestSplitOnly:
    """torchvision insists on all four idx files; only the test split's two are read here."""

    raw_folder: str

    def _check_exists(self) -> bool:
        return all(os.path.isfile(os.path.join(self.raw_folder, name)) for name in _T10K)


# The class names must stay torchvision's: they name the folder under root it reads from.
class FashionMNIST(_TestSplitOnly, datasets.FashionMNIST):
    pass


class MNIST(_TestSplitOnly, datasets.MNIST):
    pass


def _mnist_test_split(cfg: DataConfig) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The t10k files, looked up where :func:`ganexp.data.mnist.locate` finds the train split."""
    cls = {"fashion_mnist": FashionMNIST, "mnist": MNIST}[cfg.name]
    found = mnist.locate(cfg)
    cache = cache_root(cfg)
    for key, place in [*local_places(cfg), ("data.cache_dir", cache)]:
        for folder in (place, os.path.join(place, cls.__name__, "raw")):
            files = [_existing(os.path.join(folder, name)) for name in _T10K]
            if None in files:
                continue
            staged = os.path.join(cache, cls.__name__, "raw")
            for path, name, magic in zip(files, _T10K, (IMAGES_MAGIC, LABELS_MAGIC), strict=True):
                size = data_size(read_dims(path, magic, key))
                stage(path, os.path.join(staged, name), size, key)
            return found.to_tensors(cls(cache, train=False))
    return None


def _existing(path: str) -> str | None:
    return next((p for p in (path, path + ".gz") if os.path.isfile(p)), None)


def _cifar_test_split(cfg: DataConfig) -> tuple[torch.Tensor, torch.Tensor] | None:
    """test_batch beside the train batches :func:`ganexp.data.cifar.locate` found."""
    found = cifar.locate(cfg)
    root = found.load().root
    try:
        test = cifar.CIFAR10(root, verify=cfg.verify_checksums, train=False)
    except (RuntimeError, OSError):  # missing, or not the official file
        return None
    return found.to_tensors(test)


_TEST_SPLITS = {
    "fashion_mnist": _mnist_test_split,
    "mnist": _mnist_test_split,
    "cifar10": _cifar_test_split,
}


def eval_split(cfg: DataConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """uint8 images fitted to ``data.image_size``, labels, and what they are, for the accuracy."""
    split = _TEST_SPLITS[cfg.name](cfg) if cfg.name in _TEST_SPLITS else None
    if split is not None:
        images, labels = split
        return fit_all(images, cfg.image_size), labels, f"test split ({len(labels)} images)"
    count = min(_EVAL_EXAMPLES, data_spec(cfg).size or 0)
    x, y = build_data(cfg, count, torch.device("cpu"), seed).next_batch()
    assert y is not None
    return to_uint8(x), y.cpu(), f"training examples ({count}; no test split found)"
