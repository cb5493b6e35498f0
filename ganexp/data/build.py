"""From a DataConfig to its spec and to a batch source: picks the data set and the loader."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ganexp.config import DATASETS, PAIRED_DATASETS, UNPAIRED_DATASETS, DataConfig
from ganexp.data import cifar, folder, mnist, translation
from ganexp.data.images import FitPil, fit_all
from ganexp.data.sources import LoaderSource, TensorSource, limit_indices
from ganexp.data.spec import BatchSource, DataSpec, Found, Shard
from ganexp.data.toy import TOY_MODES, ToyMixture, mode_centers, toy_spec
from ganexp.errors import ConfigError

_LOCATE = {
    "fashion_mnist": mnist.locate,
    "mnist": mnist.locate,
    "cifar10": cifar.locate,
    "image_folder": folder.locate,
}
_DECODE_BATCH = 256


def data_spec(cfg: DataConfig) -> DataSpec:
    """The spec ``build_data(cfg, ...)`` will report, found cheaply (no image is decoded).

    Raises ConfigError when the files cannot be found or read; when nothing local is found and
    ``data.download`` is true, this is where torchvision's download happens.
    """
    return data_plan(cfg)[0]


def data_plan(cfg: DataConfig) -> tuple[DataSpec, bool]:
    """:func:`data_spec`, and whether ``build_data`` will hold the training set as one tensor
    on the device (``data.loader``, resolved), from one look at the files."""
    if cfg.name in TOY_MODES:
        return _toy_spec(cfg), False
    if cfg.name in PAIRED_DATASETS:
        return translation.pairs_spec(cfg), True
    if cfg.name in UNPAIRED_DATASETS:
        return translation.domains_spec(cfg), True
    found = _locate(cfg)
    return _image_spec(cfg, found), _loader(cfg, found) == "tensor"


def _loader(cfg: DataConfig, found: Found) -> str:
    """``data.loader``; auto: array-backed sets as one tensor, image folders by a DataLoader."""
    if cfg.loader != "auto":
        return str(cfg.loader)
    return "tensor" if found.to_tensors is not None else "dataloader"


def build_data(
    cfg: DataConfig, batch_size: int, device: torch.device, seed: int, world: Shard | None = None
) -> BatchSource:
    """The batch source for ``cfg``; ``seed`` seeds its sampler (not the data.limit subset).
    ``batch_size`` is the whole batch; with several processes (``world``) each gets its part."""
    if cfg.name in TOY_MODES:
        _toy_spec(cfg)
        return ToyMixture(cfg, batch_size, device, seed, world)
    if cfg.name in PAIRED_DATASETS:
        spec = translation.pairs_spec(cfg)
        inputs, targets = translation.training_pairs(cfg)
        return translation.PairedSource(
            spec, inputs.to(device), targets.to(device), batch_size, seed
        )
    if cfg.name in UNPAIRED_DATASETS:
        spec = translation.domains_spec(cfg)
        a, b = translation.training_domains(cfg)
        return translation.UnpairedSource(spec, a.to(device), b.to(device), batch_size, seed)
    found = _locate(cfg)
    spec = _image_spec(cfg, found)
    dataset = found.load()
    keep = limit_indices(found.count, cfg.limit)
    if _loader(cfg, found) == "tensor":
        images, labels = _tensors(cfg, found, dataset, keep)
        images = fit_all(images.to(device), cfg.image_size)
        labels = labels.to(device) if spec.num_classes else None
        return TensorSource(spec, images, labels, batch_size, seed, world)
    dataset = _fitted(cfg, dataset, keep)
    return LoaderSource(spec, dataset, batch_size, device, seed, cfg.num_workers, world)


def build_labelled(
    cfg: DataConfig, batch_size: int, device: torch.device, seed: int, world: Shard | None = None
) -> TensorSource:
    """Batches of the labelled subset (:func:`labelled_subset`); ``seed`` seeds their
    order."""
    found, dataset, keep, spec = labelled_subset(cfg)
    images, labels = _tensors(cfg, found, dataset, keep)
    images = fit_all(images.to(device), cfg.image_size)
    return TensorSource(spec, images, labels.to(device), batch_size, seed, world)


def labelled_subset(cfg: DataConfig) -> tuple[Found, Dataset, torch.Tensor, DataSpec]:
    """The labelled examples of a semi-supervised run: ``data.labels_per_class`` of each class
    (null: all), among the training examples data.limit keeps, picked with
    ``data.labels_seed``. Reads the labels alone (no image file is decoded). Returns the found
    files, the loaded data set, the sorted indices into it, and the spec. The semi-supervised
    task refuses data without classes first, naming itself."""
    no_labels = "has no classes to pick labelled examples of"
    if cfg.name in TOY_MODES:
        raise ConfigError("data.name", cfg.name, no_labels)
    found = _locate(cfg)
    spec = _image_spec(cfg, found)
    if spec.num_classes < 2:
        raise ConfigError("data.name", cfg.name, f"{no_labels} (or data.num_classes=0)")
    dataset = found.load()
    labels = found.to_tensors(dataset)[1] if found.to_tensors else torch.tensor(dataset.targets)
    kept = limit_indices(found.count, cfg.limit)
    kept = torch.arange(found.count) if kept is None else kept
    labels = labels[kept]
    if cfg.labels_per_class is None:
        return found, dataset, kept, spec
    counts = torch.bincount(labels, minlength=spec.num_classes)
    fewest = int(counts.argmin())
    if counts[fewest] < cfg.labels_per_class:
        where = f" of the {len(kept)} data.limit keeps" if cfg.limit is not None else ""
        scarce = f"class {spec.class_names[fewest]!r} has {int(counts[fewest])} examples{where}"
        allowed = f"more than exist ({scarce}); at most {int(counts[fewest])}"
        raise ConfigError("data.labels_per_class", cfg.labels_per_class, allowed)
    generator = torch.Generator().manual_seed(cfg.labels_seed)
    picked = []
    for k in range(spec.num_classes):
        members = torch.nonzero(labels == k).flatten()
        picked.append(
            members[torch.randperm(len(members), generator=generator)][: cfg.labels_per_class]
        )
    return found, dataset, kept[torch.cat(picked).sort().values], spec


def _locate(cfg: DataConfig) -> Found:
    if cfg.name not in _LOCATE:
        raise ConfigError("data.name", cfg.name, f"allowed: {', '.join(DATASETS)}")
    if cfg.image_size < 1:
        raise ConfigError("data.image_size", cfg.image_size, "must be an integer >= 1")
    return _LOCATE[cfg.name](cfg)


def _toy_spec(cfg: DataConfig) -> DataSpec:
    mode_centers(cfg)  # checks data.modes
    _num_classes(cfg, 0)
    return toy_spec(cfg)


def _image_spec(cfg: DataConfig, found: Found) -> DataSpec:
    if found.channels != cfg.channels:
        raise ConfigError(
            "data.channels", cfg.channels, f"data.name={cfg.name} has {found.channels} channel(s)"
        )
    num_classes = _num_classes(cfg, len(found.class_names))
    return DataSpec(
        kind="image",
        shape=(cfg.channels, cfg.image_size, cfg.image_size),
        num_classes=num_classes,
        class_names=found.class_names if num_classes else (),
        size=found.count if cfg.limit is None else min(cfg.limit, found.count),
    )


def _num_classes(cfg: DataConfig, in_data: int) -> int:
    """data.num_classes: null counts the data's classes, 0 drops the labels, else must match."""
    if cfg.num_classes is None:
        return in_data
    if cfg.num_classes not in (0, in_data):
        raise ConfigError(
            "data.num_classes",
            cfg.num_classes,
            f"data.name={cfg.name} has {in_data} classes (null: count them, 0: ignore labels)",
        )
    return cfg.num_classes


def _tensors(
    cfg: DataConfig, found: Found, dataset: Dataset, keep: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, C, H, W) images and int64 labels of the kept examples, on the CPU."""
    if found.to_tensors is not None:
        images, labels = found.to_tensors(dataset)
        return (images, labels) if keep is None else (images[keep], labels[keep])
    # image_folder with loader=tensor: decode (and fit) every kept image once
    fitted = _fitted(cfg, dataset, keep)
    batches = list(DataLoader(fitted, batch_size=_DECODE_BATCH, num_workers=cfg.num_workers))
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


def _fitted(cfg: DataConfig, dataset: Dataset, keep: torch.Tensor | None) -> Dataset:
    """The kept examples of a torchvision data set, as fitted uint8 (C, H, W) tensors."""
    dataset.transform = FitPil(cfg.image_size)
    return dataset if keep is None else Subset(dataset, keep.tolist())
