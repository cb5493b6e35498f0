"""Messy image folders on real files: symbolic links (loops, repeats, links out of the tree) and
bad image files of every kind, refused in one line before training, for image_folder,
pix2pix_folder and cyclegan_folder."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import signal
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from commands import run_command
from helpers import assert_refused_before_training
from PIL import Image

from ganexp.config import DataConfig
from ganexp.data import build_data, data_plan
from ganexp.data.folder import check_image, class_files, locate
from ganexp.data.sources import limit_indices
from ganexp.data.translation import check_domains, check_pairs
from ganexp.errors import ConfigError

UNREADABLE = "cannot read as an image: "


class StillRunning(Exception):  # not TimeoutError: os.walk swallows OSErrors
    """Raised by :func:`within` when time is up."""


@contextlib.contextmanager
def within(seconds: int) -> Iterator[None]:
    """Fail, instead of hanging, when the block takes longer than ``seconds``."""

    def expire(signum: int, frame: object) -> None:
        raise StillRunning(f"still running after {seconds} s: a loop?")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def encoded(fmt: str, size: tuple[int, int] = (16, 12), seed: int = 0) -> bytes:
    """A noisy RGB image in ``fmt`` (noise: its data runs through the whole file)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


def huge_png(width: int, height: int) -> bytes:
    """A real PNG that claims ``width`` x ``height`` pixels in under 200 bytes: IHDR, one
    compressed row of IDAT, IEND, each chunk with its CRC."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    row = zlib.compress(bytes(width + 1))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", row) + chunk(b"IEND", b"")


def flipped(data: bytes, at: float = 0.5) -> bytes:
    damaged = bytearray(data)
    damaged[int(len(data) * at)] ^= 0x10
    return bytes(damaged)


def folder_config(root: Path, **overrides: object) -> DataConfig:
    base = {"name": "image_folder", "root": str(root), "channels": 3, "num_classes": None}
    return DataConfig(
        **{"cache_dir": str(root.parent), "search": [], "download": False} | base | overrides
    )


def class_folders(root: Path, per_class: int = 3) -> None:
    """root/a and root/b, ``per_class`` PNGs each."""
    for k, name in enumerate("ab"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            (root / name / f"{i}.png").write_bytes(encoded("PNG", seed=10 * k + i))


def refusal(call: Callable[[], object]) -> str:
    with pytest.raises(ConfigError) as error:
        call()
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# -- links ---------------------------------------------------------------------------------------


def test_links_never_loop_and_every_folder_is_read_once(tmp_path: Path, capsys) -> None:
    root = tmp_path / "images"
    class_folders(root)
    outside = tmp_path / "outside"  # a folder of images out of the tree, linked from class b
    outside.mkdir()
    (outside / "x.png").write_bytes(encoded("PNG", seed=99))
    (root / "a" / "deep").mkdir()
    (root / "a" / "deep" / "d.png").write_bytes(encoded("PNG", seed=5))
    loops = {
        "a/self": ".",  # its own folder: once multiplied the data (410 examples from 10)
        "a/deep/up": "..",  # a loop two levels long
        "a/root": "../..",  # data.root
        "a/above": "../../..",  # above data.root
        "a/slash": "/",  # the top of the file system
        "b/deep_again": "../a/deep",  # another class's folder: stays in a
    }
    for link, target in loops.items():
        os.symlink(target, root / link)
    os.symlink(outside, root / "b" / "linked")  # followed once
    os.symlink(outside, root / "b" / "linked_again")  # the same folder: not again
    os.symlink(root / "a" / "0.png", root / "b" / "copy.png")  # a link to a file: a copy
    with within(20):
        classes, samples, skipped = class_files(str(root))
    assert classes == ["a", "b"]
    by_class = {
        c: sorted(os.path.relpath(p, root) for p, k in samples if k == i)
        for i, c in enumerate(classes)
    }
    assert by_class == {
        "a": ["a/0.png", "a/1.png", "a/2.png", "a/deep/d.png"],
        "b": ["b/0.png", "b/1.png", "b/2.png", "b/copy.png", "b/linked/x.png"],
    }
    assert sorted(line.split(" -> ")[0] for line in skipped) == sorted(
        [str(root / link) for link in loops] + [str(root / "b" / "linked_again")]
    )
    with within(20):
        found = locate(folder_config(root))
        locate(folder_config(root))  # as the job and the run look again: one note, not three
    assert found.count == 9 and found.class_names == ("a", "b")
    notes = capsys.readouterr().err.strip().splitlines()
    assert len(notes) == 1 and notes[0].startswith(
        f"ganexp: note: data.root='{root}': not following"
    )
    assert "and 6 more" in notes[0]


def test_a_class_folder_that_is_another_or_data_root_itself_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "images"
    class_folders(root)
    os.symlink("a", root / "c")
    assert refusal(lambda: locate(folder_config(root))) == (
        f"data.root='{root}': class folder 'c' is the same folder as 'a'; "
        "each class needs a folder of its own"
    )
    (root / "c").unlink()
    os.symlink(".", root / "loop")
    assert "class folder 'loop' is data.root or a folder above it" in refusal(
        lambda: locate(folder_config(root))
    )


# -- bad files -----------------------------------------------------------------------------------

PNG, JPEG = encoded("PNG"), encoded("JPEG")
PHOTO = encoded("JPEG", (64, 48))  # its scan data, not its header, is most of the file
BAD_FILES = {
    "empty.png": (b"", "an empty file (0 bytes)"),
    "text.png": (b"just some text", "not an image file PIL recognizes"),
    "pdf.jpg": (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "not an image file PIL recognizes"),
    "signature_only.png": (PNG[:8], "not an image file PIL recognizes"),
    "header_only.jpg": (JPEG[:200], "a truncated or damaged header"),
    "half.png": (PNG[: len(PNG) // 2], "truncated or damaged (OSError: image file is truncated"),
    "half.jpg": (
        PHOTO[: len(PHOTO) // 2],
        "truncated or damaged (OSError: image file is truncated",
    ),
    "no_end_marker.jpg": (PHOTO[:-2], "truncated or damaged (OSError: image file is truncated"),
    "flipped_byte.png": (flipped(PNG), "truncated or damaged (OSError: broken data stream"),
    "half.bmp": (encoded("BMP")[:-40], "truncated or damaged (OSError: image file is truncated"),
    "half.webp": (encoded("WEBP")[:-40], "a truncated or damaged header"),
    "bomb.png": (huge_png(15000, 15000), "too large to decode safely: over 178956970 pixels"),
    "big.png": (
        huge_png(12000, 10000),  # PIL would only warn, and then decode 120 million pixels
        "too large to decode safely: 12000x10000 is 120000000 pixels, at most 89478485",
    ),
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_a_bad_image_file_is_refused_in_one_line_naming_it(tmp_path: Path, name: str) -> None:
    data, reason = BAD_FILES[name]
    assert len(data) < 10_000  # the decompression bombs too: small on disk
    root = tmp_path / "images"
    class_folders(root)
    bad = root / "b" / name
    bad.write_bytes(data)
    message = refusal(lambda: locate(folder_config(root)))
    assert message.startswith(f"data.root='{bad}': {UNREADABLE}{reason}"), message


def test_files_that_are_not_images_on_disk_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "images"
    class_folders(root)
    cases = {
        "dangling.png": (
            lambda p: os.symlink("gone.png", p),
            "a link to a missing file (gone.png)",
        ),
        "loop.png": (lambda p: os.symlink("loop.png", p), "Too many levels of symbolic links"),
        "fifo.png": (os.mkfifo, "not a regular file"),  # would block a reader forever
        "device.png": (lambda p: os.symlink("/dev/zero", p), "not a regular file"),
    }
    for name, (make, reason) in cases.items():
        path = root / "b" / name
        make(path)
        with within(20):
            message = refusal(lambda: locate(folder_config(root)))
        assert message == f"data.root='{path}': {UNREADABLE}{reason}"
        path.unlink()


def as_nobody(call: Callable[[], object]) -> str:
    """``call()`` in a process without root's right to read anything (as ``nobody`` when this
    is root); its ConfigError's message, or '' when it raised none."""
    if os.geteuid() != 0:
        try:
            call()
        except ConfigError as error:
            return str(error)
        return ""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root, call, report, and never return into pytest
        message = ""
        try:
            os.setgid(65534)
            os.setuid(65534)
            call()
        except ConfigError as error:
            message = str(error)
        except BaseException as error:
            message = f"unexpected {type(error).__name__}: {error}"
        finally:
            os.write(write, message.encode())
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    return message


def test_unreadable_files_and_folders_are_refused() -> None:
    with tempfile.TemporaryDirectory() as tmp:  # not under pytest's tmp_path: nobody may enter
        os.chmod(tmp, 0o755)
        root = Path(tmp) / "images"
        class_folders(root)
        for path in root.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        root.chmod(0o755)
        assert as_nobody(lambda: locate(folder_config(root))) == ""
        secret = root / "b" / "1.png"
        secret.chmod(0o000)
        assert as_nobody(lambda: locate(folder_config(root))) == (
            f"data.root='{secret}': {UNREADABLE}Permission denied"
        )
        secret.chmod(0o644)
        (root / "a" / "closed").mkdir(mode=0o000)
        assert as_nobody(lambda: locate(folder_config(root))) == (
            f"data.root='{root / 'a' / 'closed'}': cannot list the folder: Permission denied"
        )
        domains = Path(tmp) / "domains"
        for folder in ("trainA", "trainB", "testA", "testB"):
            (domains / folder).mkdir(parents=True)
            (domains / folder / "0.png").write_bytes(PNG)
            (domains / folder / "0.png").chmod(0o644)
            (domains / folder).chmod(0o755)
        domains.chmod(0o755)
        (domains / "testB").chmod(0o000)
        cfg = folder_config(domains, name="cyclegan_folder", num_classes=0)
        assert as_nobody(lambda: check_domains(cfg)) == (
            f"data.root='{domains / 'testB'}': cannot list the folder: Permission denied"
        )


def test_whole_images_in_every_format_pass_and_their_sizes_come_from_the_header(
    tmp_path: Path,
) -> None:
    files = {
        "a.png": PNG,
        "b.jpg": JPEG,
        "padded.jpeg": JPEG + bytes(64),  # bytes after the end marker: decoded, and whole
        "no_iend.png": PNG[:-12],  # every pixel there, only IEND missing: decoded, and whole
        "c.bmp": encoded("BMP"),
        "d.webp": encoded("WEBP"),
        "e.tiff": encoded("TIFF"),
        "f.ppm": encoded("PPM"),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        assert check_image(str(tmp_path / name)) == (16, 12), name


def test_a_file_changed_after_its_check_is_checked_again(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(PNG)
    assert check_image(str(path)) == (16, 12)
    path.write_bytes(PNG[: len(PNG) // 2])
    assert "truncated" in refusal(lambda: check_image(str(path)))


def test_only_the_files_data_limit_keeps_are_checked(tmp_path: Path) -> None:
    root = tmp_path / "images"
    class_folders(root, per_class=10)
    paths = [Path(path) for path, _ in class_files(str(root))[1]]
    kept = set(limit_indices(len(paths), 5).tolist())
    unused = paths[min(set(range(len(paths))) - kept)]
    unused.write_bytes(b"")
    assert locate(folder_config(root, limit=5)).count == 20  # never read: not checked
    assert refusal(lambda: locate(folder_config(root))).startswith(f"data.root='{unused}'")
    used = paths[min(kept)]
    used.write_bytes(b"")
    assert refusal(lambda: locate(folder_config(root, limit=5))).startswith(f"data.root='{used}'")


# -- while training ------------------------------------------------------------------------------


def test_a_file_damaged_during_training_stops_it_in_one_line_from_a_worker(tmp_path: Path) -> None:
    """The check runs before training; a file damaged later is still one line, also when a
    DataLoader worker process meets it."""
    root = tmp_path / "images"
    class_folders(root, per_class=2)
    cfg = folder_config(root, image_size=8, num_workers=1, loader="dataloader")
    source = build_data(cfg, 4, torch.device("cpu"), seed=0)
    damaged = root / "a" / "1.png"
    damaged.write_bytes(PNG[:40])
    with pytest.raises(ConfigError) as error:
        for _ in range(3):  # every batch holds all four images
            source.next_batch()
    assert str(error.value).startswith(f"data.root='{damaged}': {UNREADABLE}")
    assert "\n" not in str(error.value) and "Traceback" not in str(error.value)


# -- translation folders -------------------------------------------------------------------------


def test_pix2pix_and_cyclegan_folders_check_every_file_before_any_work(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs"
    for split in ("train", "test"):
        (pairs / split).mkdir(parents=True)
        for i in range(3):
            (pairs / split / f"{i}.png").write_bytes(encoded("PNG", (24, 12), seed=i))
    cfg = folder_config(pairs, name="pix2pix_folder", num_classes=0)
    data_plan(cfg)
    check_pairs(cfg)
    bad = pairs / "test" / "1.png"
    bad.write_bytes(huge_png(30000, 15000))
    assert refusal(lambda: check_pairs(cfg)).startswith(
        f"data.root='{bad}': {UNREADABLE}too large to decode safely"
    )

    domains = tmp_path / "domains"
    for folder in ("trainA", "trainB", "testA", "testB"):
        (domains / folder).mkdir(parents=True)
        for i in range(2):
            (domains / folder / f"{i}.jpg").write_bytes(encoded("JPEG", seed=i))
    cfg = folder_config(domains, name="cyclegan_folder", num_classes=0)
    data_plan(cfg)
    check_domains(cfg)
    for folder, check in (("trainB", data_plan), ("testA", check_domains)):
        bad = domains / folder / "0.jpg"
        bad.write_bytes(JPEG[:-2])
        assert refusal(functools.partial(check, cfg)).startswith(
            f"data.root='{bad}': {UNREADABLE}truncated"
        )
        bad.write_bytes(JPEG)


# -- through the command line --------------------------------------------------------------------


def run_ganexp(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return run_command("ganexp", *args, cwd=cwd, env=env, timeout=300)


@pytest.mark.slow  # a ganexp process; the same checks in-process are in the fast tier
def test_a_looping_folder_with_a_truncated_image_is_refused_before_any_run(tmp_path: Path) -> None:
    root = tmp_path / "images"
    class_folders(root)
    os.symlink(".", root / "a" / "self")
    os.symlink("../..", root / "b" / "up")
    bad = root / "b" / "1.png"
    bad.write_bytes(PNG[: len(PNG) // 2])
    run_dir = tmp_path / "run"
    args = ("experiment=smoke", "logger=none", "data=image_folder", f"data.root={root}")
    result = run_ganexp(tmp_path, *args, "data.num_workers=2", f"hydra.run.dir={run_dir}")
    assert_refused_before_training(result, run_dir, f"data.root='{bad}': {UNREADABLE}truncated")
    notes = [line for line in result.stderr.splitlines() if line.startswith("ganexp: note: ")]
    assert notes == [
        f"ganexp: note: data.root='{root}': not following {root}/a/self -> {root}/a and 1 more: "
        "each folder is read once, and a link to one already read (a loop or a repeat) is skipped"
    ]
