"""Shuffled batches of indices whose position can be saved and restored exactly."""

from __future__ import annotations

from typing import Any

import torch


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
