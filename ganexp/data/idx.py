"""The idx format of the MNIST family: its header, read without decoding any image."""

from __future__ import annotations

import gzip
import math
import struct
from typing import IO

from ganexp.errors import ConfigError

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
