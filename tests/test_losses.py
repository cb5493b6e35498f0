"""Loss math against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import LinearCritic
from torch import nn

from ganexp.config import LossConfig, LossName
from ganexp.errors import ConfigError
from ganexp.models.common import Packed
from ganexp.parts.losses import (
    BCELoss,
    GANLoss,
    GradientPenaltyLoss,
    HingeLoss,
    LeastSquaresLoss,
    R1Penalty,
    WassersteinLoss,
    WeightClippingLoss,
    build_loss,
    feature_matching,
)


class Quadratic(nn.Module):
    """D(x) = s |x|^2 / 2, s = 1 at the start: its input gradient at x is s x."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return 0.5 * self.scale * x.flatten(1).pow(2).sum(1)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_bce_discriminator_loss_by_hand() -> None:
    real, fake = torch.tensor([_logit(0.8)]), torch.tensor([_logit(0.3)])
    expected = -math.log(0.8) - math.log(1 - 0.3)
    assert BCELoss().d_loss(real, fake).item() == pytest.approx(expected, rel=1e-6)


def test_one_sided_label_smoothing_changes_only_the_real_target() -> None:
    real, fake = torch.tensor([_logit(0.8)]), torch.tensor([_logit(0.3)])
    smoothed = BCELoss(label_smoothing=0.1).d_loss(real, fake).item()
    real_term = -(0.9 * math.log(0.8) + 0.1 * math.log(0.2))
    assert smoothed == pytest.approx(real_term - math.log(0.7), rel=1e-6)


def test_generator_losses_by_hand() -> None:
    fake = torch.tensor([_logit(0.3)])
    assert BCELoss("non_saturating").g_loss(fake).item() == pytest.approx(-math.log(0.3))
    assert BCELoss("minimax").g_loss(fake).item() == pytest.approx(math.log(0.7))


def test_minimax_saturates_where_non_saturating_does_not() -> None:
    """When D rejects fakes confidently, log(1 - D(G(z))) has a vanishing gradient."""
    fake = torch.tensor([-8.0], requires_grad=True)
    (minimax,) = torch.autograd.grad(BCELoss("minimax").g_loss(fake), fake)
    fake = torch.tensor([-8.0], requires_grad=True)
    (non_sat,) = torch.autograd.grad(BCELoss("non_saturating").g_loss(fake), fake)
    assert abs(minimax.item()) < 1e-3 < abs(non_sat.item())


def test_bce_reports_probabilities_and_wasserstein_raw_values() -> None:
    out = torch.tensor([0.0, 0.0])
    assert BCELoss().report(out).item() == pytest.approx(0.5)
    assert WassersteinLoss().report(torch.tensor([2.0, 4.0])).item() == pytest.approx(3.0)


def test_wasserstein_losses_by_hand() -> None:
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([-1.0, 0.0])
    assert WassersteinLoss().d_loss(real, fake).item() == pytest.approx(-0.5 - 2.0)
    assert WassersteinLoss().g_loss(fake).item() == pytest.approx(0.5)


@pytest.mark.parametrize("w_norm", [0.5, 1.0, 3.0])
def test_gradient_penalty_of_a_linear_critic_in_closed_form(w_norm: float) -> None:
    """D(x) = w.x has gradient w everywhere, so the penalty is lambda * (|w| - 1)^2."""
    w = torch.randn(12)
    critic = LinearCritic(w / w.norm() * w_norm)
    real, fake = torch.randn(16, 3, 2, 2), torch.randn(16, 3, 2, 2)
    penalty = GradientPenaltyLoss(gp_weight=10.0).regularizer(critic, real, fake, None)
    assert penalty.item() == pytest.approx(10.0 * (w_norm - 1) ** 2, rel=1e-5, abs=1e-6)


def test_gradient_penalty_is_per_sample_and_differentiable() -> None:
    """With D(x) = |x|^2 / 2 the gradient at x_hat is x_hat itself: the penalty must use each
    interpolate's own norm, and gradients must flow back to the critic (double backward)."""

    critic = Quadratic()
    real = torch.full((2, 4), 1.0)
    fake = torch.full((2, 4), 1.0)  # interpolates equal 1: |grad| = scale * 2
    penalty = GradientPenaltyLoss(gp_weight=1.0).regularizer(critic, real, fake, None)
    assert penalty.item() == pytest.approx(1.0)
    penalty.backward()
    # d/dscale (2 * scale - 1)^2 = 4 * (2 * scale - 1) = 4 at scale = 1
    assert critic.scale.grad.item() == pytest.approx(4.0)


def test_weight_clipping_bounds_every_weight() -> None:
    critic = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 1))
    with torch.no_grad():
        for p in critic.parameters():
            p.mul_(100)
    WeightClippingLoss(clip_value=0.01).after_d_step(critic)
    values = torch.cat([p.flatten() for p in critic.parameters()])
    assert values.abs().max().item() == pytest.approx(0.01)
    assert (values.abs() <= 0.01).all()


def test_build_loss_follows_the_config() -> None:
    assert isinstance(build_loss(LossConfig(name=LossName.bce)), BCELoss)
    clip = build_loss(LossConfig(name=LossName.wgan_clip, clip_value=0.05))
    assert isinstance(clip, WeightClippingLoss) and clip.clip_value == 0.05
    gp = build_loss(LossConfig(name=LossName.wgan_gp, gp_weight=5.0))
    assert isinstance(gp, GradientPenaltyLoss) and gp.gp_weight == 5.0
    assert isinstance(build_loss(LossConfig(name=LossName.hinge)), HingeLoss)
    assert isinstance(build_loss(LossConfig(name=LossName.lsgan)), LeastSquaresLoss)


def test_gradient_penalty_of_a_packed_critic_is_per_pack() -> None:
    """A packed linear critic D(pack) = w . (x_1, ..., x_m) has gradient w with respect to the
    whole pack: the penalty is lambda * (|w| - 1)^2 with |w| taken over the pack, which the
    per-sample norms (each |w_i| < |w|) would miss; each pack gets one interpolation factor."""
    pack, w = 2, torch.tensor([0.6, 0.0, 0.0, 0.8])  # |w| = 1 over the pack, 0.6 / 0.8 per half
    critic = Packed(LinearCritic(w), pack)
    real, fake = torch.randn(8, 2), torch.randn(8, 2)
    penalty = GradientPenaltyLoss(gp_weight=10.0).regularizer(critic, real, fake, None)
    assert penalty.item() == pytest.approx(0.0, abs=1e-10)

    class Recording(LinearCritic):
        def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
            self.seen = x.detach()
            return super().forward(x, labels)

    recording = Recording(w)
    GradientPenaltyLoss().regularizer(Packed(recording, pack), real, fake, None)
    eps = (recording.seen - fake.reshape(4, 4)) / (real - fake).reshape(4, 4)
    torch.testing.assert_close(eps, eps[:, :1].expand(4, 4))  # one e per pack


def test_hinge_loss_by_hand() -> None:
    """Inside the margins both terms count; beyond them (D(x) > 1, D(G(z)) < -1) they vanish."""
    real, fake = torch.tensor([0.5, 2.0]), torch.tensor([-0.5, -3.0])
    # D: mean(relu(1 - [0.5, 2])) + mean(relu(1 + [-0.5, -3])) = 0.25 + 0.25
    assert HingeLoss().d_loss(real, fake).item() == pytest.approx(0.5)
    assert HingeLoss().g_loss(fake).item() == pytest.approx(1.75)
    assert HingeLoss().report(real).item() == pytest.approx(1.25)  # raw values, not sigmoid


def test_least_squares_loss_by_hand() -> None:
    """a-b-c = 0-1-1: D pulls real outputs to 1 and fake ones to 0; G pulls fakes to 1."""
    real, fake = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    # D: 1/2 mean([0, 1]) + 1/2 mean([0, 4]) = 0.25 + 1.0
    assert LeastSquaresLoss().d_loss(real, fake).item() == pytest.approx(1.25)
    # G: 1/2 mean([1, 1]) = 0.5
    assert LeastSquaresLoss().g_loss(fake).item() == pytest.approx(0.5)


@pytest.mark.parametrize("w_norm", [0.5, 2.0])
def test_r1_of_a_linear_critic_in_closed_form(w_norm: float) -> None:
    """D(x) = w.x: ||grad|| = |w| at every real point, so R1 = gamma / 2 * |w|^2, and the lazy
    form (every k-th critic step) carries k times that."""
    w = torch.randn(12)
    critic = LinearCritic(w / w.norm() * w_norm)
    real = torch.randn(16, 3, 2, 2)
    expected = 10.0 / 2 * w_norm**2
    assert R1Penalty(10.0)(critic, real, None).item() == pytest.approx(expected, rel=1e-5)
    lazy = R1Penalty(10.0, every=4)
    assert lazy(critic, real, None).item() == pytest.approx(4 * expected, rel=1e-5)
    assert [step for step in range(10) if lazy.due(step)] == [0, 4, 8]
    assert not R1Penalty(0.0).due(0)


def test_r1_is_on_real_data_only_and_trains_the_critic() -> None:
    """With D(x) = s |x|^2 / 2 the gradient at x is s x: R1 = gamma / 2 * s^2 * mean |x|^2, whose
    derivative in s is gamma * s * mean |x|^2 (double backward through the critic)."""

    critic = Quadratic()
    real = torch.tensor([[1.0, 0.0], [0.0, 3.0]])  # |x|^2: 1 and 9, mean 5
    penalty = R1Penalty(2.0)(critic, real, None)
    assert penalty.item() == pytest.approx(5.0)
    penalty.backward()
    assert critic.scale.grad.item() == pytest.approx(10.0)
    assert real.grad is None  # the real batch itself is left alone


class MarginLoss(GANLoss):
    """A user's loss as the README's contract has it: d_loss, g_loss and keywords only."""

    def __init__(self, margin: float = 1.0) -> None:
        self.margin = margin

    def d_loss(self, real_out: torch.Tensor, fake_out: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.margin - real_out).mean() + torch.relu(self.margin + fake_out).mean()

    def g_loss(self, fake_out: torch.Tensor) -> torch.Tensor:
        return -fake_out.mean()


class OnlyDLoss(GANLoss):
    def d_loss(self, real_out: torch.Tensor, fake_out: torch.Tensor) -> torch.Tensor:
        return real_out.mean()


def _users_loss(target: str, parameters: dict) -> GANLoss:
    cfg = LossConfig(_target_=target)
    cfg.parameters = parameters  # what validate collects from the loss node's own keys
    return build_loss(cfg)


def test_a_users_loss_class_is_built_with_its_keywords() -> None:
    loss = _users_loss(f"{__name__}.MarginLoss", {"margin": 2.0})
    assert isinstance(loss, MarginLoss) and loss.margin == 2.0
    real, fake = torch.tensor([1.0]), torch.tensor([0.5])
    assert loss.d_loss(real, fake).item() == pytest.approx(1.0 + 2.5)
    assert loss.report(real).item() == 1.0  # the interface's defaults fill in the rest


@pytest.mark.parametrize(
    ("target", "parameters", "expected"),
    [
        ("MarginLoss", {"margn": 2.0}, "loss.margn=2.0: not a parameter of "),
        ("OnlyDLoss", {}, "must be a subclass of ganexp.losses.GANLoss overriding d_loss and "),
        ("LinearCritic", {}, "must be a subclass of ganexp.losses.GANLoss"),
        ("Nothing", {}, "cannot be imported (module "),
    ],
)
def test_a_users_loss_that_breaks_the_contract_is_refused(
    target: str, parameters: dict, expected: str
) -> None:
    module = __name__ if target != "LinearCritic" else "helpers"
    with pytest.raises(ConfigError) as raised:
        _users_loss(f"{module}.{target}", parameters)
    assert expected in str(raised.value), str(raised.value)
    assert "\n" not in str(raised.value)


class FeatureCritic(nn.Module):
    """A critic whose features are its input scaled by s: f(x) = s x, D(x) = sum f(x)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))

    def features(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.scale * x.flatten(1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.features(x, labels).sum(1)


def test_feature_matching_by_hand() -> None:
    """Batch means of f: real [2, 4] (x means [1, 2]), fake [4, 0] (x means [2, 0]); the loss is
    the mean over features of the squared difference, ((4-2)^2 + (0-4)^2) / 2 = 10, and only
    the fakes get a gradient: d/dfake_ij = 2 / F (mf_j - mr_j) s / n = (mf_j - mr_j) for F = 2
    features, n = 2 fakes, s = 2."""
    critic = FeatureCritic()
    real = torch.tensor([[0.0, 1.0], [2.0, 3.0]], requires_grad=True)
    fake = torch.tensor([[1.0, 0.0], [3.0, 0.0]], requires_grad=True)
    loss = feature_matching(critic, real, None, fake, None)
    assert loss.item() == pytest.approx(10.0)
    loss.backward()
    torch.testing.assert_close(fake.grad, torch.tensor([[2.0, -4.0], [2.0, -4.0]]))
    assert real.grad is None  # the real batch's mean is a constant


def test_feature_matching_sees_each_pack() -> None:
    """A packed D's features are those of its packs: with f = s x, the features of pack p are
    the concatenation of its samples."""
    critic = Packed(FeatureCritic(), 2)
    x = torch.arange(8.0).view(4, 2)
    torch.testing.assert_close(critic.features(x), 2 * x.view(2, 4))
    loss = feature_matching(critic, x, None, torch.zeros(4, 2), None)
    assert loss.item() == pytest.approx((2 * x.view(2, 4).mean(0)).square().mean().item())
