"""image_folder: one subfolder of images per class under ``data.root``, read by ImageFolder."""

from __future__ import annotations

import functools
import os

from PIL import Image
from torchvision import datasets
from torchvision.datasets.folder import IMG_EXTENSIONS

from ganexp.config import DataConfig
from ganexp.data.spec import Found
from ganexp.errors import ConfigError

_MODES = {1: "L", 3: "RGB"}
_LAYOUT = f"one subfolder per class holding images ({', '.join(IMG_EXTENSIONS)})"


def load_image(path: str, mode: str) -> Image.Image:
    """Open an image converted to ``mode``; an unreadable file is a ConfigError naming it."""
    try:
        with Image.open(path) as image:
            return image.convert(mode)
    except OSError as err:
        raise ConfigError("data.root", path, f"cannot read as an image: {err}") from None


def locate(cfg: DataConfig) -> Found:
    """List the images and classes (no decoding); ConfigError if there are none."""
    if not cfg.root:
        raise ConfigError("data.root", None, f"data.name=image_folder needs a DIR with {_LAYOUT}")
    root = os.path.expanduser(cfg.root)
    if not os.path.isdir(root):
        raise ConfigError("data.root", cfg.root, f"not a folder; expected a DIR with {_LAYOUT}")
    if cfg.channels not in _MODES:
        raise ConfigError("data.channels", cfg.channels, "allowed: 1, 3")
    loader = functools.partial(load_image, mode=_MODES[cfg.channels])
    try:
        dataset = datasets.ImageFolder(root, loader=loader)
    except FileNotFoundError as err:  # no class folder, or a class folder without images
        reason = str(err).rstrip(".")
        raise ConfigError("data.root", cfg.root, f"{reason}; expected {_LAYOUT}") from None
    return Found(
        channels=cfg.channels,
        class_names=tuple(dataset.classes),
        count=len(dataset),
        load=lambda: dataset,
        to_tensors=None,
    )
