"""A small CNN classifier whose penultimate layer is a cheap feature space for image metrics.

Inception features mean little on 28x28 grayscale garments and cost a GPU; this network, trained
on the data set's own labels, gives features (for Frechet distance, KID, precision/recall) and
logits (for the Inception Score) of 10k 32x32 images in seconds on a laptop CPU.

It takes uint8 images ``(N, C, H, W)`` of any size and channel count 1 or 3, and converts them
itself (grayscale <-> RGB, antialiased bilinear resize to :data:`INPUT_SIZE`), because torchmetrics
probes a custom feature module with a uint8 ``(1, 3, 299, 299)`` image.
"""

from __future__ import annotations

import os

import torch
from torch import nn
from torchvision.transforms.v2 import functional as F

from ganexp.engine.checkpoint import sha256_file  # noqa: F401 - re-exported for the extractors

ARCH = "cnn4-32-64-64-128-v1"  # recorded with each checkpoint; change it when the layers change
INPUT_SIZE = 32
NUM_FEATURES = 128
_BATCH = 1000  # images per forward pass in features()/logits(), to bound memory


def check_uint8(images: torch.Tensor) -> None:
    """Refuse anything but uint8 (N, 1 or 3, H, W): floats in [-1, 1] would pass silently wrong."""
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images in [0, 255], got {images.dtype}")
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images shaped (N, 1 or 3, H, W), got {tuple(images.shape)}")


def record_path(checkpoint: str) -> str:
    """The JSON record beside a checkpoint: ``x.pt`` -> ``x.json``."""
    return os.path.splitext(checkpoint)[0] + ".json"


def _conv(cin: int, cout: int, kernel: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel, stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class Classifier(nn.Module):
    """32x32 input -> four conv layers -> 128 features (after ReLU) -> class logits.

    Strided convolutions rather than pooling keep it cheap: ~5M multiply-adds per image.
    """

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.channels = channels
        self.num_classes = num_classes
        self.num_features = NUM_FEATURES
        self.input_size = INPUT_SIZE
        self.body = nn.Sequential(
            *_conv(channels, 32, 4, 2),  # 16x16
            *_conv(32, 64, 3, 2),  # 8x8
            *_conv(64, 64, 3, 1),
            *_conv(64, 128, 3, 2),  # 4x4
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(128 * 2 * 2, NUM_FEATURES),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(NUM_FEATURES, num_classes))

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> float (N, channels, 32, 32) in [-1, 1] on the model's device."""
        check_uint8(images)
        x = images.to(self.body[0].weight.device).float().div_(255.0)
        if x.shape[1] != self.channels:
            x = x.expand(-1, 3, -1, -1) if self.channels == 3 else F.rgb_to_grayscale(x)
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.resize(x, [INPUT_SIZE, INPUT_SIZE], antialias=True).clamp_(0.0, 1.0)
        return x * 2.0 - 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of prepared float input (training); see :meth:`prepare`."""
        return self.head(self.body(x))

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features (N, 128) of uint8 images."""
        return torch.cat([self.body(self.prepare(chunk)) for chunk in images.split(_BATCH)])

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits (N, num_classes) of uint8 images."""
        return torch.cat([self(self.prepare(chunk)) for chunk in images.split(_BATCH)])
