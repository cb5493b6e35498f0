"""DCGAN (Radford et al. 2015): strided convs in D, transposed convs in G, no pooling.

G: BN (or the chosen norm) + ReLU, tanh output. D: LeakyReLU(0.2), no norm on the input layer,
logits out. Conditioning (``concat``) concatenates the one-hot class to z, and as constant maps to
D's input; ``cbn`` makes G's norm layers class-conditional, ``projection`` adds D's class term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ganexp.config import Activation, Norm
from ganexp.errors import ConfigError
from ganexp.models.common import (
    ActivationSpec,
    NormSpec,
    Projection,
    concat_classes,
    conditioned,
    dcgan_init,
    norm_layer,
    with_class_code,
    with_label_maps,
)

IMAGE_SIZES = (16, 28, 32, 56, 64, 112, 128)


def start_size(image_size: int) -> int:
    """Side of the smallest feature map: 7 for 28-pixel (MNIST-like) images, else 4."""
    if image_size not in IMAGE_SIZES:
        allowed = ", ".join(map(str, IMAGE_SIZES))
        raise ConfigError("data.image_size", image_size, f"dcgan makes images of {allowed} pixels")
    return 7 if image_size % 7 == 0 else 4


def _num_upsamples(image_size: int) -> int:
    return (image_size // start_size(image_size)).bit_length() - 1


def channels_last(t: torch.Tensor) -> bool:
    """Whether ``t`` has channels_last strides; False under ``vmap`` (replicas), which cannot
    be asked."""
    try:
        return t.is_contiguous(memory_format=torch.channels_last)
    except RuntimeError:
        return False


class Project(nn.ConvTranspose2d):
    """G's first layer: a transposed convolution of z seen as a 1x1 map, which is a matrix
    product (the DCGAN paper's "project and reshape"), computed as one. The CPU's transposed
    convolution kernel takes about ten times longer for it. Weights, state_dict, norms and
    results are those of the ConvTranspose2d; the output has the weight's memory format."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        weight = self.weight  # (in, out, k, k)
        n, (_, out, k, _) = z.shape[0], weight.shape
        if channels_last(weight) and out > 1:
            maps = (z @ weight.permute(0, 2, 3, 1).flatten(1)).view(n, k, k, out)
            maps = maps.permute(0, 3, 1, 2)  # NCHW shape, channels_last strides, no copy
        else:
            maps = (z @ weight.flatten(1)).view(n, out, k, k)
        return maps if self.bias is None else maps + self.bias[:, None, None]


class Score(nn.Conv2d):
    """D's last layer: a convolution as large as its input map, which is one dot product per
    sample, computed as one (several times faster on the CPU than the convolution kernel).
    Weights, state_dict, norms and results are those of the Conv2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight  # (out, in, k, k), k = the map's side
        if channels_last(x):
            x, weight = x.permute(0, 2, 3, 1), weight.permute(0, 2, 3, 1)  # free views
        scores = x.flatten(1) @ weight.flatten(1).T
        return scores if self.bias is None else scores + self.bias


class DCGANGenerator(nn.Module):
    def __init__(
        self,
        z_dim: int,
        image_shape: tuple[int, int, int],
        width: int,
        depth: int,
        norm: NormSpec,
        num_classes: int = 0,
        activation: ActivationSpec | None = None,
        conditioning: str = "concat",
    ) -> None:
        super().__init__()
        act = activation or ActivationSpec(Activation.default)
        act.conv_only("dcgan")
        channels, size, _ = image_shape
        self.num_classes = concat_classes(num_classes, conditioning)
        cbn = num_classes if conditioning == "cbn" else 0
        n_up = _num_upsamples(size)
        ch = width * 2 ** (n_up - 1)
        layers: list[nn.Module] = [
            Project(z_dim + self.num_classes, ch, start_size(size), 1, 0, bias=norm.bias),
            norm_layer(norm, ch, cbn),
            act.layer(),
        ]
        for _ in range(n_up - 1):
            layers += [
                nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=norm.bias),
                norm_layer(norm, ch // 2, cbn),
                act.layer(),
            ]
            ch //= 2
        for _ in range(depth):
            layers += [
                nn.Conv2d(ch, ch, 3, 1, 1, bias=norm.bias),
                norm_layer(norm, ch, cbn),
                act.layer(),
            ]
        layers += [nn.ConvTranspose2d(ch, channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        z = with_class_code(z, labels, self.num_classes)
        for layer in self.net:
            z = conditioned(layer, z, labels)
        return z


class DCGANDiscriminator(nn.Module):
    def __init__(
        self,
        image_shape: tuple[int, int, int],
        width: int,
        depth: int,
        norm: NormSpec,
        num_classes: int = 0,
        activation: ActivationSpec | None = None,
        conditioning: str = "concat",
    ) -> None:
        super().__init__()
        act = activation or ActivationSpec(Activation.default, discriminator=True)
        act.conv_only("dcgan")
        channels, size, _ = image_shape
        self.num_classes = concat_classes(num_classes, conditioning)
        start = start_size(size)
        ch, side = width, size // 2
        layers: list[nn.Module] = [
            nn.Conv2d(channels + self.num_classes, ch, 4, 2, 1),
            act.layer(),
        ]
        for _ in range(depth):
            layers += [
                nn.Conv2d(ch, ch, 3, 1, 1, bias=norm.bias),
                norm.layer(ch, spatial=True),
                act.layer(),
            ]
        while side > start:
            layers += [
                nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=norm.bias),
                norm.layer(ch * 2, spatial=True),
                act.layer(),
            ]
            ch, side = ch * 2, side // 2
        layers.append(Score(ch, 1, start, 1, 0))
        self.net = nn.Sequential(*layers)
        dcgan_init(self)
        spectral = norm.kind == Norm.spectral
        projection = conditioning == "projection" and num_classes > 0
        self.feature_width = ch * start * start
        width = self.feature_width
        self.projection = Projection(num_classes, width, spectral) if projection else None

    def _maps(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.net[:-1](with_label_maps(x, labels, self.num_classes))

    def features(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """What enters the output layer: the last feature maps, flattened (channel-major)."""
        return self._maps(x, labels).flatten(1)

    def head(self, phi: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """D's output from its (flattened) features: the Score layer as the dot product it is."""
        score = self.net[-1]
        out = F.linear(phi, score.weight.flatten(1), score.bias).flatten()
        return out if self.projection is None else out + self.projection(phi, labels)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        # the output layer on the maps that features() flattens, kept in their memory format
        maps = self._maps(x, labels)
        out = self.net[-1](maps).flatten()
        if self.projection is None:
            return out
        return out + self.projection(maps.flatten(1), labels)
