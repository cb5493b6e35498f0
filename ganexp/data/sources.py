"""Batch sources that resume exactly: the two image sources (a uint8 tensor on the device, or a
torch DataLoader), the shuffled index stream they share, and which examples data.limit keeps."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ganexp.data.images import to_signed_unit
from ganexp.data.spec import DataSpec, Shard


class TensorSource:
    """The whole (resized) set as uint8 on the device; batches are gathered by index there.

    With several processes every one draws the same batches of ``batch_size`` indices and keeps
    its own slice of each (``world.shard``), so together they see each example once an epoch.
    """

    def __init__(
        self,
        spec: DataSpec,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        batch_size: int,
        seed: int,
        world: Shard | None = None,
    ) -> None:
        self.spec = spec
        self._images = images
        self._labels = labels
        self._world = world or Shard()
        generator = torch.Generator(device=images.device).manual_seed(seed)
        self._stream = IndexStream(len(images), batch_size, generator)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        index = self._world.shard(self._stream.next_indices())
        labels = None if self._labels is None else self._labels[index]
        return to_signed_unit(self._images[index]), labels

    def state_dict(self) -> dict[str, Any]:
        return self._stream.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._stream.load_state_dict(state)


class _StreamSampler(Sampler[list[int]]):
    """Endless batches from an IndexStream, noting the stream's state after each one.

    The DataLoader draws batches ahead of the ones the trainer has taken (prefetching), so the
    stream's own state runs ahead; the noted states let the source report the trainer's position.
    """

    def __init__(self, stream: IndexStream, world: Shard) -> None:
        self.stream = stream
        self.world = world
        self.states: deque[dict[str, Any]] = deque()

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            index = self.world.shard(self.stream.next_indices()).tolist()
            self.states.append(self.stream.state_dict())
            yield index


class LoaderSource:
    """A torch DataLoader over a data set yielding (uint8 (C, H, W) image, label) pairs.

    The sampler is endless, so the loader never runs out and its workers are never restarted;
    it shuffles like ``shuffle=True, drop_last=True`` but keeps every batch full across epochs.
    With several processes each loads only its slice of every batch, as in :class:`TensorSource`.
    """

    def __init__(
        self,
        spec: DataSpec,
        dataset: Dataset,
        batch_size: int,
        device: torch.device,
        seed: int,
        num_workers: int,
        world: Shard | None = None,
    ) -> None:
        self.spec = spec
        self._device = device
        generator = torch.Generator().manual_seed(seed)
        stream = IndexStream(len(dataset), batch_size, generator)
        self._sampler = _StreamSampler(stream, world or Shard())
        self._state = self._sampler.stream.state_dict()
        self._loader = DataLoader(
            dataset,
            batch_sampler=self._sampler,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=num_workers > 0,
            generator=torch.Generator().manual_seed(seed),  # worker seeds, not the global RNG
        )
        self._batches: Iterator[list[torch.Tensor]] | None = None

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._batches is None:
            self._batches = iter(self._loader)
        images, labels = next(self._batches)
        self._state = self._sampler.states.popleft()
        x = to_signed_unit(images.to(self._device, non_blocking=True))
        if self.spec.num_classes == 0:
            return x, None
        return x, labels.to(self._device, non_blocking=True)

    def state_dict(self) -> dict[str, Any]:
        return self._state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._sampler.stream.load_state_dict(state)
        self._sampler.states.clear()
        self._state = state
        if self._batches is not None:  # drop what was prefetched from the old position
            self._batches = iter(self._loader)


class IndexStream:
    """Batches of indices cut from back-to-back random permutations of ``range(n)``.

    Each permutation (an epoch) is used whole and a batch that runs past its end continues into
    the next one, so every epoch visits every example exactly once and every batch is full.
    The state is the generator state from before the current permutation was drawn plus the
    position in it: a few kilobytes, yet enough to redraw the permutation and go on exactly.
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator) -> None:
        self._n = n
        self._batch_size = batch_size
        self._generator = generator
        self._new_epoch()

    def _new_epoch(self) -> None:
        self._epoch_state = self._generator.get_state()
        g = self._generator
        self._perm = torch.randperm(self._n, generator=g, device=g.device)
        self._offset = 0

    def next_indices(self) -> torch.Tensor:
        parts = []
        need = self._batch_size
        while need:
            if self._offset == self._n:
                self._new_epoch()
            take = min(need, self._n - self._offset)
            parts.append(self._perm[self._offset : self._offset + take])
            self._offset += take
            need -= take
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self._epoch_state, "offset": self._offset}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._generator.set_state(state["generator"].cpu())
        self._new_epoch()
        self._offset = state["offset"]


SUBSET_SEED = 0


def limit_indices(count: int, limit: int | None) -> torch.Tensor | None:
    """Sorted indices of the examples to keep, or None to keep all ``count``.

    A random subset rather than the first N, because image_folder lists its files class by class
    (the first N would hold only the first classes). It is drawn with a fixed seed, not the run's,
    so that runs of a seed sweep train on the same examples and differ only in the model.
    """
    if limit is None or limit >= count:
        return None
    generator = torch.Generator().manual_seed(SUBSET_SEED)
    return torch.randperm(count, generator=generator)[:limit].sort().values
