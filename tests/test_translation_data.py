"""Translation data: Sobel edge maps (cached), the pix2pix A | B folder format and the CycleGAN
trainA/trainB format, read from files written in them, and their bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganexp.data.spec import DataSpec
from ganexp.data.translation import (
    cached_edges,
    read_cyclegan_folders,
    read_pix2pix_folder,
    sobel_edges,
)
from ganexp.errors import ConfigError


def test_the_edges_of_a_step_are_the_two_columns_beside_it_at_full_strength() -> None:
    step = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    step[..., 4:] = 255
    edges = sobel_edges(torch.cat([step, torch.zeros_like(step)]))
    # Sobel's x kernel [-1 0 1] x [1 2 1]: 4 x 255 on columns 3 and 4, zero elsewhere
    assert (edges[0, 0, :, 3:5] == 255).all()
    assert edges[0, 0, :, :3].sum() == 0 and edges[0, 0, :, 5:].sum() == 0
    assert edges[1].sum() == 0  # a blank image has no edges (and no division by zero)
    # each image's edges are its own, as scipy's Sobel gives them for it alone
    from scipy import ndimage

    alone = np.hypot(*(ndimage.sobel(step[0, 0].float().numpy(), axis=a) for a in (0, 1)))
    assert np.array_equal(edges[0, 0].numpy(), np.rint(alone / alone.max() * 255).astype(np.uint8))


def test_edges_are_computed_once_and_kept_per_image_set(tmp_path: Path) -> None:
    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    first = cached_edges(images, str(tmp_path), "train")
    files = list((tmp_path / "edges").glob("train-*.pt"))
    assert len(files) == 1 and torch.equal(torch.load(files[0]), first)
    torch.save(torch.zeros_like(first), files[0])  # a cached file is read, not recomputed
    assert cached_edges(images, str(tmp_path), "train").sum() == 0
    cached_edges(images.flip(0), str(tmp_path), "train")  # other images: a file of their own
    assert len(list((tmp_path / "edges").glob("train-*.pt"))) == 2


def _save(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_a_pix2pix_folder_reads_each_file_as_a_pair_left_a_right_b(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pairs = [rng.integers(0, 256, (6, 12), dtype=np.uint8) for _ in range(3)]
    for i, pixels in enumerate(pairs):
        _save(tmp_path / "train" / f"{i}.png", pixels)
    inputs, targets = read_pix2pix_folder(str(tmp_path), "train", channels=1)
    assert inputs.shape == targets.shape == (3, 1, 6, 6)
    for i, pixels in enumerate(pairs):
        assert np.array_equal(inputs[i, 0].numpy(), pixels[:, :6])
        assert np.array_equal(targets[i, 0].numpy(), pixels[:, 6:])


def test_a_file_that_is_not_a_pair_and_an_empty_folder_are_refused(tmp_path: Path) -> None:
    _save(tmp_path / "train" / "good.png", np.zeros((6, 12), np.uint8))
    _save(tmp_path / "train" / "odd.png", np.zeros((6, 10), np.uint8))
    with pytest.raises(ConfigError, match=r"not a pair: odd.png is 10x6, a pair is A \| B, 12x6"):
        read_pix2pix_folder(str(tmp_path), "train", channels=1)
    with pytest.raises(ConfigError, match="holds no images"):
        read_pix2pix_folder(str(tmp_path), "test", channels=1)


def test_cyclegan_folders_hold_two_unpaired_domains_of_any_sizes(tmp_path: Path) -> None:
    for i in range(3):
        _save(tmp_path / "trainA" / f"a{i}.png", np.full((10, 10, 3), i, np.uint8))
    for i in range(2):
        _save(tmp_path / "trainB" / f"b{i}.jpg", np.full((20, 16, 3), 200, np.uint8))
    a, b = read_cyclegan_folders(str(tmp_path), "train", channels=3, size=8)
    assert a.shape == (3, 3, 8, 8) and b.shape == (2, 3, 8, 8)
    assert a[2].float().mean() == pytest.approx(2, abs=0.5)
    (tmp_path / "trainB" / "b0.jpg").unlink()
    (tmp_path / "trainB" / "b1.jpg").unlink()
    with pytest.raises(ConfigError, match="domain B has no images"):
        read_cyclegan_folders(str(tmp_path), "train", channels=3, size=8)


def test_a_paired_source_keeps_each_input_with_its_target_and_resumes_exactly() -> None:
    from ganexp.data.translation import PairedSource

    targets = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2) * 20
    inputs = 255 - targets  # input k is the negative of target k
    spec = DataSpec("image", tuple(targets.shape[1:]), 0, (), len(targets), 1)
    source = PairedSource(spec, inputs.contiguous(), targets.contiguous(), batch_size=4, seed=0)
    for _ in range(3):  # across an epoch's end
        target, condition = source.next_batch()
        assert torch.allclose(condition, -target)
    saved = source.state_dict()
    after = source.next_batch()
    source.load_state_dict(saved)
    assert all(torch.equal(a, b) for a, b in zip(after, source.next_batch(), strict=True))
