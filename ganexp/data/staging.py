"""Copying a local file into torchvision's folder layout once, atomically."""

from __future__ import annotations

import os
import shutil
import tempfile

from ganexp.data.idx import open_maybe_gzip
from ganexp.errors import ConfigError


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
