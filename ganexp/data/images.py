"""Pixel preprocessing shared by both loaders, so that they give the same values."""

from __future__ import annotations

import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

_CHUNK = 4096  # images resized at a time, to bound the float copies the resize makes


def fit(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 ``(..., C, H, W)`` images so the shorter side is ``size`` (antialiased),
    then center-crop to ``size`` x ``size``; square inputs are only resized."""
    if images.shape[-2:] == (size, size):
        return images
    return F.center_crop(F.resize(images, [size], antialias=True), [size, size])


def fit_all(images: torch.Tensor, size: int) -> torch.Tensor:
    """:func:`fit` for a whole data set, in chunks."""
    if images.shape[-2:] == (size, size):
        return images
    return torch.cat([fit(chunk, size) for chunk in images.split(_CHUNK)])


def to_signed_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] to float32 [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


class FitPil:
    """PIL image to a fitted uint8 ``(C, size, size)`` tensor (a picklable DataLoader transform)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return fit(F.pil_to_tensor(image), self.size)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] to uint8 [0, 255]: clamped, then rounded (not truncated).

    torchmetrics' ``normalize=True`` truncates ``x * 255`` and lets out-of-range values wrap
    around, so generator outputs are converted here instead.
    """
    return images.clamp(-1.0, 1.0).add(1.0).mul_(127.5).round_().to(torch.uint8)
