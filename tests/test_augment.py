"""DiffAugment: each policy's math, differentiability, the gradient penalty through it, and a
run through the `ganexp` command."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import LinearCritic, compose_config
from test_bad_input import refusal
from test_sweeps import TINY, ganexp_cmd

from ganexp.config import AUGMENT_POLICIES, validate
from ganexp.parts.augment import (
    POLICIES,
    attach,
    brightness,
    contrast,
    cutout,
    diff_augment,
    saturation,
    translation,
)
from ganexp.parts.losses import GradientPenaltyLoss, R1Penalty
from ganexp.tracking.runfile import load_run


@pytest.fixture(autouse=True)
def seeded() -> None:
    """The augmentations draw from torch's global generator: the same draws in any test order."""
    torch.manual_seed(0)


def images(n: int = 8, c: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_the_config_names_every_policy_the_module_has() -> None:
    assert set(AUGMENT_POLICIES) == set(POLICIES)


def test_brightness_adds_one_offset_per_image_in_half_a_unit() -> None:
    x = images(64)
    shift = brightness(x) - x
    per_image = shift.flatten(1)
    assert torch.allclose(per_image, per_image[:, :1].expand_as(per_image), atol=1e-6)
    assert per_image.abs().max() <= 0.5 and per_image[:, 0].std() > 0.1


def test_saturation_keeps_the_channel_mean_and_contrast_the_image_mean() -> None:
    x = images(32)
    torch.testing.assert_close(saturation(x).mean(1), x.mean(1))
    torch.testing.assert_close(contrast(x).mean((1, 2, 3)), x.mean((1, 2, 3)))
    gray = images(4, c=1)
    torch.testing.assert_close(saturation(gray), gray)  # one channel: nothing to saturate
    scale = (contrast(x) - x.mean((1, 2, 3), keepdim=True)) / (x - x.mean((1, 2, 3), keepdim=True))
    factors = scale.flatten(1).median(1).values
    assert (factors >= 0.5 - 1e-4).all() and (factors <= 1.5 + 1e-4).all()


def test_translation_moves_a_pixel_by_at_most_an_eighth_with_zeros_shifted_in() -> None:
    size, n = 16, 400
    x = torch.zeros(n, 1, size, size)
    x[:, :, 8, 8] = 1.0
    moved = translation(x)
    assert moved.shape == x.shape
    where = moved[:, 0].flatten(1).argmax(1)
    dy, dx = where // size - 8, where % size - 8
    assert moved.flatten(1).sum(1).eq(1).all()  # the pixel lands inside, nothing else appears
    assert set(dy.tolist()) == set(range(-2, 3)) == set(dx.tolist())  # 16 / 8 = 2, every shift
    edge = torch.ones(n, 1, size, size)
    assert (translation(edge) == 0).any()  # zeros come in from the border


def test_cutout_zeroes_a_half_size_square_clipped_at_the_border() -> None:
    size, n = 16, 400
    cut = cutout(torch.ones(n, 1, size, size))[:, 0]
    zeros = (cut == 0).flatten(1).sum(1)
    assert zeros.max() == 8 * 8 and zeros.min() > 0
    for img in cut[:20]:
        rows, cols = torch.nonzero(img == 0, as_tuple=True)
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert box == len(rows)  # one rectangle
        assert rows.max() - rows.min() < 8 and cols.max() - cols.min() < 8


@pytest.mark.parametrize("policy", [["color"], ["translation"], ["cutout"]])
def test_every_policy_is_differentiable(policy: list[str]) -> None:
    x = images(2, size=8).double().requires_grad_(True)

    def seeded(inputs: torch.Tensor) -> torch.Tensor:  # the same random draws at every call
        torch.manual_seed(3)
        return diff_augment(inputs, policy)

    assert torch.autograd.gradcheck(seeded, (x,))


def test_the_gradient_penalty_is_taken_through_the_augmentation() -> None:
    """With D(x) = w . aug(x) and a fixed draw of the augmentation, the penalty is that of the
    composed map at the interpolates; cutout zeroes part of the gradient, so it differs from
    the penalty of D without augmentation."""
    real, fake = images(6, c=1, size=8), images(6, c=1, size=8, seed=1)
    w = torch.randn(64)
    plain = LinearCritic(w)
    augmented = attach(LinearCritic(w), ["translation", "cutout"])

    torch.manual_seed(5)
    penalty = GradientPenaltyLoss(gp_weight=1.0).regularizer(augmented, real, fake, None)
    torch.manual_seed(5)
    eps = torch.rand(6).view(6, 1, 1, 1)  # the loss's draw, then the augmentation's
    mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
    out = plain(diff_augment(mixed, ["translation", "cutout"]))
    (grad,) = torch.autograd.grad(out.sum(), mixed)
    expected = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
    torch.testing.assert_close(penalty, expected)
    unaugmented = GradientPenaltyLoss(gp_weight=1.0).regularizer(plain, real, fake, None)
    assert not torch.isclose(penalty, unaugmented)
    assert R1Penalty(1.0)(augmented, real, None) < R1Penalty(1.0)(plain, real, None)


BAD = [
    (["data.augment=mixup"], "data.augment='mixup': allowed: none, diffaug"),
    (["data.augment=diffaug", "data.augment_policy=[zoom]"], "data.augment_policy=['zoom']: a"),
    (["data.augment=diffaug", "data.augment_policy=[]"], "data.augment_policy=[]: a list of"),
    (
        ["data=ring8", "generator=mlp", "discriminator=mlp", "data.augment=diffaug"],
        "data.augment='diffaug': images only",
    ),
]


@pytest.mark.parametrize(("argv", "expected"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_augmentation_settings_are_refused_naming_the_key(argv: list[str], expected: str):
    assert refusal(*argv).startswith(expected)


def test_a_good_policy_validates() -> None:
    cfg = validate(compose_config("data.augment=diffaug", "data.augment_policy=[cutout,color]"))
    assert cfg.data.augment_policy == ["cutout", "color"]


@pytest.mark.slow
def test_diffaug_trains_under_wgan_gp_through_the_cli_and_logs_to_wandb(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = ganexp_cmd(
        *TINY,
        "data.augment=diffaug",
        "loss=wgan_gp",
        "norm=layer",
        "discriminator.pack=2",
        "logger.mode=offline",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = load_run(run_dir)
    assert run.config["data"]["augment"] == "diffaug"
    assert [row["step"] for row in run.history if "loss/gp" in row] == [1, 2]


def test_ds_features_see_the_augmentation_too() -> None:
    """Feature matching reads D.features: with cutout attached, some features of an all-ones
    batch are zero, as D's forward sees them."""

    class Identity(torch.nn.Module):
        def features(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
            return x.flatten(1)

        def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
            return self.features(x, labels).sum(1)

    critic = attach(Identity(), ["cutout"])
    ones = torch.ones(4, 1, 8, 8)
    assert (critic.features(ones) == 0).sum(1).gt(0).all()
    x = images(4, c=1, size=8)
    torch.manual_seed(1)
    expected = diff_augment(x, ["cutout"]).flatten(1).sum(1)
    torch.manual_seed(1)
    torch.testing.assert_close(critic(x), expected)  # a forward that calls features: once
