"""The one norm factory: every normalization a network can use, built from its config name.

Activation norms (batch, layer, instance, group) are layers placed after a linear or conv layer,
which then carries no bias (the norm's shift replaces it). Spectral norm is a reparametrization of
the weights instead, applied to every linear/conv layer of the network by :func:`apply_weight_norm`.
"""

from __future__ import annotations

from torch import nn

from ganexp.config import Norm
from ganexp.errors import ConfigError

ACTIVATION_NORMS = (Norm.batch, Norm.layer, Norm.instance, Norm.group)


def has_activation_norm(kind: Norm) -> bool:
    """Whether a layer followed by this norm should drop its bias."""
    return kind in ACTIVATION_NORMS


def make_norm(
    kind: Norm,
    channels: int,
    *,
    spatial: bool,
    num_groups: int = 8,
    eps: float = 1e-5,
    key: str = "norm",
) -> nn.Module:
    """A norm layer for ``channels`` features (``spatial``: NCHW maps, else NC vectors).

    Layer norm over conv maps is GroupNorm with one group: it normalizes each sample over (C, H, W)
    with a per-channel affine, the form used in WGAN-GP critics.
    """
    if kind == Norm.batch:
        return nn.BatchNorm2d(channels, eps=eps) if spatial else nn.BatchNorm1d(channels, eps=eps)
    if kind == Norm.layer:
        return nn.GroupNorm(1, channels, eps=eps) if spatial else nn.LayerNorm(channels, eps=eps)
    if kind == Norm.instance:
        if not spatial:
            raise ConfigError(
                key,
                kind.value,
                "instance norm needs spatial dimensions (dcgan); for mlp use "
                "batch, layer, group, spectral or none",
            )
        return nn.InstanceNorm2d(channels, eps=eps, affine=True)
    if kind == Norm.group:
        if channels % num_groups:
            raise ConfigError(
                "norm.num_groups",
                num_groups,
                f"must divide every normalized channel count; {key}={kind.value} has a layer "
                f"with {channels} channels",
            )
        return nn.GroupNorm(num_groups, channels, eps=eps)
    return nn.Identity()


def apply_weight_norm(net: nn.Module, kind: Norm) -> nn.Module:
    """Spectral norm on every linear/conv weight of ``net`` when ``kind`` is spectral."""
    if kind == Norm.spectral:
        for module in net.modules():
            if isinstance(module, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
                nn.utils.parametrizations.spectral_norm(module)
    return net
