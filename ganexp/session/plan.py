"""A job's plan: what its checks found, handed to the run so that nothing is read twice."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from ganexp.config import RunConfig
    from ganexp.data import DataSpec


@dataclass(frozen=True)
class Plan:
    """One job, checked: its typed and resolved config, its data's spec, the checkpoint it
    continues from (read and its hash verified, once) and its networks built on the meta
    device for the checks. :func:`ganexp.session.run.run` trains from it."""

    cfg: RunConfig
    resolved: dict[str, Any]
    spec: DataSpec
    resumed: tuple[dict[str, Any], Path] | None  # (state, path); replicas read their own
    generator: nn.Module
    discriminator: nn.Module
    stamp: tuple[int, int] | None  # the read checkpoint's mtime and size
