"""Folders of image files: listed without loops, every file checked before training.

``data=image_folder`` reads one subfolder of images per class under ``data.root`` (torchvision's
ImageFolder layout, subfolders of a class folder included), or, with no subfolder, the images in
``data.root`` itself, unlabelled; the translation folders
(:mod:`ganexp.data.translation`) list their own files and check them here too.

Links. A link to a file is read as the file (each link one example, as a copy would be). A link
to a folder is followed unless the folder it reaches is one already read: every real folder is
read at most once, and folders reached without links come first, so a file belongs to the class
it lies in. A link back to a folder above it (a loop), a second link to one folder, and a link to
``data.root`` or anything above it are not followed, and one note line names them. A class folder
that is the same folder as another class's, or as ``data.root`` or a folder above it, is refused.

Checks (:func:`check_image`), before any run folder exists, each one line naming the file: a
dangling link, anything but a regular file, an empty file, a file that cannot be opened, one PIL
does not recognize as an image, an image of more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (a
decompression bomb), and a file that ends before its image does. That last check is cheap for
PNG (the CRC of every chunk through IEND, PIL's ``verify``) and JPEG (the end-of-image marker);
a file that fails it, and any other format, is decoded in full and passes if that succeeds.
"""

from __future__ import annotations

import ast
import os
import stat
import sys
import warnings
from collections import deque
from collections.abc import Callable
from typing import BinaryIO

from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS

from ganexp.config import DataConfig
from ganexp.data.sources import limit_indices
from ganexp.data.spec import Found
from ganexp.errors import ConfigError

_MODES = {1: "L", 3: "RGB"}
_LAYOUT = f"images ({', '.join(IMG_EXTENSIONS)}), in one subfolder per class or unlabelled"
_UNREADABLE = "cannot read as an image: "
_JPEG_END = b"\xff\xd9"
# per process: each file checked once while it is unchanged, each skipped link noted once
_CHECKED: dict[str, tuple[tuple[int, ...], tuple[int, int]]] = {}
_NOTED: set[str] = set()


class UnreadableImage(ConfigError):
    """An image file that could not be decoded, in one line.

    A DataLoader worker's error reaches the main process rebuilt as ``type(error)(report)``, the
    report being the worker's whole traceback; its last line is this error's own message, so the
    error is made again from that line alone and stays one line.
    """

    def __init__(self, path: str, reason: str | None = None) -> None:
        if reason is None:  # rebuilt from a DataLoader worker's report
            message = path.rstrip().splitlines()[-1].partition(": ")[2]
            quoted, _, reason = message.removeprefix("data.root=").partition(f": {_UNREADABLE}")
            path = ast.literal_eval(quoted)
        super().__init__("data.root", path, _UNREADABLE + reason)


def load_image(path: str, mode: str) -> Image.Image:
    """Open an image converted to ``mode``; an unreadable file is an UnreadableImage naming it."""
    try:
        with Image.open(path) as image:
            return image.convert(mode)
    except Exception as err:  # a damaged file can make PIL's decoders raise almost anything
        raise UnreadableImage(path, _said(err)) from None


def _said(err: Exception) -> str:
    """What an exception says, on one line."""
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def check_image(path: str, key: str = "data.root") -> tuple[int, int]:
    """The (width, height) of the image file at ``path``, once it is known to be readable
    whole (see the module's docstring); a ConfigError under ``key`` naming the file if not.
    A file is checked again only when its inode, size or modification time changed."""
    try:
        info = os.stat(path)
    except OSError as err:
        if os.path.islink(path) and isinstance(err, FileNotFoundError):
            reason = f"a link to a missing file ({os.readlink(path)})"
        else:
            reason = err.strerror or str(err)
        raise ConfigError(key, path, _UNREADABLE + reason) from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(key, path, _UNREADABLE + "not a regular file")
    if info.st_size == 0:
        raise ConfigError(key, path, _UNREADABLE + "an empty file (0 bytes)")
    signature = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    known = _CHECKED.get(path)
    if known is not None and known[0] == signature:
        return known[1]
    try:
        size = _whole_image_size(path)
    except ValueError as err:
        raise ConfigError(key, path, _UNREADABLE + str(err)) from None
    _CHECKED[path] = (signature, size)
    return size


def _whole_image_size(path: str) -> tuple[int, int]:
    """(width, height) of a readable, whole image; ValueError saying what is wrong if not."""
    try:
        with open(path, "rb") as file, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below
            return _whole_image_in(file)
    except OSError as err:  # PIL's own errors are ValueErrors by now: this is open's
        raise ValueError(err.strerror or str(err)) from None


def _whole_image_in(file: BinaryIO) -> tuple[int, int]:
    try:
        image = Image.open(file)
    except Image.UnidentifiedImageError:
        raise ValueError("not an image file PIL recognizes") from None
    except Image.DecompressionBombError:
        raise ValueError(_too_large(f"over {2 * Image.MAX_IMAGE_PIXELS} pixels")) from None
    except Exception as err:  # a damaged header can make PIL raise almost anything
        raise ValueError(f"a truncated or damaged header ({_said(err)})") from None
    with image:
        width, height = image.size
        if width * height > Image.MAX_IMAGE_PIXELS:
            raise ValueError(_too_large(f"{width}x{height} is {width * height} pixels"))
        if _ends_whole(image, file):
            return width, height
    file.seek(0)
    try:
        with Image.open(file) as image:
            image.load()
    except Exception as err:  # as above: whatever the decoder raises on damaged data
        raise ValueError(f"truncated or damaged ({_said(err)})") from None
    return width, height


def _too_large(size: str) -> str:
    limit = Image.MAX_IMAGE_PIXELS
    return f"too large to decode safely: {size}, at most {limit} (PIL's decompression-bomb limit)"


def _ends_whole(image: Image.Image, file: BinaryIO) -> bool:
    """The cheap test that an opened image's file holds all of it: PNG's chunks, each with the
    right CRC, through IEND; JPEG's end-of-image marker as the last two bytes. False for other
    formats and for files that fail it (they are then decoded in full)."""
    if image.format == "PNG":
        try:
            image.verify()
        except Exception:  # any failure means: decode it to know
            return False
        return True
    if image.format == "JPEG":
        file.seek(-len(_JPEG_END), os.SEEK_END)
        return file.read() == _JPEG_END
    return False


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def _identity(path: str) -> tuple[int, int]:
    """The real folder a path reaches (links followed), as (device, inode)."""
    try:
        info = os.stat(path)
    except OSError as err:
        raise ConfigError("data.root", path, f"cannot read the folder: {err.strerror}") from None
    return info.st_dev, info.st_ino


def _above(root: str) -> set[tuple[int, int]]:
    """``root`` and every folder above it: a link to any of them would loop."""
    folders, path = set(), os.path.realpath(root)
    while True:
        folders.add(_identity(path))
        parent = os.path.dirname(path)
        if parent == path:
            return folders
        path = parent


def _is_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a link looping onto itself: not a folder (check_image names it, if an image)
        return False


def _scan(folder: str) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except OSError as err:
        raise ConfigError("data.root", folder, f"cannot list the folder: {err.strerror}") from None


def class_files(root: str) -> tuple[list[str], list[tuple[str, int]], list[str]]:
    """The class names, the (image path, class index) of every image file in the class folders
    under ``root`` in ImageFolder's order, and the links to folders not followed ('link ->
    folder'): the links policy of the module docstring. A folder with no subfolder holds one
    unlabelled set: no class names, its own images."""
    read = _above(root)
    classes: list[str] = []
    for entry in _scan(root):
        if not _is_folder(entry):
            continue
        folder = _identity(entry.path)
        if folder in read:
            same = [name for name in classes if _identity(os.path.join(root, name)) == folder]
            what = f"the same folder as {same[0]!r}" if same else "data.root or a folder above it"
            allowed = f"class folder {entry.name!r} is {what}; each class needs a folder of its own"
            raise ConfigError("data.root", root, allowed)
        read.add(folder)
        classes.append(entry.name)
    found: list[tuple[int, str, str]] = []
    skipped: list[str] = []

    def unread(path: str) -> bool:
        folder = _identity(path)
        if folder in read:
            skipped.append(f"{path} -> {os.path.realpath(path)}")
            return False
        read.add(folder)
        return True

    real = [(os.path.join(root, name), index) for index, name in enumerate(classes)]
    links: deque[tuple[str, int]] = deque()
    while real or links:  # every real folder first, then the links, breadth first
        if real:
            folder, index = real.pop()
        else:
            folder, index = links.popleft()
            if not unread(folder):
                continue
        for entry in _scan(folder):
            if _is_folder(entry) and entry.is_symlink():
                links.append((entry.path, index))
            elif _is_folder(entry):
                if unread(entry.path):
                    real.append((entry.path, index))
            elif _is_image(entry.name):
                found.append((index, folder, entry.name))
    if not classes:  # a flat folder: its own images, unlabelled
        found = [(0, root, entry.name) for entry in _scan(root) if _is_image(entry.name)]
    found.sort()
    samples = [(os.path.join(folder, name), index) for index, folder, name in found]
    return classes, samples, sorted(skipped)


class ImageFiles(Dataset):
    """(image, class index) pairs of listed files, each decoded when it is drawn (what
    torchvision's ImageFolder holds: ``targets``, and ``transform`` applied to each image)."""

    def __init__(self, samples: list[tuple[str, int]], mode: str) -> None:
        self.samples = samples
        self.targets = [target for _, target in samples]
        self.mode = mode
        self.transform: Callable[[Image.Image], object] | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[object, int]:
        path, target = self.samples[index]
        image = load_image(path, self.mode)
        return (image if self.transform is None else self.transform(image)), target


def _note_skipped(root: str, skipped: list[str]) -> None:
    """One line on stderr, once per process, naming the links to folders not followed."""
    new = [link for link in skipped if link not in _NOTED]
    if not new:
        return
    _NOTED.update(new)
    more = f" and {len(new) - 1} more" if len(new) > 1 else ""
    print(
        f"ganexp: note: data.root={root!r}: not following {new[0]}{more}: each folder is read "
        "once, and a link to one already read (a loop or a repeat) is skipped",
        file=sys.stderr,
    )


def locate(cfg: DataConfig) -> Found:
    """List the images and classes and check every file data.limit keeps (headers and ends,
    see :func:`check_image`); ConfigError naming the first bad one, or if there are none."""
    if not cfg.root:
        raise ConfigError("data.root", None, f"data.name=image_folder needs a DIR with {_LAYOUT}")
    root = os.path.expanduser(cfg.root)
    if not os.path.isdir(root):
        raise ConfigError("data.root", cfg.root, f"not a folder; expected a DIR with {_LAYOUT}")
    if cfg.channels not in _MODES:
        raise ConfigError("data.channels", cfg.channels, "allowed: 1, 3")
    classes, samples, skipped = class_files(root)
    if not samples:
        raise ConfigError("data.root", cfg.root, f"no images; expected {_LAYOUT}")
    empty = sorted(set(range(len(classes))) - {index for _, index in samples})
    if empty:
        names = ", ".join(classes[index] for index in empty)
        raise ConfigError(
            "data.root", cfg.root, f"no images in the classes {names}; expected {_LAYOUT}"
        )
    _note_skipped(cfg.root, skipped)
    keep = limit_indices(len(samples), cfg.limit)
    for index in range(len(samples)) if keep is None else keep.tolist():
        check_image(samples[index][0])
    dataset = ImageFiles(samples, _MODES[cfg.channels])
    return Found(
        channels=cfg.channels,
        class_names=tuple(classes),
        count=len(samples),
        load=lambda: dataset,
        to_tensors=None,
    )
