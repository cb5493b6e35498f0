"""to_uint8 placeholder while prototyping."""

from __future__ import annotations

import torch


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] to uint8 [0, 255]: clamped, then rounded (not truncated)."""
    return images.clamp(-1.0, 1.0).add(1.0).mul_(127.5).round_().to(torch.uint8)
