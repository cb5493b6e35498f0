"""The image-to-image networks of junyanz/pytorch-CycleGAN-and-pix2pix, sized for small images.

- :class:`UNetGenerator` (Pix2Pix; CycleGAN's option): an encoder of strided 4x4 convolutions
  and a decoder of transposed ones, each decoder level joined to the encoder's of its size by a
  skip connection; dropout in the innermost decoder levels is the noise (Isola et al. 2017).
  The repository's ``unet_256`` halves 256 pixels eight times; here the encoder halves while
  the side is even (28 -> 14 -> 7; 32 -> 1; 64 -> 1).
- :class:`ResNetGenerator` (CycleGAN): a 7x7 convolution, two stride-2 convolutions, residual
  blocks of two reflection-padded 3x3 convolutions, two transposed convolutions back up, a 7x7
  convolution to the output and tanh (Johnson et al. 2016; Zhu et al. 2017).
- :class:`PatchDiscriminator` (PatchGAN): strided 4x4 convolutions to one logit per patch, of a
  condition image and the image side by side on the channels (Pix2Pix) or of the image alone
  (CycleGAN). The repository's 3 strided layers judge 70x70 patches of 256-pixel images; images
  under 64 pixels get 2.

The norm is the ``norm`` axis's (batch for Pix2Pix, instance for CycleGAN by their presets); as
in the repository, a layer followed by batch or instance norm carries no bias, the encoder's
first and innermost layers have no norm, and the discriminator's first has none.
"""

from __future__ import annotations

import torch
from torch import nn

from ganexp.models.common import NormSpec

UNET_DROPOUT_LEVELS = 3  # unet_256's three innermost decoder levels of ngf * 8 use dropout


def unet_levels(size: int) -> int:
    """How many times the encoder halves an image of side ``size``: while the side is even."""
    levels = 0
    while size % 2 == 0 and size > 1:
        size //= 2
        levels += 1
    return levels


class UNetGenerator(nn.Module):
    """Translates the condition image (``labels``) to an image; ``z`` is not used: the
    dropout of the inner decoder levels, on in training, is the noise."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        size: int,
        width: int,
        norm: NormSpec,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        levels = unet_levels(size)
        channels = [width * min(2**i, 8) for i in range(levels)]
        self.down = nn.ModuleList()
        for i, out in enumerate(channels):
            inner, outer = i == levels - 1, i == 0
            layers: list[nn.Module] = [] if outer else [nn.LeakyReLU(0.2)]
            cin = in_channels if outer else channels[i - 1]
            plain = outer or inner
            layers.append(nn.Conv2d(cin, out, 4, 2, 1, bias=plain or norm.bias))
            if not plain:
                layers.append(norm.layer(out))
            self.down.append(nn.Sequential(*layers))
        self.up = nn.ModuleList()
        for i in reversed(range(levels)):
            inner, outer = i == levels - 1, i == 0
            cin = channels[i] if inner else 2 * channels[i]
            out = out_channels if outer else channels[i - 1]
            layers = [nn.ReLU(), nn.ConvTranspose2d(cin, out, 4, 2, 1, bias=outer or norm.bias)]
            if outer:
                layers.append(nn.Tanh())
            else:
                layers.append(norm.layer(out))
                if levels - 1 - i < UNET_DROPOUT_LEVELS and dropout > 0:
                    layers.append(nn.Dropout(dropout))
            self.up.append(nn.Sequential(*layers))

    def forward(self, z: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor:
        skips = []
        x = labels
        for block in self.down:
            x = block(x)
            skips.append(x)
        skips.pop()  # the innermost level has no skip: its output is the decoder's input
        for block in self.up:
            x = block(x)
            if skips:
                x = torch.cat([x, skips.pop()], dim=1)
        return x


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, norm: NormSpec, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=norm.bias),
            norm.layer(channels),
            nn.ReLU(),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=norm.bias),
            norm.layer(channels),
        ]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNetGenerator(nn.Module):
    """CycleGAN's generator: translates ``labels`` (the source image); ``z`` is not used."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int,
        blocks: int,
        norm: NormSpec,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, width, 7, bias=norm.bias),
            norm.layer(width),
            nn.ReLU(),
        ]
        ch = width
        for _ in range(2):
            layers += [
                nn.Conv2d(ch, ch * 2, 3, 2, 1, bias=norm.bias),
                norm.layer(ch * 2),
                nn.ReLU(),
            ]
            ch *= 2
        layers += [ResidualBlock(ch, norm, dropout) for _ in range(blocks)]
        for _ in range(2):
            up = nn.ConvTranspose2d(ch, ch // 2, 3, 2, 1, output_padding=1, bias=norm.bias)
            layers += [up, norm.layer(ch // 2), nn.ReLU()]
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, out_channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor:
        return self.net(labels)


class PatchDiscriminator(nn.Module):
    """One logit per patch, ``(N, 1, h, w)``, of ``x`` beside the condition image ``labels``
    (``condition_channels`` > 0, Pix2Pix) or of ``x`` alone (CycleGAN)."""

    def __init__(
        self, channels: int, condition_channels: int, size: int, width: int, norm: NormSpec
    ) -> None:
        super().__init__()
        strided = 2 if size < 64 else 3
        layers: list[nn.Module] = [
            nn.Conv2d(channels + condition_channels, width, 4, 2, 1),
            nn.LeakyReLU(0.2),
        ]
        ch = width
        for i in range(1, strided + 1):
            out = width * min(2**i, 8)
            stride = 2 if i < strided else 1
            layers += [
                nn.Conv2d(ch, out, 4, stride, 1, bias=norm.bias),
                norm.layer(out),
                nn.LeakyReLU(0.2),
            ]
            ch = out
        layers.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        self.conditioned = condition_channels > 0

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditioned:
            x = torch.cat([labels, x], dim=1)
        return self.net(x)
