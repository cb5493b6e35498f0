"""CIFAR-10: finding the python-pickle batches and loading them with torchvision.

Lookup order: ``data.root``, each folder of ``data.search``, ``<cache_dir>/data``, then
torchvision's download there if ``data.download``. A folder counts when it holds
``cifar-10-batches-py/`` (what the official archive extracts to) or is that folder itself.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import torch
from torchvision import datasets

from ganexp.config import DataConfig
from ganexp.data.files import cache_root, local_places, try_download
from ganexp.data.spec import Found
from ganexp.errors import ConfigError

BASE = datasets.CIFAR10.base_folder
_NEEDED = [name for name, _ in datasets.CIFAR10.train_list] + [datasets.CIFAR10.meta["filename"]]
_REMEDIES = (
    f"set data.root=DIR holding {BASE}/ (the extracted cifar-10-python.tar.gz), "
    "or data.download=true on a machine with network access"
)


class CIFAR10(datasets.CIFAR10):
    """torchvision's CIFAR-10, whose md5 check can be turned off.

    torchvision compares every batch file and batches.meta with the md5 of the official archive.
    Copies re-pickled elsewhere (and the small ones the tests write in the same format) cannot
    match, so with ``verify=False`` only the presence of the files the train split reads is checked.
    """

    def __init__(self, root: str, verify: bool, **kwargs: Any) -> None:
        self.verify = verify
        if not verify:
            # check_integrity(path, md5=None) checks only that the file exists
            self.meta = {**datasets.CIFAR10.meta, "md5": None}
        super().__init__(root, **kwargs)

    def _check_integrity(self) -> bool:
        if self.verify:
            return super()._check_integrity()
        return all(os.path.isfile(os.path.join(self.root, BASE, name)) for name in _NEEDED)


def locate(cfg: DataConfig) -> Found:
    """Find and load the train batches (a fast unpickle); ConfigError if there are none."""
    cache = cache_root(cfg)
    looked = []
    for key, place in [*local_places(cfg), ("data.cache_dir", cache)]:
        looked.append(place)
        root = _root_of(place)
        if root is not None:
            return _found(_open(cfg, root, key))
    failure = ""
    if cfg.download:
        reason = try_download(
            lambda: CIFAR10(cache, verify=cfg.verify_checksums, train=True, download=True)
        )
        if reason is None:
            return _found(_open(cfg, cache, "data.cache_dir"))
        failure = f" (download into {cache} failed: {reason})"
    where = ", ".join(looked)
    message = f"no CIFAR-10 files found in {where}{failure}; {_REMEDIES}"
    raise ConfigError("data.root", cfg.root, message)


def _root_of(place: str) -> str | None:
    """The folder torchvision takes as root (the parent of cifar-10-batches-py), if any."""
    place = os.path.normpath(place)
    roots = [place, os.path.dirname(place)] if os.path.basename(place) == BASE else [place]
    for root in roots:
        if all(os.path.isfile(os.path.join(root, BASE, name)) for name in _NEEDED):
            return root
    return None


def _open(cfg: DataConfig, root: str, key: str) -> CIFAR10:
    folder = os.path.join(root, BASE)
    try:
        return CIFAR10(root, verify=cfg.verify_checksums, train=True)
    except RuntimeError:  # torchvision's "not found or corrupted": here, an md5 mismatch
        raise ConfigError(
            key,
            folder,
            "files do not match the md5 checksums of the official CIFAR-10 archive "
            "(set data.verify_checksums=false to accept copies re-pickled elsewhere)",
        ) from None
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, OSError) as err:
        path = _unreadable(folder)
        raise ConfigError(key, path, f"cannot read as a CIFAR-10 batch: {err!r}") from None


def _unreadable(folder: str) -> str:
    """The first batch file that does not unpickle to CIFAR's dict (else the folder)."""
    for name in _NEEDED:
        path = os.path.join(folder, name)
        try:
            with open(path, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            if not isinstance(entry, dict) or not ({"data", "label_names"} & entry.keys()):
                return path
        except Exception:  # any failure to unpickle marks the file
            return path
    return folder


def _found(dataset: CIFAR10) -> Found:
    return Found(
        channels=3,
        class_names=tuple(dataset.classes),
        count=len(dataset.data),
        load=lambda: dataset,
        to_tensors=_to_tensors,
    )


def _to_tensors(dataset: CIFAR10) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()  # stored NHWC
    return images, torch.tensor(dataset.targets, dtype=torch.int64)
