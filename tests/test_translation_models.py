"""The translation networks at 28, 32 and 64 pixels: U-Net and ResNet generators keep the image's
shape, PatchGAN gives a map of patch logits; U-Net's skips and dropout do what they are for."""

from __future__ import annotations

import pytest
import torch

from ganexp.config import Norm
from ganexp.models.common import NormSpec
from ganexp.models.translation import (
    PatchDiscriminator,
    ResNetGenerator,
    UNetGenerator,
    unet_levels,
)

SIZES = (28, 32, 64)
NORMS = (Norm.batch, Norm.instance, Norm.none, Norm.spectral)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("norm", NORMS, ids=str)
def test_generators_translate_to_the_targets_shape(size: int, norm: Norm) -> None:
    source = torch.randn(2, 1, size, size)
    unet = UNetGenerator(1, 3, size, 8, NormSpec(norm))
    resnet = ResNetGenerator(1, 3, 8, 2, NormSpec(norm))
    for net in (unet, resnet):
        out = net(None, source)
        assert out.shape == (2, 3, size, size)
        assert out.abs().max() <= 1  # tanh


@pytest.mark.parametrize(("size", "patches"), [(28, 5), (32, 6), (64, 6)])
def test_patchgan_gives_one_logit_per_patch(size: int, patches: int) -> None:
    paired = PatchDiscriminator(3, 1, size, 8, NormSpec(Norm.batch))
    alone = PatchDiscriminator(3, 0, size, 8, NormSpec(Norm.instance))
    x, condition = torch.randn(2, 3, size, size), torch.randn(2, 1, size, size)
    assert paired(x, condition).shape == (2, 1, patches, patches)
    assert alone(x).shape == (2, 1, patches, patches)


def test_the_unet_halves_while_the_side_is_even() -> None:
    assert [unet_levels(s) for s in SIZES] == [2, 5, 6]


def test_the_unets_skips_carry_the_input_past_a_cut_bottleneck() -> None:
    """With the innermost encoder layer zeroed nothing passes through the bottleneck, yet the
    output still depends on the input: through the skip connections."""
    unet = UNetGenerator(1, 1, 32, 4, NormSpec(Norm.none), dropout=0.0)
    with torch.no_grad():
        for p in unet.down[-1].parameters():
            p.zero_()
    x = torch.randn(1, 1, 32, 32, requires_grad=True)
    unet(None, x).sum().backward()
    assert x.grad.abs().sum() > 0
    inner = torch.randn(1, 1, 32, 32, requires_grad=True)
    unet.down[-1](unet.down[-2](unet.down[-3](unet.down[-4](unet.down[0](inner))))).sum().backward()
    assert inner.grad.abs().sum() == 0  # the cut is real


def test_dropout_is_the_noise_in_training_and_off_in_eval() -> None:
    unet = UNetGenerator(1, 1, 28, 4, NormSpec(Norm.none))
    x = torch.randn(2, 1, 28, 28)
    torch.manual_seed(0)
    a = unet(None, x)
    b = unet(None, x)
    assert not torch.equal(a, b)
    unet.eval()
    assert torch.equal(unet(None, x), unet(None, x))
