"""Finding a data set's files offline: where they are looked for, torchvision's download as a
last resort that fails fast without a network, the MNIST family's idx headers read without
decoding an image, and local copies staged into torchvision's layout once, atomically."""

from __future__ import annotations

import gzip
import math
import os
import shutil
import socket
import struct
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO

from omegaconf import OmegaConf

from ganexp.config import DataConfig
from ganexp.errors import ConfigError


def local_places(cfg: DataConfig) -> list[tuple[str, str]]:
    """(config key, folder) for data.root, then each folder of data.search."""
    places = [("data.root", os.path.expanduser(cfg.root))] if cfg.root else []
    places += [("data.search", os.path.expanduser(folder)) for folder in cfg.search]
    return places


def cache_root(cfg: DataConfig) -> str:
    """``<cache_dir>/data``: where torchvision downloads to and local copies are staged."""
    cache_dir = cfg.cache_dir
    if "${" in cache_dir:  # a DataConfig built in Python, not composed by Hydra, keeps its default
        cache_dir = OmegaConf.create({"dir": cache_dir}).dir
    return os.path.join(os.path.expanduser(cache_dir), "data")


DOWNLOAD_TIMEOUT_S = 10.0


@contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """torchvision opens its URLs without a timeout, so a dead network would hang it."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def try_download(fetch: Callable[[], object]) -> str | None:
    """Run ``fetch`` (a torchvision download); return why it failed, in one line, or None."""
    with socket_timeout(DOWNLOAD_TIMEOUT_S):
        try:
            fetch()
        except (OSError, RuntimeError) as err:
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            return " ... ".join(dict.fromkeys(lines[:1] + lines[-1:])) or type(err).__name__
    return None


IMAGES_MAGIC = 2051  # uint8 data, 3 dimensions (N, H, W)
LABELS_MAGIC = 2049  # uint8 data, 1 dimension (N,)


def open_maybe_gzip(path: str) -> IO[bytes]:
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def read_dims(path: str, magic: int, key: str) -> tuple[int, ...]:
    """The dimensions in an idx file's header (a few bytes, even through gzip).

    A file that is not idx data of the expected kind raises ConfigError naming it.
    """
    ndim = magic & 0xFF
    try:
        with open_maybe_gzip(path) as f:
            header = f.read(4 + 4 * ndim)
    except (OSError, EOFError) as err:
        raise ConfigError(key, path, f"cannot read: {err}") from None
    if len(header) < 4 + 4 * ndim or struct.unpack(">I", header[:4])[0] != magic:
        raise ConfigError(key, path, f"not an idx file with magic number {magic}")
    return struct.unpack(f">{ndim}I", header[4:])


def data_size(dims: tuple[int, ...]) -> int:
    """Bytes of the uncompressed file: header plus one byte per value."""
    return 4 + 4 * len(dims) + math.prod(dims)


def stage(src: str, dst: str, size: int, key: str) -> None:
    """Make ``dst`` an uncompressed copy of ``src`` (decompressing ``.gz``) of ``size`` bytes.

    A ``dst`` of that size with ``src``'s modification time is an earlier copy and is reused.
    The copy is written under a temporary name and renamed, so runs staging the same file at
    once never read a partial one.
    """
    src_stat = os.stat(src)
    if os.path.isfile(dst):
        dst_stat = os.stat(dst)
        if dst_stat.st_size == size and dst_stat.st_mtime_ns == src_stat.st_mtime_ns:
            return
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dst), prefix=f".{os.path.basename(dst)}.")
    try:
        with os.fdopen(fd, "wb") as out, open_maybe_gzip(src) as f:
            shutil.copyfileobj(f, out, 1 << 20)
        if os.path.getsize(tmp) != size:
            raise ConfigError(key, src, f"truncated or corrupt: expected {size} bytes of data")
        os.utime(tmp, ns=(src_stat.st_atime_ns, src_stat.st_mtime_ns))
        os.replace(tmp, dst)
    except (OSError, EOFError) as err:
        raise ConfigError(key, src, f"cannot read: {err}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
