"""The MNIST family (fashion_mnist, mnist): finding the idx files and loading them.

Lookup order: ``data.root``, each folder of ``data.search``, what an earlier run staged or
downloaded into ``<cache_dir>/data``, then torchvision's download there if ``data.download``.
A folder may hold the idx files (``.gz`` or not) directly or in torchvision's own layout
``<folder>/<ClassName>/raw``. Uncompressed files in that layout are read in place; anything else
is staged (decompressed) into ``<cache_dir>/data/<ClassName>/raw`` for torchvision to read.
"""

from __future__ import annotations

import os

import torch
from torchvision import datasets

from ganexp.config import DataConfig
from ganexp.data.files import (
    IMAGES_MAGIC,
    LABELS_MAGIC,
    cache_root,
    data_size,
    local_places,
    read_dims,
    stage,
    try_download,
)
from ganexp.data.spec import Found
from ganexp.errors import ConfigError

IMAGES = "train-images-idx3-ubyte"
LABELS = "train-labels-idx1-ubyte"
_HOLDING = f"DIR holding {IMAGES}.gz and {LABELS}.gz"


class _TrainSplitOnly:
    """torchvision insists on all four idx files; only the train split's two are read here."""

    raw_folder: str

    def _check_exists(self) -> bool:
        return all(os.path.isfile(os.path.join(self.raw_folder, name)) for name in (IMAGES, LABELS))


# The class names must stay torchvision's: they name the folder under root it reads from.
class FashionMNIST(_TrainSplitOnly, datasets.FashionMNIST):
    pass


class MNIST(_TrainSplitOnly, datasets.MNIST):
    pass


_FAMILY: dict[str, tuple[type[datasets.MNIST], str, str]] = {
    "fashion_mnist": (
        FashionMNIST,
        "Fashion-MNIST",
        "install the Debian package (apt-get install dataset-fashion-mnist) "
        f"or set data.root={_HOLDING}",
    ),
    "mnist": (
        MNIST,
        "MNIST",
        f"set data.root={_HOLDING}, or data.download=true on a machine with network access",
    ),
}


def locate(cfg: DataConfig) -> Found:
    """Find the train split's files and read their headers; ConfigError if there are none."""
    cls, title, remedies = _FAMILY[cfg.name]
    cache = cache_root(cfg)
    looked = []
    for key, place in [*local_places(cfg), ("data.cache_dir", cache)]:
        for folder in (place, os.path.join(place, cls.__name__, "raw")):
            looked.append(folder)
            files = _idx_files(folder)
            if files:
                return _found(cfg, cls, files, key)
    failure = ""
    if cfg.download:
        reason = try_download(lambda: cls(cache, train=True, download=True))
        files = _idx_files(os.path.join(cache, cls.__name__, "raw"))
        if reason is None and files:
            return _found(cfg, cls, files, "data.cache_dir")
        failure = f" (download into {cache} failed: {reason})"
    raise ConfigError(
        "data.root",
        cfg.root,
        f"no {title} files found in {', '.join(looked)}{failure}; {remedies}",
    )


def _idx_files(folder: str) -> tuple[str, str] | None:
    """Paths of the images and labels files in ``folder``, uncompressed preferred."""
    paths = []
    for name in (IMAGES, LABELS):
        path = os.path.join(folder, name)
        candidates = [c for c in (path, path + ".gz") if os.path.isfile(c)]
        if not candidates:
            return None
        paths.append(candidates[0])
    return paths[0], paths[1]


def _found(cfg: DataConfig, cls: type[datasets.MNIST], files: tuple[str, str], key: str) -> Found:
    images, labels = files
    image_dims = read_dims(images, IMAGES_MAGIC, key)
    label_dims = read_dims(labels, LABELS_MAGIC, key)
    if image_dims[0] != label_dims[0]:
        raise ConfigError(key, labels, f"holds {label_dims[0]} labels for {image_dims[0]} images")
    sizes = (data_size(image_dims), data_size(label_dims))
    raw = os.path.dirname(images)
    parent, name = os.path.split(raw)
    in_place = (os.path.basename(parent), name) == (cls.__name__, "raw") and not any(
        path.endswith(".gz") for path in files
    )
    if in_place:
        for path, size in zip(files, sizes, strict=True):
            if os.path.getsize(path) != size:
                raise ConfigError(key, path, f"truncated or corrupt: expected {size} bytes")

    def load() -> datasets.MNIST:
        root = os.path.dirname(parent) if in_place else cache_root(cfg)
        if not in_place:
            staged = os.path.join(root, cls.__name__, "raw")
            for path, name, size in zip(files, (IMAGES, LABELS), sizes, strict=True):
                stage(path, os.path.join(staged, name), size, key)
        try:
            return cls(root, train=True)
        except (AssertionError, TypeError, ValueError, RuntimeError, OSError) as err:
            raise ConfigError(key, images, f"cannot read as idx data: {err}") from None

    return Found(
        channels=1,
        class_names=tuple(cls.classes),
        count=image_dims[0],
        load=load,
        to_tensors=_to_tensors,
    )


def _to_tensors(dataset: datasets.MNIST) -> tuple[torch.Tensor, torch.Tensor]:
    return dataset.data.unsqueeze(1), dataset.targets
