"""Vanilla GAN networks (Goodfellow et al. 2014): fully connected G and D, for images or points."""

from __future__ import annotations

import math

import torch
from torch import nn

from ganexp.config import Activation
from ganexp.errors import ConfigError
from ganexp.models.common import ActivationSpec, NormSpec, with_class_code


def _check_depth(depth: int, key: str) -> None:
    if depth < 1:
        raise ConfigError(key, depth, "mlp needs at least 1 hidden layer")


class MLPGenerator(nn.Module):
    def __init__(
        self,
        z_dim: int,
        out_shape: tuple[int, ...],
        width: int,
        depth: int,
        norm: NormSpec,
        num_classes: int = 0,
        tanh: bool = True,
        activation: ActivationSpec | None = None,
    ) -> None:
        super().__init__()
        _check_depth(depth, "generator.depth")
        self.out_shape = out_shape
        self.num_classes = num_classes
        act = activation or ActivationSpec(Activation.default)
        layers: list[nn.Module] = []
        fan_in = z_dim + num_classes
        for _ in range(depth):
            layers += [
                act.linear(fan_in, width, bias=norm.bias),
                norm.layer(width, spatial=False),
                act.layer(),
            ]
            fan_in = width
        layers.append(nn.Linear(fan_in, math.prod(out_shape)))
        if tanh:
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        z = with_class_code(z, labels, self.num_classes)
        return self.net(z).view(-1, *self.out_shape)


class MLPDiscriminator(nn.Module):
    def __init__(
        self,
        in_shape: tuple[int, ...],
        width: int,
        depth: int,
        norm: NormSpec,
        num_classes: int = 0,
        activation: ActivationSpec | None = None,
    ) -> None:
        super().__init__()
        _check_depth(depth, "discriminator.depth")
        self.num_classes = num_classes
        act = activation or ActivationSpec(Activation.default, discriminator=True)
        layers: list[nn.Module] = [
            act.linear(math.prod(in_shape) + num_classes, width),
            act.layer(),
        ]
        for _ in range(depth - 1):
            layers += [
                act.linear(width, width, bias=norm.bias),
                norm.layer(width, spatial=False),
                act.layer(),
            ]
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        self.feature_width = width

    def features(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """What enters the output layer: the last hidden layer's activations."""
        x = x.flatten(1)
        x = with_class_code(x, labels, self.num_classes)
        return self.net[:-1](x)

    def head(self, phi: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """D's output from its features."""
        return self.net[-1](phi).flatten()

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(x, labels), labels)
