"""Image pairs and unpaired domains for image-to-image translation (Pix2Pix, CycleGAN).

Four sources of uint8 ``(N, C, H, W)`` images, each read once:

- ``data=fashion_edges``: Fashion-MNIST garments (B) and their edge maps (A), the edges the
  Sobel gradient magnitude of each garment (scipy's kernels), scaled to its own maximum,
  computed once per split and cached under ``data.cache_dir`` (:func:`cached_edges`);
- ``data=pix2pix_folder``: the pix2pix format, each file one pair side by side (A | B, the left
  half A), in ``ROOT/train/`` and ``ROOT/test/`` (or ``val/``) (:func:`read_pix2pix_folder`);
- ``data=fashion_domains``: the Fashion-MNIST images of two classes, ``data.domain_classes``;
- ``data=cyclegan_folder``: the CycleGAN format, ``ROOT/trainA/`` and ``ROOT/trainB/`` (and
  ``testA/``, ``testB/``), any number of images in each, unpaired
  (:func:`read_cyclegan_folders`).

The files of the two folder formats are listed without descending into subfolders (a link to a
file is read as the file) and each is checked to be a whole image before any work
(:func:`ganexp.data.folder.check_image`).

:class:`PairedSource` and :class:`UnpairedSource` batch them with exact resume.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms.v2 import functional as F

from ganexp.config import DataConfig
from ganexp.data import mnist
from ganexp.data.folder import check_image, load_image
from ganexp.data.images import fit, fit_all, to_signed_unit
from ganexp.data.sources import IndexStream, limit_indices
from ganexp.data.spec import DataSpec
from ganexp.errors import ConfigError

_MODES = {1: "L", 3: "RGB"}


def sobel_edges(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(N, 1, H, W)`` images to uint8 edge maps: the Sobel gradient magnitude of each,
    scaled so its strongest edge is 255 (an image without edges stays 0)."""
    pixels = images[:, 0].numpy().astype(np.float32)
    # scipy's Sobel kernels, as (1, 3, 3) so that no image's edges mix with its neighbours'
    # (ndimage.sobel smooths along every other axis, the batch too)
    across = np.outer([1.0, 2.0, 1.0], [-1.0, 0.0, 1.0])[None]
    dx = ndimage.correlate(pixels, across, mode="reflect")
    dy = ndimage.correlate(pixels, across.transpose(0, 2, 1), mode="reflect")
    magnitude = np.hypot(dx, dy)
    peak = magnitude.reshape(len(pixels), -1).max(axis=1)[:, None, None]
    scaled = np.divide(magnitude, peak, out=np.zeros_like(magnitude), where=peak > 0)
    return torch.from_numpy(np.rint(scaled * 255).astype(np.uint8))[:, None]


def cached_edges(images: torch.Tensor, cache_dir: str, name: str) -> torch.Tensor:
    """:func:`sobel_edges` of ``images``, computed once: kept in ``cache_dir/edges/`` under
    ``name`` and the images' own digest, so other images never read stale edges."""
    digest = hashlib.sha256(images.numpy().tobytes()).hexdigest()[:16]
    path = Path(os.path.expanduser(cache_dir)) / "edges" / f"{name}-{digest}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    edges = sobel_edges(images)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(edges, partial)
    partial.replace(path)  # atomic: a reader never sees half a file
    return edges


def _image_files(folder: Path, key: str = "data.root") -> list[Path]:
    if not folder.is_dir():
        return []
    try:
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMG_EXTENSIONS)
    except OSError as err:
        raise ConfigError(key, str(folder), f"cannot list the folder: {err.strerror}") from None


def _read(paths: list[Path], channels: int) -> list[torch.Tensor]:
    return [F.pil_to_tensor(load_image(str(p), _MODES[channels])) for p in paths]


def read_images(folder: Path, channels: int) -> tuple[list[str], list[torch.Tensor]]:
    """The names (without suffix) and uint8 ``(C, H, W)`` images of the image files in
    ``folder``; a folder without one is refused."""
    paths = _image_files(folder, "input")
    if not paths:
        raise ConfigError("input", str(folder), "holds no images (png, jpg, ...)")
    for path in paths:
        check_image(str(path), "input")
    return [p.stem for p in paths], _read(paths, channels)


def _pair_sizes(root: str, split: str) -> list[Path]:
    """The files of ``ROOT/split/``, each checked to be a whole image
    (:func:`~ganexp.data.folder.check_image`) holding a pair (width twice the height), all of
    one size."""
    folder = Path(os.path.expanduser(root)) / split
    paths = _pair_files(root, split)
    sizes = set()
    for path in paths:
        width, height = check_image(str(path))
        if width != 2 * height:
            pair = f"a pair is A | B, {2 * height}x{height}"
            raise ConfigError(
                "data.root", root, f"not a pair: {path.name} is {width}x{height}, {pair}"
            )
        sizes.add((width, height))
    if len(sizes) > 1:
        raise ConfigError(
            "data.root", root, f"pairs of different sizes in {folder}: {sorted(sizes)}"
        )
    return paths


def read_pix2pix_folder(root: str, split: str, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) uint8 images of ``ROOT/split/``, each file A | B side by side. A file whose width
    is not twice its height holds no pair; it is refused naming the file."""
    images = torch.stack(_read(_pair_sizes(root, split), channels))
    half = images.shape[-1] // 2
    return images[..., :half], images[..., half:]


def check_pairs(cfg: DataConfig) -> None:
    """data=pix2pix_folder: refuse, before any work, a folder whose training or held-out files
    do not all hold pairs of one size (ConfigError naming the file)."""
    if cfg.name == "pix2pix_folder":
        _pair_sizes(cfg.root, "train")
        _pair_sizes(cfg.root, _held_out_split(cfg.root))


def _domain_files(root: str | None, split: str) -> list[list[Path]]:
    """The image files of ``ROOT/{split}A/`` and ``ROOT/{split}B/``, each checked to be a whole
    image (:func:`~ganexp.data.folder.check_image`); neither folder may be empty."""
    if root is None:
        raise ConfigError("data.root", None, "data.name=cyclegan_folder reads data.root")
    domains = []
    for side in ("A", "B"):
        folder = Path(os.path.expanduser(root)) / f"{split}{side}"
        paths = _image_files(folder)
        if not paths:
            allowed = f"domain {side} has no images: {folder} is missing or empty"
            raise ConfigError("data.root", root, allowed)
        for path in paths:
            check_image(str(path))
        domains.append(paths)
    return domains


def read_cyclegan_folders(
    root: str, split: str, channels: int, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The images of ``ROOT/{split}A/`` and ``ROOT/{split}B/``, each fitted to ``size``; the
    two domains may hold different numbers of images, but neither may be empty."""
    a, b = (
        torch.stack([fit(image, size) for image in _read(paths, channels)])
        for paths in _domain_files(root, split)
    )
    return a, b


HELD_OUT_SPLITS = ("test", "val")  # a pix2pix folder's held-out pairs, the first found


def garments_config(cfg: DataConfig) -> DataConfig:
    """fashion_edges' garments: Fashion-MNIST, found where data.name=fashion_mnist looks."""
    return dataclasses.replace(cfg, name="fashion_mnist", num_classes=10)


def pairs_spec(cfg: DataConfig) -> DataSpec:
    """The spec of ``cfg``'s pairs, found without decoding an image: targets B of
    ``data.channels`` at ``data.image_size``, inputs A of as many channels, no classes."""
    if cfg.num_classes:
        allowed = f"data.name={cfg.name} holds unlabelled pairs: 0 or null"
        raise ConfigError("data.num_classes", cfg.num_classes, allowed)
    if cfg.name == "fashion_edges":
        found = mnist.locate(garments_config(cfg))
        if cfg.channels != found.channels:
            allowed = "fashion_edges has 1 channel (grayscale garments and their edges)"
            raise ConfigError("data.channels", cfg.channels, allowed)
        count = found.count
    else:
        count = len(_pair_files(cfg.root, "train"))
    size = count if cfg.limit is None else min(cfg.limit, count)
    shape = (cfg.channels, cfg.image_size, cfg.image_size)
    return DataSpec("image", shape, 0, (), size, condition_channels=cfg.channels)


def _pair_files(root: str | None, split: str) -> list[Path]:
    if root is None:
        raise ConfigError("data.root", None, "data.name=pix2pix_folder reads pairs from data.root")
    folder = Path(os.path.expanduser(root)) / split
    paths = _image_files(folder)
    if not paths:
        layout = "pix2pix pairs: images of A | B side by side (width = 2 x height)"
        raise ConfigError("data.root", root, f"{folder} holds no images; expected {layout}")
    return paths


def training_pairs(cfg: DataConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs A, targets B) of the training split as uint8 ``(N, C, S, S)``, data.limit's
    subset of them, on the CPU."""
    if cfg.name == "fashion_edges":
        garments = garments_config(cfg)
        found = mnist.locate(garments)
        images = found.to_tensors(found.load())[0]
        keep = limit_indices(len(images), cfg.limit)
        images = fit_all(images if keep is None else images[keep], cfg.image_size)
        return cached_edges(images, cfg.cache_dir, "fashion_mnist-train"), images
    inputs, targets = read_pix2pix_folder(cfg.root, "train", cfg.channels)
    keep = limit_indices(len(inputs), cfg.limit)
    if keep is not None:
        inputs, targets = inputs[keep], targets[keep]
    return fit_all(inputs, cfg.image_size), fit_all(targets, cfg.image_size)


def held_out_pairs(cfg: DataConfig) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(inputs A, targets B, what they are) of the pairs kept out of training, for the grids and
    the metrics: Fashion-MNIST's test split and its edges, or ``ROOT/test/`` (else ``val/``)."""
    if cfg.name == "fashion_edges":
        from ganexp.data.test_split import eval_split

        images, _, split = eval_split(garments_config(cfg), 0)
        return cached_edges(images, cfg.cache_dir, "fashion_mnist-test"), images, split
    split = _held_out_split(cfg.root)
    inputs, targets = read_pix2pix_folder(cfg.root, split, cfg.channels)
    where = f"{split}/ ({len(inputs)} pairs)"
    return fit_all(inputs, cfg.image_size), fit_all(targets, cfg.image_size), where


def _held_out_split(root: str) -> str:
    """The first of ``ROOT/test/`` and ``ROOT/val/`` that holds images."""
    folder = Path(os.path.expanduser(root))
    for split in HELD_OUT_SPLITS:
        if _image_files(folder / split):
            return split
    allowed = (
        f"no held-out pairs: {folder}/test/ and {folder}/val/ hold no images "
        "(they make the sample grids and the metrics)"
    )
    raise ConfigError("data.root", root, allowed)


def _fashion_domains(cfg: DataConfig, images: torch.Tensor, labels: torch.Tensor) -> tuple:
    a, b = (images[labels == k] for k in cfg.domain_classes)
    return fit_all(a, cfg.image_size), fit_all(b, cfg.image_size)


def _fashion_train(cfg: DataConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST's training images and labels, data.limit's subset of them."""
    found = mnist.locate(garments_config(cfg))
    images, labels = found.to_tensors(found.load())
    keep = limit_indices(len(images), cfg.limit)
    return (images, labels) if keep is None else (images[keep], labels[keep])


def domains_spec(cfg: DataConfig) -> DataSpec:
    """The spec of ``cfg``'s two domains: images of ``data.channels`` at ``data.image_size``,
    no classes; ``size`` is the smaller domain's count (a batch draws that many of each)."""
    if cfg.num_classes:
        allowed = f"data.name={cfg.name} holds unlabelled domains: 0 or null"
        raise ConfigError("data.num_classes", cfg.num_classes, allowed)
    if cfg.name == "fashion_domains":
        if cfg.channels != 1:
            raise ConfigError("data.channels", cfg.channels, "fashion_domains has 1 channel")
        labels = _fashion_train(cfg)[1]
        counts = [int((labels == k).sum()) for k in cfg.domain_classes]
    else:
        counts = [len(paths) for paths in _domain_files(cfg.root, "train")]
    shape = (cfg.channels, cfg.image_size, cfg.image_size)
    return DataSpec("image", shape, 0, (), min(counts), condition_channels=cfg.channels)


def training_domains(cfg: DataConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) uint8 ``(N, C, S, S)`` training images of the two domains, on the CPU."""
    if cfg.name == "fashion_domains":
        return _fashion_domains(cfg, *_fashion_train(cfg))
    a, b = read_cyclegan_folders(cfg.root, "train", cfg.channels, cfg.image_size)
    keep_a, keep_b = (limit_indices(len(x), cfg.limit) for x in (a, b))
    return a if keep_a is None else a[keep_a], b if keep_b is None else b[keep_b]


def held_out_domains(cfg: DataConfig) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(A, B, what they are) kept out of training, for the grids and the metrics: the test
    split's images of the two classes, or ``ROOT/testA/`` and ``ROOT/testB/``."""
    if cfg.name == "fashion_domains":
        from ganexp.data.test_split import eval_split

        images, labels, split = eval_split(garments_config(cfg), 0)
        a, b = _fashion_domains(cfg, images, labels)
        return a, b, f"{split}: {len(a)} A, {len(b)} B"
    a, b = read_cyclegan_folders(cfg.root, "test", cfg.channels, cfg.image_size)
    return a, b, f"testA/, testB/ ({len(a)} A, {len(b)} B)"


def check_domains(cfg: DataConfig) -> None:
    """data=cyclegan_folder: refuse, before any work, an empty held-out domain or a file in it
    that is not a whole image (the training domains are checked by :func:`domains_spec`)."""
    if cfg.name == "cyclegan_folder":
        _domain_files(cfg.root, "test")


class PairedSource:
    """Batches of aligned pairs: (target B in [-1, 1], input A in [-1, 1]), A passed where a
    cGAN passes its labels (G(z, A), D(x, A)). uint8 ``(N, C, H, W)`` pairs on the device, drawn
    by index from an :class:`~ganexp.data.sources.IndexStream` (exact resume)."""

    def __init__(
        self,
        spec: DataSpec,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        batch_size: int,
        seed: int,
    ) -> None:
        if len(inputs) != len(targets):
            raise ValueError(f"{len(inputs)} inputs for {len(targets)} targets")
        self.spec = spec
        self._inputs, self._targets = inputs, targets
        generator = torch.Generator(device=inputs.device).manual_seed(seed)
        self._stream = IndexStream(len(inputs), batch_size, generator)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        index = self._stream.next_indices()
        return to_signed_unit(self._targets[index]), to_signed_unit(self._inputs[index])

    def state_dict(self) -> dict:
        return self._stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._stream.load_state_dict(state)


class UnpairedSource:
    """Batches of two unpaired domains, each drawn by index from its own
    :class:`~ganexp.data.sources.IndexStream` (exact resume): ``(B | A, A | B)`` in [-1, 1],
    the batch of B's then of A's first (what D_B, then D_A, judge as real), and the A's then
    the B's (what G_AB, then G_BA, translate), each half ``batch_size`` images."""

    def __init__(
        self, spec: DataSpec, a: torch.Tensor, b: torch.Tensor, batch_size: int, seed: int
    ) -> None:
        self.spec = spec
        self._domains = (a, b)
        self._streams = [
            IndexStream(len(x), batch_size, torch.Generator(x.device).manual_seed(seed + k))
            for k, x in enumerate(self._domains)
        ]

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = (
            to_signed_unit(x[stream.next_indices()])
            for x, stream in zip(self._domains, self._streams, strict=True)
        )
        return torch.cat([b, a]), torch.cat([a, b])

    def state_dict(self) -> dict:
        return {"a": self._streams[0].state_dict(), "b": self._streams[1].state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self._streams[0].load_state_dict(state["a"])
        self._streams[1].load_state_dict(state["b"])
