"""Which training examples ``data.limit`` keeps."""

from __future__ import annotations

import torch

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
