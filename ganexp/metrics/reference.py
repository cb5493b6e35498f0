"""The real side of the image metrics, computed once and cached on disk.

A reference is keyed by (data set, split, extractor name, extractor sha256, N, image size) and
holds what an evaluation needs from the real images:

- the FD real states (float64 sum (d,), cov_sum (d, d) and count), for :class:`FrechetDistance`;
- the N real features (N, d), for KID and precision/recall/density/coverage, stored as float16
  (float32 if a value overflows float16) and returned as float32: three significant digits, far
  finer than the spread of k-NN distances. At N = 10k that is 2.6 MB on disk for d = 128 and 41 MB
  for d = 2048, beside the (d, d) float64 cov_sum (0.13 MB and 34 MB);
- the real-vs-real floor: FD and KID between the N reference images and the next N images of the
  stream, a disjoint real set of the same size. A metric's value for a run means little below its
  floor, so it is logged beside it as ``..._floor``. It is left empty when the stream holds fewer
  than 2N images.

Files are ``<cache_dir>/reference/<key>.pt``: plain tensors and floats, written to a temporary
file and renamed into place (so a reader never sees half a file, and concurrent runs that compute
the same reference simply replace each other's identical copy), read with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ganexp.errors import ConfigError
from ganexp.metrics.distances import REAL_STATES, FrechetDistance, kernel_distance

FORMAT = 1  # part of every key: a change to what a file holds makes new files


@dataclass(frozen=True)
class Reference:
    fd_state: dict[str, Tensor]  # FrechetDistance.load_real_state takes it
    features: Tensor  # (N, d) float32 on the CPU
    floor: dict[str, float]  # {"fd": ..., "kid": ...}, or {} without 2N real images


def reference_key(
    dataset: str, split: str, extractor: str, sha256: str, num_samples: int, image_size: int
) -> str:
    """A file name naming the reference, readable first, then a hash of every field.

    ``dataset`` must identify the images (for an image folder: its resolved path, not just
    "image_folder"); the hash makes any two different field sets different names.
    """
    fields = [FORMAT, dataset, split, extractor, sha256, num_samples, image_size]
    digest = hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:16]
    readable = re.sub(r"[^A-Za-z0-9.]+", "_", f"{dataset}-{split}-{extractor}")
    return f"{readable}-n{num_samples}-{image_size}px-{digest}"


def load_reference(
    extractor: nn.Module,
    real_batches: Callable[[], Iterable[Tensor]],
    *,
    dataset: str,
    split: str,
    num_samples: int,
    image_size: int,
    cache_dir: str | Path,
) -> Reference:
    """The cached reference for ``extractor`` (its ``name`` and ``sha256`` are in the key), or a
    new one computed from ``real_batches`` and saved.

    ``real_batches()`` yields uint8 (B, C, H, W) batches of distinct real images in a fixed order:
    the first ``num_samples`` are the reference, the next ``num_samples`` the floor's second set.
    It is called once, and only when the file is missing; iteration stops after 2N images.
    """
    key = reference_key(dataset, split, extractor.name, extractor.sha256, num_samples, image_size)
    path = Path(cache_dir).expanduser() / "reference" / f"{key}.pt"
    if not path.exists():
        _save(_compute(extractor, real_batches(), num_samples, f"{dataset} {split}"), path)
    saved = torch.load(path, map_location="cpu", weights_only=True)
    return Reference(
        fd_state={name: saved[name] for name in REAL_STATES},
        features=saved["features"].float(),
        floor=saved["floor"],
    )


def _compute(
    extractor: nn.Module, batches: Iterable[Tensor], n: int, source: str
) -> dict[str, object]:
    fd = FrechetDistance(extractor)
    reference: list[Tensor] = []
    second: list[Tensor] = []  # the floor's disjoint real set
    seen = 0
    for batch in batches:
        batch = batch[: 2 * n - seen]
        cut = max(n - seen, 0)
        head, tail = batch[:cut], batch[cut:]
        if len(head):
            reference.append(fd.update(head, real=True))
        if len(tail):  # the second set is FD's generated side: its distance is the floor
            second.append(fd.update(tail, real=False))
        seen += len(batch)
        if seen == 2 * n:
            break
    if seen < n:
        raise ConfigError("metrics.num_samples", n, f"at most {seen}, the real images of {source}")
    features = torch.cat(reference)
    floor: dict[str, float] = {}
    if seen == 2 * n:
        floor = {"fd": fd.compute(), "kid": kernel_distance(features, torch.cat(second))[0]}
    return {**fd.real_state(), "features": _compact(features.cpu()), "floor": floor}


def _compact(features: Tensor) -> Tensor:
    half = features.half()
    return half if bool(half.isfinite().all()) else features.float()


def _save(payload: dict[str, object], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
