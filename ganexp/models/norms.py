"""The one norm factory: every normalization a network can use, built from its config name.

Activation norms (batch, layer, instance, group, virtual_batch) are layers placed after a linear
or conv layer, which then carries no bias (the norm's shift replaces it). Spectral norm is a
reparametrization of the weights instead, applied to every linear/conv layer of the network by
:func:`apply_weight_norm`. Virtual batch norm also needs the network's input to carry its
reference batch: :class:`WithReferenceBatch` wraps a generator that uses it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm

from ganexp.config import Norm
from ganexp.errors import ConfigError

# custom: the user's class (norm._target_), placed and built like these (ganexp.session.build)
ACTIVATION_NORMS = (
    Norm.batch,
    Norm.layer,
    Norm.instance,
    Norm.group,
    Norm.virtual_batch,
    Norm.custom,
)


class VirtualBatchNorm(nn.Module):
    """Virtual batch normalization (Salimans et al. 2016, sec. 3.4), as openai/improved-gan's
    ``VBNL``: the first ``reference_size`` rows of the input are the reference batch, chosen once
    and fixed at the start of training (:class:`WithReferenceBatch` puts them there), and
    normalized with their own statistics; every other example x is normalized with the
    reference's statistics and its own mixed in at 1/(R + 1):

        mu = 1/(R+1) mean(x) + R/(R+1) mean(ref),  m2 = 1/(R+1) mean(x^2) + R/(R+1) mean(ref^2),
        out = (x - mu) / sqrt(eps + m2 - mu^2) * exp(g) + b,

    means per channel (over the pixels of x; over the reference's examples and pixels). The scale
    is exp(g) with g ~ N(0, 0.02) at the start (VBNL's "log scale"), the shift starts at 0.
    Deviation, named: VBNL mixes in the mean of the whole current batch (``reduce_mean(x, [0, 1,
    2])``), so an example's output depends on its batch mates; here, as the paper defines it and
    as VBNL does for a batch of one, each example mixes in only itself, so a sample does not
    depend on what it is drawn with. The reference statistics are recomputed at every call from
    the current weights, with gradients through them, as in the paper's graph."""

    def __init__(self, channels: int, reference_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.reference_size = reference_size
        self.eps = eps
        self.log_scale = nn.Parameter(torch.randn(channels) * 0.02)
        self.shift = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.reference_size
        view = (1, -1) + (1,) * (x.dim() - 2)
        reference, own = x[:size], x[size:]
        ref_dims = (0, *range(2, x.dim()))
        ref_mean = reference.mean(ref_dims, keepdim=True)
        ref_sq = reference.square().mean(ref_dims, keepdim=True)
        own_dims = tuple(range(2, x.dim()))
        own_mean = own.mean(own_dims, keepdim=True) if own_dims else own
        own_sq = own.square().mean(own_dims, keepdim=True) if own_dims else own.square()
        new = 1 / (size + 1)
        mean = new * own_mean + (1 - new) * ref_mean
        mean_sq = new * own_sq + (1 - new) * ref_sq
        scale, shift = self.log_scale.exp().view(view), self.shift.view(view)
        out = torch.cat(
            [
                _standardize(reference, ref_mean, ref_sq, self.eps),
                _standardize(own, mean, mean_sq, self.eps),
            ]
        )
        return out * scale + shift


def _standardize(x: torch.Tensor, mean: torch.Tensor, mean_sq: torch.Tensor, eps: float):
    return (x - mean) / torch.sqrt(eps + mean_sq - mean.square())


class WithReferenceBatch(nn.Module):
    """A generator whose virtual batch norm layers need a reference batch: a fixed batch of
    ``reference_size`` latent codes (and classes, for a cGAN), drawn once from ``seed``, goes
    through the network in front of every batch, and only the batch's own outputs come back.
    This doubles the generator's work at the training batch size: what VBN costs."""

    def __init__(
        self, generator: nn.Module, reference_size: int, z_dim: int, num_classes: int, seed: int
    ) -> None:
        super().__init__()
        self.generator = generator
        draw = torch.Generator().manual_seed(seed)
        self.register_buffer("reference_z", torch.randn(reference_size, z_dim, generator=draw))
        labels = torch.randint(max(num_classes, 1), (reference_size,), generator=draw)
        self.register_buffer("reference_labels", labels if num_classes else None)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        size = len(self.reference_z)
        z = torch.cat([self.reference_z.to(z.dtype), z])
        if labels is not None:
            labels = torch.cat([self.reference_labels, labels])
        return self.generator(z, labels)[size:]


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
    reference_size: int = 0,
) -> nn.Module:
    """A norm layer for ``channels`` features (``spatial``: NCHW maps, else NC vectors).

    Layer norm over conv maps is GroupNorm with one group: it normalizes each sample over (C, H, W)
    with a per-channel affine, the form used in WGAN-GP critics.
    """
    if kind == Norm.batch:
        return nn.BatchNorm2d(channels, eps=eps) if spatial else nn.BatchNorm1d(channels, eps=eps)
    if kind == Norm.virtual_batch:
        if not reference_size:
            raise ConfigError(key, kind.value, "virtual batch norm is for the generator only")
        return VirtualBatchNorm(channels, reference_size, eps)
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


class SpectralNorm(_SpectralNorm):
    """torch's spectral norm parametrization (``nn.utils.parametrizations.spectral_norm``), with
    its power iteration written without ``out=`` (which ``torch.func.vmap`` cannot batch), so
    that replicas (``trainer.replicas``) can run it; the same arithmetic, the same state dict."""

    @torch.no_grad()
    def _power_method(self, weight_mat: torch.Tensor, n_power_iterations: int) -> None:
        for _ in range(n_power_iterations):
            self._u.copy_(F.normalize(torch.mv(weight_mat, self._v), dim=0, eps=self.eps))
            self._v.copy_(F.normalize(torch.mv(weight_mat.H, self._u), dim=0, eps=self.eps))


def spectral_norm(module: nn.Module, name: str = "weight") -> nn.Module:
    """``nn.utils.parametrizations.spectral_norm(module)`` with :class:`SpectralNorm`."""
    weight = getattr(module, name)
    dim = (
        1 if isinstance(module, nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d) else 0
    )
    parametrize.register_parametrization(module, name, SpectralNorm(weight, 1, dim, 1e-12))
    return module


def apply_weight_norm(net: nn.Module, kind: Norm) -> nn.Module:
    """Spectral norm on every linear/conv weight of ``net`` when ``kind`` is spectral."""
    if kind == Norm.spectral:
        for module in net.modules():
            if isinstance(module, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
                spectral_norm(module)
    return net
