"""What a data set looks like to the rest of a run, known before any image is decoded, and the
interface the trainer draws batches from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch.utils.data import Dataset


@dataclass(frozen=True)
class DataSpec:
    """The shape of one training example and what labels come with it."""

    kind: str  # "image" or "points"
    shape: tuple[int, ...]  # (C, H, W) for images, (2,) for toy points
    num_classes: int  # 0 when unlabelled
    class_names: tuple[str, ...]
    size: int | None  # training examples after data.limit; None for toy mixtures (infinite)
    condition_channels: int = 0  # task=paired_translation: channels of the input image A


@dataclass(frozen=True)
class Found:
    """An image training split whose files were found: what its spec needs, and how to load it."""

    channels: int
    class_names: tuple[str, ...]
    count: int
    load: Callable[[], Dataset]
    # array-backed sets only: the loaded set as uint8 (N, C, H, W) images and int64 (N,) labels
    to_tensors: Callable[[Dataset], tuple[torch.Tensor, torch.Tensor]] | None


@dataclass(frozen=True)
class Shard:
    """Which part of every batch this process takes when ``size`` processes train one run
    (rank ``rank``); one process takes it all. The engine's process group is one of these."""

    rank: int = 0
    size: int = 1

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This process's slice of a batch drawn alike by every process (as DistributedSampler
        shares one permutation): rank r takes the r-th of ``size`` equal parts."""
        if not self.distributed:
            return batch
        part = len(batch) // self.size
        return batch[self.rank * part : (self.rank + 1) * part]


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
