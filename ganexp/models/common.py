"""Pieces the architectures share: one network's norm, activation and initialization settings,
label conditioning, and packing (D judging several samples at once)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ganexp.config import Activation, Init, Norm
from ganexp.errors import ConfigError
from ganexp.models.norms import has_activation_norm, make_norm, spectral_norm


@dataclass(frozen=True)
class NormSpec:
    """The normalization of one network, with the config key that chose it (for errors)."""

    kind: Norm
    num_groups: int = 8
    eps: float = 1e-5
    key: str = "norm"
    reference_size: int = 0  # virtual batch norm's reference batch (the generator's)
    custom: Callable[[int, bool], nn.Module] | None = None  # the user's norm: (features, spatial)

    @property
    def bias(self) -> bool:
        """Layers followed by an activation norm carry no bias."""
        return not has_activation_norm(self.kind)

    def layer(self, channels: int, spatial: bool = True) -> nn.Module:
        """A layer of this norm for ``channels`` features (``spatial``: NCHW maps, else NC)."""
        if self.custom is not None:
            return self.custom(channels, spatial)
        return make_norm(
            self.kind,
            channels,
            spatial=spatial,
            num_groups=self.num_groups,
            eps=self.eps,
            key=self.key,
            reference_size=self.reference_size,
        )


def _need(labels: torch.Tensor | None) -> torch.Tensor:
    if labels is None:
        raise ValueError("a conditional network needs class labels")
    return labels


def one_hot(labels: torch.Tensor | None, num_classes: int) -> torch.Tensor | None:
    """Float one-hot codes for conditioning, or None for an unconditional network."""
    if num_classes == 0:
        return None
    return F.one_hot(_need(labels), num_classes).float()


def with_class_code(x: torch.Tensor, labels: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """A network's input vectors (z, or toy points) with the one-hot class next to them (x as it
    is for an unconditional network)."""
    code = one_hot(labels, num_classes)
    return x if code is None else torch.cat([x, code], dim=1)


def with_label_maps(x: torch.Tensor, labels: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """D's input images with the one-hot class as constant maps next to their channels (x as it
    is for an unconditional network)."""
    code = one_hot(labels, num_classes)
    if code is None:
        return x
    maps = code[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
    return torch.cat([x, maps], dim=1)


def concat_classes(num_classes: int, conditioning: str) -> int:
    """The classes one-hot-concatenated to a network's input: all under ``concat``, none
    under ``projection`` (D) or ``cbn`` (G), which condition elsewhere."""
    return num_classes if conditioning == "concat" else 0


class ConditionalNorm(nn.Module):
    """Categorical conditional normalization, G's ``conditioning=cbn`` (conditional batch norm
    of de Vries et al. 2017, as in SNGAN's and BigGAN's generators): the norm layer without its
    own affine, then a scale gamma_y and a shift beta_y of each sample's class y, rows of two
    embeddings. Scales start at 1 and shifts at 0: at first, the plain norm for every class."""

    def __init__(self, norm: nn.Module, channels: int, num_classes: int) -> None:
        super().__init__()
        for name in ("weight", "bias"):  # the class's affine replaces the norm's own
            norm.register_parameter(name, None)
        for flag in ("affine", "elementwise_affine"):
            if hasattr(norm, flag):
                setattr(norm, flag, False)
        self.norm = norm
        self.gamma = nn.Embedding(num_classes, channels)
        self.beta = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        labels = _need(labels)
        shape = (len(labels), -1) + (1,) * (x.dim() - 2)  # per channel of maps or vectors
        return self.norm(x) * self.gamma(labels).view(shape) + self.beta(labels).view(shape)


def norm_layer(norm: NormSpec, channels: int, num_classes: int = 0) -> nn.Module:
    """``norm``'s layer for conv maps; with ``num_classes`` (G's ``cbn``), a
    :class:`ConditionalNorm` whose affine the class picks."""
    layer = norm.layer(channels, spatial=True)
    return ConditionalNorm(layer, channels, num_classes) if num_classes else layer


def conditioned(layer: nn.Module, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """``layer(x)``, with the labels for a class-conditional norm."""
    return layer(x, labels) if isinstance(layer, ConditionalNorm) else layer(x)


class Projection(nn.Module):
    """The projection discriminator's class term (Miyato & Koyama 2018), D's
    ``conditioning=projection``: <embed(y), phi(x)>, added to the unconditional output
    linear(phi(x)), where phi(x) are D's features (what enters its output layer). The embedding
    starts Glorot-uniform, and is spectrally normalized in a spectral-norm D (SNGAN's
    SNEmbedID)."""

    def __init__(self, num_classes: int, features: int, spectral: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_classes, features)
        nn.init.xavier_uniform_(self.embed.weight)
        if spectral:
            spectral_norm(self.embed)

    def forward(self, phi: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return (self.embed(_need(labels)) * phi).sum(dim=1)


class Maxout(nn.Module):
    """A maxout layer (Goodfellow et al. 2013): ``pieces`` affine maps, the unit-wise maximum,
    as Blocks' ``LinearMaxout`` in PacGAN's D. One Linear of ``out * pieces`` units; output unit
    j is the max over its pieces ``j * pieces .. j * pieces + pieces - 1`` (``max``, whose
    backward scatters through the winning index: cheaper than ``amax``'s mask, and the same
    gradient but on exact ties)."""

    def __init__(self, fan_in: int, out: int, pieces: int, bias: bool = True) -> None:
        super().__init__()
        self.pieces = pieces
        self.linear = nn.Linear(fan_in, out * pieces, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return y.view(*y.shape[:-1], -1, self.pieces).max(dim=-1).values


@dataclass(frozen=True)
class ActivationSpec:
    """The nonlinearity of one network's hidden layers, with the config key that chose it.
    ``default`` is the architecture's own: ReLU in G, LeakyReLU(0.2) in D."""

    kind: Activation
    pieces: int = 5
    key: str = "activation"
    discriminator: bool = False

    @property
    def resolved(self) -> Activation:
        if self.kind != Activation.default:
            return self.kind
        return Activation.leaky_relu if self.discriminator else Activation.relu

    def linear(self, fan_in: int, width: int, bias: bool = True) -> nn.Module:
        """A fully connected hidden layer: a Maxout layer, or a Linear the activation follows."""
        if self.resolved == Activation.maxout:
            return Maxout(fan_in, width, self.pieces, bias=bias)
        return nn.Linear(fan_in, width, bias=bias)

    def layer(self, inplace: bool = True) -> nn.Module:
        """The activation after a hidden layer (nothing after a maxout layer). ``inplace=False``
        where its input is used again (a residual block's input feeds the shortcut too)."""
        kind = self.resolved
        if kind == Activation.maxout:
            return nn.Identity()
        if kind == Activation.leaky_relu:
            return nn.LeakyReLU(0.2, inplace=inplace)
        if kind == Activation.tanh:
            return nn.Tanh()
        return nn.ReLU(inplace)

    def conv_only(self, arch: str) -> None:
        """Refuse maxout where layers are convolutions."""
        if self.resolved == Activation.maxout:
            raise ConfigError(self.key, "maxout", f"maxout is for mlp networks, not {arch}")


def dcgan_init(net: nn.Module) -> None:
    """The DCGAN initialization: weights N(0, 0.02), norm scales N(1, 0.02), shifts 0."""
    for module in net.modules():
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif getattr(module, "weight", None) is not None and hasattr(module, "eps"):
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)


def initialize(net: nn.Module, kind: Init, gain: float = 1.0) -> None:
    """Re-initialize ``net``'s weight layers (biases 0; norm layers keep theirs); ``default``
    leaves the architecture's own initialization. ``kaiming`` is He-uniform for the layers an
    activation follows and Glorot-uniform for the output layer, with zero biases: what the
    WGAN-GP toy code (tflib's ``ReLULayer`` / ``Linear``) does. ``gain`` scales ``orthogonal``."""
    if kind == Init.default:
        return
    if kind == Init.dcgan:
        dcgan_init(net)
        return
    layers = [m for m in net.modules() if isinstance(m, nn.Linear | nn.Conv2d | nn.ConvTranspose2d)]
    for i, layer in enumerate(layers):
        last = i == len(layers) - 1
        if kind == Init.xavier or (kind == Init.kaiming and last):
            nn.init.xavier_uniform_(layer.weight)
        elif kind == Init.kaiming:
            nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
        else:
            nn.init.orthogonal_(layer.weight, gain=gain)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)


class Packed(nn.Module):
    """PacGAN's discriminator (Lin et al. 2018): D judges packs of ``pack`` samples, given as
    one input of ``pack`` times the channels (or features). A batch of B samples is B / pack
    consecutive packs; real packs are independent draws because a batch's samples are. D's
    outputs are one per pack."""

    def __init__(self, critic: nn.Module, pack: int) -> None:
        super().__init__()
        self.critic = critic
        self.pack = pack

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.critic(self._packs(x), labels)

    def features(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """D's features of each pack."""
        return self.critic.features(self._packs(x), labels)

    def _packs(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0] // self.pack, self.pack * x.shape[1], *x.shape[2:])


class MinibatchDiscrimination(nn.Module):
    """Minibatch discrimination (Salimans et al. 2016, sec. 3.2), as openai/improved-gan's
    ``MinibatchLayer``: D's features f (N, A) times a tensor T (A, B, C) give M (N, B, C);
    o(x_i)_b = sum over j != i of exp(-||M_i,b - M_j,b||_L1) + bias_b, B kernels of C dims.
    T is weight-normalized as there: theta ~ N(0, 0.05), each (b, c) column scaled to norm
    exp(log_scale), log_scale 0, biases -1. Deviation, named: improved-gan also rescales both at
    a data-dependent initialization; this starts from the plain values."""

    def __init__(self, features: int, kernels: int = 100, dims: int = 5) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.randn(features, kernels, dims) * 0.05)
        self.log_scale = nn.Parameter(torch.zeros(kernels, dims))
        self.bias = nn.Parameter(torch.full((kernels,), -1.0))
        self.width = kernels

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        weight = self.theta * (self.log_scale.exp() / self.theta.norm(dim=0))
        m = torch.einsum("na,abc->nbc", f, weight)
        l1 = (m[:, None] - m[None, :]).abs().sum(-1)  # (N, N, B): ||M_i,b - M_j,b||_1
        others = 1 - torch.eye(len(f), dtype=f.dtype, device=f.device)
        return (torch.exp(-l1) * others[:, :, None]).sum(1) + self.bias


class MinibatchStddev(nn.Module):
    """Minibatch standard deviation (Karras et al. 2018, ProGAN): the batch of N in groups of
    ``group`` samples (the whole batch when smaller; as ProGAN's reshape to [group, N / group],
    group m holds samples m, m + N/group, ...), each feature's standard deviation over its group
    (sqrt(var + 1e-8)), averaged over features: one value per group, given to each of its
    samples as one more feature. ProGAN appends it as a constant map to
    D's last maps; next to the flattened features that enter D's (linear) output layer, as here,
    that is the same input."""

    def __init__(self, group: int = 4) -> None:
        super().__init__()
        self.group = group
        self.width = 1

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        group = min(self.group, len(f))
        while len(f) % group:  # the training batch splits (validated); other calls may not
            group -= 1
        grouped = f.reshape(group, -1, f.shape[1])  # ProGAN's [G, M, ...]: sample g * M + m
        std = (grouped.var(0, unbiased=False) + 1e-8).sqrt().mean(1)  # one per group m
        return std.repeat(group)[:, None]


class BatchStatistic(nn.Module):
    """D with a statistic of the whole batch next to each sample's features (minibatch
    discrimination or standard deviation: D's view of the batch, as packing is at its input):
    D(x) = D's output from its features f(x) + w . s(f)(x), which is D's linear output layer
    applied to the concatenation [f(x), s(f)(x)]."""

    def __init__(self, critic: nn.Module, statistic: nn.Module) -> None:
        super().__init__()
        self.critic = critic
        self.statistic = statistic
        self.linear = nn.Linear(statistic.width, 1, bias=False)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        f = self.critic.features(x, labels)
        return self.critic.head(f, labels) + self.linear(self.statistic(f)).flatten()

    def features(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        f = self.critic.features(x, labels)
        return torch.cat([f, self.statistic(f)], dim=1)


def pack_of(critic: nn.Module) -> int:
    """The packing degree of a discriminator (through DDP; torch.compile's wrapper forwards)."""
    return getattr(getattr(critic, "module", critic), "pack", 1)


@torch.no_grad()
def generate(G: nn.Module, noise: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """Samples from the generator in eval mode (running norm statistics), then back to train."""
    was_training = G.training
    G.eval()
    try:
        return G(noise, labels)
    finally:
        G.train(was_training)
