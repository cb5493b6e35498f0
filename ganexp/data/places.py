"""Where the files of a torchvision data set are looked for, in order."""

from __future__ import annotations

import os

from omegaconf import OmegaConf

from ganexp.config import DataConfig


def local_places(cfg: DataConfig) -> list[tuple[str, str]]:
    """(config key, folder) for data.root, then each folder of data.search."""
    places = [("data.root", os.path.expanduser(cfg.root))] if cfg.root else []
    places += [("data.search", os.path.expanduser(folder)) for folder in cfg.search]
    return places


def cache_root(cfg: DataConfig) -> str:
    """``<cache_dir>/data``: where torchvision downloads to and local copies are staged."""
    cache_dir = cfg.cache_dir
    if "${" in cache_dir:  # a DataConfig built in Python, not composed by Hydra, keeps its default
        cache_dir = OmegaConf.create({"dir": cache_dir}).dir
    return os.path.join(os.path.expanduser(cache_dir), "data")
