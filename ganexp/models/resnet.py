"""ResNet GAN networks: SNGAN's CIFAR-10 ResNets (Miyato et al. 2018, appendix B), which are
WGAN-GP's (Gulrajani et al. 2017, ``gan_cifar_resnet.py``) with sum pooling in D.

G: z -> Linear -> ``width`` maps of 4x4 (7x7 for 28-pixel images) -> up-sampling residual blocks
(norm, act, nearest x2, conv3x3, norm, act, conv3x3; shortcut x2 and conv1x1) -> norm, act,
conv3x3 to the image channels, tanh. D: SNGAN's "optimized" first block (conv3x3, act, conv3x3,
avg-pool; shortcut avg-pool then conv1x1), down-sampling residual blocks (norm, act, conv3x3,
norm, act, conv3x3, avg-pool; shortcut conv1x1 then avg-pool), two blocks at the last resolution
(8x8; 7x7 for 28-pixel images), act, a sum over the map, Linear to one output. Every block has
``width`` channels; ``default`` activation is ReLU in both networks, as in SNGAN. Weights start
Glorot-uniform, gain sqrt(2) on the convolutions of the residual branches and 1 elsewhere, biases
0 (SNGAN's chainer code). D's first block has no norm (no norm on D's input, as in DCGAN).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from ganexp.config import Activation, Norm
from ganexp.errors import ConfigError
from ganexp.models.common import (
    ActivationSpec,
    NormSpec,
    Projection,
    concat_classes,
    conditioned,
    norm_layer,
    with_class_code,
    with_label_maps,
)

IMAGE_SIZES = (28, 32, 64)


def _sides(image_size: int) -> tuple[int, int]:
    """G's first map side and D's last: 7 and 7 for 28-pixel images, else 4 and 8 (SNGAN)."""
    if image_size not in IMAGE_SIZES:
        raise ConfigError("data.image_size", image_size, "resnet makes images of 28, 32, 64 pixels")
    return (7, 7) if image_size == 28 else (4, 8)


def _halvings(large: int, small: int) -> int:
    return (large // small).bit_length() - 1


def _glorot(layer: nn.Conv2d | nn.Linear, gain: float = 1.0) -> nn.Conv2d | nn.Linear:
    nn.init.xavier_uniform_(layer.weight, gain)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


def _conv(cin: int, cout: int, kernel: int = 3, bias: bool = True) -> nn.Conv2d:
    """A residual branch's convolution (gain sqrt(2), a ReLU precedes), or a 1x1 shortcut."""
    gain = math.sqrt(2) if kernel == 3 else 1.0
    return _glorot(nn.Conv2d(cin, cout, kernel, 1, kernel // 2, bias=bias), gain)


class GBlock(nn.Module):
    """G's pre-activation residual block, up-sampling x2 (``up``) or at the same resolution
    with an identity shortcut (``generator.depth``'s extra blocks). The 1x1 shortcut runs before
    the nearest up-sampling: the two commute, and the convolution sees a quarter of the pixels."""

    def __init__(
        self, channels: int, norm: NormSpec, act: ActivationSpec, cbn_classes: int, up: bool
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(norm, channels, cbn_classes)
        self.act1 = act.layer(inplace=False)  # its input also feeds the shortcut
        self.up = nn.Upsample(scale_factor=2, mode="nearest") if up else nn.Identity()
        self.conv1 = _conv(channels, channels, bias=norm.bias)
        self.norm2 = norm_layer(norm, channels, cbn_classes)
        self.act2 = act.layer()
        self.conv2 = _conv(channels, channels)
        self.shortcut = _conv(channels, channels, 1) if up else nn.Identity()

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.act1(conditioned(self.norm1, x, labels))
        h = self.conv1(self.up(h))
        h = self.conv2(self.act2(conditioned(self.norm2, h, labels)))
        return h + self.up(self.shortcut(x))


class DBlock(nn.Module):
    """D's pre-activation residual block, down-sampling by a 2x2 average pool (``down``) or
    at the same resolution with an identity shortcut."""

    def __init__(self, channels: int, norm: NormSpec, act: ActivationSpec, down: bool) -> None:
        super().__init__()
        self.norm1 = norm.layer(channels, spatial=True)
        self.act1 = act.layer(inplace=False)  # its input also feeds the shortcut
        self.conv1 = _conv(channels, channels, bias=norm.bias)
        self.norm2 = norm.layer(channels, spatial=True)
        self.act2 = act.layer()
        self.conv2 = _conv(channels, channels)
        self.pool = nn.AvgPool2d(2) if down else nn.Identity()
        self.shortcut = _conv(channels, channels, 1) if down else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act1(self.norm1(x)))
        h = self.conv2(self.act2(self.norm2(h)))
        return self.pool(h) + self.pool(self.shortcut(x))


class OptimizedDBlock(nn.Module):
    """D's first block: conv3x3, act, conv3x3, avg-pool; shortcut avg-pool then conv1x1. No
    activation before the first convolution (it would act on the image) and no norm."""

    def __init__(self, cin: int, channels: int, act: ActivationSpec) -> None:
        super().__init__()
        self.conv1 = _conv(cin, channels)
        self.act = act.layer()
        self.conv2 = _conv(channels, channels)
        self.pool = nn.AvgPool2d(2)
        self.shortcut = _conv(cin, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.conv2(self.act(self.conv1(x))))
        return h + self.shortcut(self.pool(x))


class ResNetGenerator(nn.Module):
    """``conditioning``: ``concat`` puts the one-hot class next to z; ``cbn`` makes every norm
    layer class-conditional (:class:`~ganexp.models.common.ConditionalNorm`)."""

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
        act.conv_only("resnet")
        channels, size, _ = image_shape
        self.side, _ = _sides(size)
        self.width = width
        self.num_classes = concat_classes(num_classes, conditioning)
        cbn = num_classes if conditioning == "cbn" else 0
        self.project = _glorot(nn.Linear(z_dim + self.num_classes, width * self.side**2))
        ups = [GBlock(width, norm, act, cbn, up=True) for _ in range(_halvings(size, self.side))]
        same = [GBlock(width, norm, act, cbn, up=False) for _ in range(depth)]
        self.blocks = nn.ModuleList(ups + same)
        self.norm = norm_layer(norm, width, cbn)
        self.act = act.layer()
        self.out = _glorot(nn.Conv2d(width, channels, 3, 1, 1))
        self.tanh = nn.Tanh()

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        z = with_class_code(z, labels, self.num_classes)
        h = self.project(z).view(-1, self.width, self.side, self.side)
        for block in self.blocks:
            h = block(h, labels)
        return self.tanh(self.out(self.act(conditioned(self.norm, h, labels))))


class ResNetDiscriminator(nn.Module):
    """``conditioning``: ``concat`` adds the one-hot class as constant maps to the image's
    channels; ``projection`` adds <embed(y), features(x)> to the output (Miyato & Koyama 2018)."""

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
        # SNGAN's D uses ReLU: ``default`` resolves as in G
        act = activation or ActivationSpec(Activation.default)
        act = dataclasses.replace(act, discriminator=False)
        act.conv_only("resnet")
        channels, size, _ = image_shape
        self.num_classes = concat_classes(num_classes, conditioning)
        downs = _halvings(size, _sides(size)[1]) - 1  # after the first block's
        blocks: list[nn.Module] = [OptimizedDBlock(channels + self.num_classes, width, act)]
        blocks += [DBlock(width, norm, act, down=True) for _ in range(downs)]
        blocks += [DBlock(width, norm, act, down=False) for _ in range(2 + depth)]
        self.blocks = nn.Sequential(*blocks)
        self.act = act.layer()
        self.linear = _glorot(nn.Linear(width, 1))
        self.feature_width = width
        spectral = norm.kind == Norm.spectral
        projection = conditioning == "projection" and num_classes > 0
        self.projection = Projection(num_classes, width, spectral) if projection else None

    def features(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """What enters the output layer: the last blocks' activations summed over the map."""
        x = with_label_maps(x, labels, self.num_classes)
        return self.act(self.blocks(x)).sum(dim=(2, 3))

    def head(self, phi: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """D's output from its features."""
        out = self.linear(phi).flatten()
        return out if self.projection is None else out + self.projection(phi, labels)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(x, labels), labels)
