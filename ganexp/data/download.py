"""torchvision's download as a last resort that fails fast without a network."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager

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
