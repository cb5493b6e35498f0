"""Pieces both architectures share: the norm settings of one network and label conditioning."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ganexp.config import Norm
from ganexp.models.norms import has_activation_norm, make_norm


@dataclass(frozen=True)
class NormSpec:
    """The normalization of one network, with the config key that chose it (for errors)."""

    kind: Norm
    num_groups: int = 8
    eps: float = 1e-5
    key: str = "norm"

    @property
    def bias(self) -> bool:
        """Layers followed by an activation norm carry no bias."""
        return not has_activation_norm(self.kind)

    def layer(self, channels: int, *, spatial: bool) -> nn.Module:
        return make_norm(
            self.kind,
            channels,
            spatial=spatial,
            num_groups=self.num_groups,
            eps=self.eps,
            key=self.key,
        )


def one_hot(labels: torch.Tensor | None, num_classes: int) -> torch.Tensor | None:
    """Float one-hot codes for conditioning, or None for an unconditional network."""
    if num_classes == 0:
        return None
    if labels is None:
        raise ValueError("a conditional network needs class labels")
    return F.one_hot(labels, num_classes).float()
