"""The interface the trainer draws batches from."""

from __future__ import annotations

from typing import Any, Protocol

import torch

from ganexp.data.spec import DataSpec


class BatchSource(Protocol):
    """An endless stream of training batches whose position can be saved and restored."""

    spec: DataSpec

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: float32 on the device, images in [-1, 1] shaped (B, C, H, W), or points (B, 2);
        y: int64 labels (B,) on the device, or None when unlabelled."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The sampler's RNG state and position, so that a resumed run draws the same batches."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
