"""ganexp.data on real Fashion-MNIST and on small files written here in the real formats."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganexp.config import DataConfig
from ganexp.data import BatchSource, build_data, data_spec, mode_centers
from ganexp.errors import ConfigError

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not FASHION.is_dir(), reason="dataset-fashion-mnist not installed"
)
CPU = torch.device("cpu")


def config(cache: Path, **overrides: object) -> DataConfig:
    """A config that looks nowhere but where the test says."""
    return DataConfig(**{"cache_dir": str(cache), "search": [], "download": False, **overrides})


def batches(source: BatchSource, n: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    return [source.next_batch() for _ in range(n)]


def write_idx(path: Path, array: np.ndarray) -> None:
    """The idx format: big-endian magic (0x08 = uint8, then the rank), dimensions, raw bytes."""
    header = struct.pack(f">I{array.ndim}I", 0x0800 | array.ndim, *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)


def write_mnist(folder: Path, n: int, suffix: str = ".gz") -> np.ndarray:
    """Image i is filled with the value i, so batches tell which examples they hold."""
    folder.mkdir(parents=True, exist_ok=True)
    images = np.repeat(np.arange(n, dtype=np.uint8), 28 * 28).reshape(n, 28, 28)
    labels = np.arange(n) % 10
    write_idx(folder / f"train-images-idx3-ubyte{suffix}", images)
    write_idx(folder / f"train-labels-idx1-ubyte{suffix}", labels)
    return labels


def indices_of(x: torch.Tensor) -> list[int]:
    """Undo write_mnist's encoding: the value of each image, back from [-1, 1]."""
    return ((x[:, 0, 0, 0] + 1) * 127.5).round().long().tolist()


def py2_pickle(entries: dict[str, object]) -> bytes:
    """A dict pickled the way CIFAR's Python 2 files are: keys are byte strings (SHORT_BINSTRING),
    which load as b"data" with encoding="bytes" and as "data" with torchvision's "latin1"."""
    body = b"".join(
        b"U" + bytes([len(key)]) + key.encode() + pickle.dumps(value, protocol=2)[2:-1]
        for key, value in entries.items()
    )
    return b"\x80\x02}(" + body + b"u."


def write_cifar(root: Path, per_batch: int = 8) -> tuple[list[str], list[int]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"class{i}" for i in range(10)]
    train_labels: list[int] = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, per_batch).tolist()
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        entry = {"batch_label": name, "labels": labels, "data": data, "filenames": []}
        (folder / name).write_bytes(py2_pickle(entry))
        if name != "test_batch":
            train_labels += labels
    meta = {"num_cases_per_batch": per_batch, "label_names": names, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(py2_pickle(meta))
    return names, train_labels


@pytest.fixture(scope="module")
def fashion_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the Fashion-MNIST tests, so the Debian copy is staged once."""
    return tmp_path_factory.mktemp("cache")


def fashion(cache: Path, **overrides: object) -> DataConfig:
    return config(cache, search=[str(FASHION)], limit=512, **overrides)


@needs_fashion
@pytest.mark.parametrize("size", [28, 32, 64])
def test_fashion_mnist_batches(fashion_cache: Path, size: int) -> None:
    cfg = fashion(fashion_cache, image_size=size)
    source = build_data(cfg, batch_size=128, device=CPU, seed=0)
    assert source.spec == data_spec(cfg)
    assert source.spec.shape == (1, size, size)
    assert source.spec.size == 512
    assert source.spec.class_names[0] == "T-shirt/top"
    labels = []
    for x, y in batches(source, 4):
        assert x.shape == (128, 1, size, size) and x.dtype == torch.float32
        assert x.min() >= -1 and x.max() <= 1
        assert x.min() == -1 and x.max() == 1  # black background, some white pixels
        assert y is not None and y.dtype == torch.int64
        labels.append(y)
    assert set(torch.cat(labels).tolist()) == set(range(10))
    staged = fashion_cache / "data" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"
    assert staged.stat().st_size == 16 + 60000 * 28 * 28


@needs_fashion
def test_fashion_tensor_and_dataloader_paths_agree(fashion_cache: Path) -> None:
    tensor = build_data(fashion(fashion_cache, loader="tensor"), 64, CPU, seed=3)
    loader = build_data(fashion(fashion_cache, loader="dataloader"), 64, CPU, seed=3)
    assert tensor.spec == loader.spec
    for (x1, y1), (x2, y2) in zip(batches(tensor, 3), batches(loader, 3), strict=True):
        assert torch.equal(y1, y2)  # same sampler, same examples
        assert (x1.min(), x1.max()) == (x2.min(), x2.max()) == (-1, 1)
        assert torch.allclose(x1, x2, atol=1 / 127.5)


@needs_fashion
def test_fashion_limit_is_the_same_subset_for_every_seed(fashion_cache: Path) -> None:
    epochs = []
    for seed in (0, 1):
        source = build_data(fashion(fashion_cache, image_size=28), 64, CPU, seed)
        epoch = torch.cat([x for x, _ in batches(source, 8)])  # 8 x 64 = the 512 kept
        pixels = ((epoch + 1) * 127.5).round().to(torch.uint8).numpy()
        epochs.append(sorted(bytes(image) for image in pixels))
    assert epochs[0] == epochs[1]


@pytest.mark.parametrize("loader", ["tensor", "dataloader"])
def test_an_epoch_visits_every_example_once(tmp_path: Path, loader: str) -> None:
    write_mnist(tmp_path / "mnist", 200)
    cfg = config(tmp_path, name="mnist", root=str(tmp_path / "mnist"), image_size=28, loader=loader)
    source = build_data(cfg, batch_size=64, device=CPU, seed=0)
    seen = [i for x, _ in batches(source, 7) for i in indices_of(x)]  # 448 = 2 epochs + 48
    assert sorted(seen[:200]) == sorted(seen[200:400]) == list(range(200))
    assert seen[:200] != seen[200:400]  # reshuffled
    assert len(set(seen[400:])) == 48


@pytest.mark.parametrize(
    ("loader", "workers"), [("tensor", 0), ("dataloader", 0), ("dataloader", 2)]
)
def test_same_seed_same_batches_and_exact_resume(tmp_path: Path, loader: str, workers: int) -> None:
    write_mnist(tmp_path / "mnist", 100)
    cfg = config(
        tmp_path,
        name="mnist",
        root=str(tmp_path / "mnist"),
        loader=loader,
        num_workers=workers,
        image_size=28,
    )
    first = build_data(cfg, 32, CPU, seed=7)
    taken = [indices_of(x) for x, _ in batches(first, 3)]
    state = first.state_dict()
    later = [indices_of(x) for x, _ in batches(first, 3)]  # crosses an epoch boundary

    again = build_data(cfg, 32, CPU, seed=7)
    assert [indices_of(x) for x, _ in batches(again, 6)] == taken + later
    other = build_data(cfg, 32, CPU, seed=8)
    assert indices_of(other.next_batch()[0]) != taken[0]

    resumed = build_data(cfg, 32, CPU, seed=7)
    resumed.load_state_dict(state)
    assert [indices_of(x) for x, _ in batches(resumed, 3)] == later
    first.load_state_dict(state)  # rewinding a source that has already prefetched
    assert [indices_of(x) for x, _ in batches(first, 3)] == later


@pytest.mark.parametrize("layout", ["flat_gz", "flat_raw", "torchvision"])
def test_mnist_from_idx_files(tmp_path: Path, layout: str) -> None:
    root = tmp_path / "root"
    folder = root / "MNIST" / "raw" if layout == "torchvision" else root
    labels = write_mnist(folder, 30, suffix=".gz" if layout == "flat_gz" else "")
    cfg = config(tmp_path / "cache", name="mnist", root=str(root), image_size=32, num_classes=None)
    source = build_data(cfg, batch_size=30, device=CPU, seed=0)
    assert source.spec == data_spec(cfg)
    assert source.spec.num_classes == 10 and source.spec.size == 30
    x, y = source.next_batch()
    assert x.shape == (30, 1, 32, 32)
    assert y is not None and sorted(y.tolist()) == sorted(labels.tolist())
    staged = tmp_path / "cache" / "data" / "MNIST" / "raw" / "train-images-idx3-ubyte"
    assert staged.exists() == (layout != "torchvision")  # torchvision's layout is read in place
    if staged.exists():
        inode = staged.stat().st_ino
        build_data(cfg, batch_size=30, device=CPU, seed=0)
        assert staged.stat().st_ino == inode  # reused, not staged again


def test_mnist_labels_can_be_dropped_and_channels_must_match(tmp_path: Path) -> None:
    write_mnist(tmp_path / "mnist", 20)
    cfg = config(tmp_path, name="mnist", root=str(tmp_path / "mnist"), num_classes=0)
    source = build_data(cfg, batch_size=8, device=CPU, seed=0)
    assert source.spec.num_classes == 0 and source.spec.class_names == ()
    assert source.next_batch()[1] is None
    with pytest.raises(ConfigError, match=r"data\.channels=3: .*has 1 channel"):
        data_spec(config(tmp_path, name="mnist", root=str(tmp_path / "mnist"), channels=3))
    with pytest.raises(ConfigError, match=r"data\.num_classes=7: .*has 10 classes"):
        data_spec(config(tmp_path, name="mnist", root=str(tmp_path / "mnist"), num_classes=7))


@pytest.mark.parametrize("damage", ["not_gzip", "bad_magic", "truncated"])
def test_corrupt_idx_file_is_a_config_error_naming_it(tmp_path: Path, damage: str) -> None:
    root = tmp_path / "mnist"
    write_mnist(root, 20)
    images = root / "train-images-idx3-ubyte.gz"
    if damage == "not_gzip":
        images.write_bytes(b"this is not gzip data")
    elif damage == "bad_magic":
        write_idx(images, np.zeros((20, 28), dtype=np.uint8))  # rank 2: magic 2050
    else:
        images.write_bytes(gzip.compress(gzip.decompress(images.read_bytes())[:-100]))
    cfg = config(tmp_path / "cache", name="mnist", root=str(root))
    with pytest.raises(ConfigError) as err:
        build_data(cfg, batch_size=8, device=CPU, seed=0)
    assert err.value.value == str(images)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("loader", ["tensor", "dataloader"])
def test_cifar10_from_pickled_batches(tmp_path: Path, loader: str) -> None:
    names, labels = write_cifar(tmp_path / "root")
    cfg = config(
        tmp_path,
        name="cifar10",
        root=str(tmp_path / "root"),
        verify_checksums=False,
        channels=3,
        image_size=32,
        loader=loader,
    )
    source = build_data(cfg, batch_size=40, device=CPU, seed=0)
    assert source.spec == data_spec(cfg)
    assert source.spec.class_names == tuple(names) and source.spec.size == 40
    x, y = source.next_batch()
    assert x.shape == (40, 3, 32, 32) and -1 <= x.min() < x.max() <= 1
    assert y is not None and sorted(y.tolist()) == sorted(labels)


def test_cifar10_checksums_and_channels_are_checked(tmp_path: Path) -> None:
    write_cifar(tmp_path / "root")
    root = str(tmp_path / "root" / "cifar-10-batches-py")  # the batches folder itself works too
    with pytest.raises(ConfigError, match=r"md5.*data\.verify_checksums=false"):
        data_spec(config(tmp_path, name="cifar10", root=root, channels=3))
    cfg = config(tmp_path, name="cifar10", root=root, channels=1, verify_checksums=False)
    with pytest.raises(ConfigError, match=r"data\.channels=1: .*has 3 channel"):
        data_spec(cfg)
    (tmp_path / "root" / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="data_batch_3"):
        data_spec(config(tmp_path, name="cifar10", root=root, channels=3, verify_checksums=False))


def write_png(path: Path, mode: str, size: tuple[int, int], value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 255 - value, 0)
    Image.new(mode, size, color).save(path)


@pytest.mark.parametrize("loader", ["auto", "tensor"])
def test_image_folder_converts_to_the_configured_channels(tmp_path: Path, loader: str) -> None:
    root = tmp_path / "images"
    write_png(root / "cat" / "a.png", "RGB", (40, 30), 200)
    write_png(root / "cat" / "b.png", "RGB", (48, 48), 200)
    write_png(root / "dog" / "c.png", "L", (20, 24), 100)  # grayscale, read as RGB
    cfg = config(tmp_path, name="image_folder", root=str(root), channels=3, num_classes=None)
    cfg.image_size, cfg.loader = 16, loader
    source = build_data(cfg, batch_size=6, device=CPU, seed=0)
    assert source.spec == data_spec(cfg)
    assert source.spec.class_names == ("cat", "dog") and source.spec.size == 3
    x, y = source.next_batch()
    assert x.shape == (6, 3, 16, 16) and y is not None
    dog = x[y == 1]
    assert len(dog) == 2 and torch.equal(dog[:, 0], dog[:, 1])  # gray: equal channels
    assert torch.allclose(dog, torch.tensor(100 / 127.5 - 1))
    assert torch.allclose(x[y == 0][:, 1], torch.tensor(55 / 127.5 - 1))  # green of the cats

    cfg.channels = 1
    x, _ = build_data(cfg, batch_size=3, device=CPU, seed=0).next_batch()
    assert x.shape == (3, 1, 16, 16)


def test_image_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    cfg = config(tmp_path, name="image_folder", root=str(tmp_path / "empty"), num_classes=None)
    with pytest.raises(ConfigError, match=r"data\.root=.*\.png") as err:
        data_spec(cfg)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"data\.root=None"):
        data_spec(config(tmp_path, name="image_folder", root=None, num_classes=None))

    (tmp_path / "empty" / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ConfigError, match=r"broken\.png"):
        build_data(cfg, batch_size=1, device=CPU, seed=0).next_batch()


def test_missing_data_names_both_remedies_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    cfg = config(tmp_path, root=str(tmp_path / "empty"))
    with pytest.raises(ConfigError) as err:
        data_spec(cfg)
    message = str(err.value)
    assert message.startswith("data.root=")
    assert str(tmp_path / "empty") in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "data.root=DIR holding train-images-idx3-ubyte.gz" in message
    assert "\n" not in message
    with pytest.raises(ConfigError, match=r"no CIFAR-10 files found.*data\.download=true"):
        build_data(config(tmp_path, name="cifar10", channels=3), 8, CPU, 0)


def nearest_mode(points: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    return torch.cdist(points, centers).argmin(dim=1)


def test_ring8(tmp_path: Path) -> None:
    cfg = config(tmp_path, name="ring8", modes=8, radius=1.0, std=0.01, num_classes=0)
    source = build_data(cfg, batch_size=4000, device=CPU, seed=0)
    assert source.spec == data_spec(cfg)
    assert source.spec.shape == (2,) and source.spec.size is None
    x, y = source.next_batch()
    assert y is None and x.shape == (4000, 2) and x.dtype == torch.float32
    assert (x.norm(dim=1) - 1).abs().max() < 0.06
    assert torch.allclose(mode_centers(cfg)[2], torch.tensor([0.0, 1.0]), atol=1e-6)
    assert nearest_mode(x, mode_centers(cfg)).unique().numel() == 8


def test_grid25_and_its_resume(tmp_path: Path) -> None:
    cfg = config(tmp_path, name="grid25", modes=25, spacing=2.0, std=0.05, num_classes=0)
    centers = mode_centers(cfg)
    assert sorted(set(centers.flatten().tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    source = build_data(cfg, batch_size=20000, device=CPU, seed=0)
    x, _ = source.next_batch()
    mode = nearest_mode(x, centers)
    assert mode.unique().numel() == 25
    for k in range(25):
        spread = (x[mode == k] - centers[k]).std()
        assert 0.045 < spread < 0.055

    state = source.state_dict()
    expected = source.next_batch()[0]
    again = build_data(cfg, batch_size=20000, device=CPU, seed=0)
    again.load_state_dict(state)
    assert torch.equal(again.next_batch()[0], expected)
    with pytest.raises(ConfigError, match=r"data\.modes=24"):
        data_spec(config(tmp_path, name="grid25", modes=24, num_classes=0))
