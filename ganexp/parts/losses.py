"""The loss interface, its implementations, and the R1 penalty that goes with any of them.

Every loss gives the discriminator's loss, the generator's loss, an optional regularizer on the
discriminator (the gradient penalty), an optional hook after each discriminator step (weight
clipping), and what ``d/real``/``d/fake`` report: probabilities for BCE, raw D values for the
others, so "D(x) -> 1, D(G(z)) -> 0" is visible when D overpowers G.

A loss of the user's own (``loss._target_``) subclasses :class:`GANLoss` and overrides at least
``d_loss`` and ``g_loss``; everything else has a default that keeps it working.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ganexp.config import LossConfig, LossName
from ganexp.models.common import pack_of
from ganexp.parts.user import Contract, build_part, settings


class GANLoss:
    """The interface the training loop uses; subclasses override what they need."""

    wasserstein = False

    def d_loss(self, real_out: torch.Tensor, fake_out: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def g_loss(self, fake_out: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def regularizer(
        self,
        critic: nn.Module,
        real: torch.Tensor,
        fake: torch.Tensor,
        labels: torch.Tensor | None,
        grad_scale: torch.Tensor | float = 1.0,
    ) -> torch.Tensor | None:
        """An extra term for the discriminator's loss, or None. ``grad_scale``: the fp16
        gradient scaler's factor, for penalties that differentiate the critic themselves."""
        return None

    @torch.no_grad()
    def after_d_step(self, critic: nn.Module) -> None:
        """Called after every discriminator optimizer step."""

    def outputs(self, out: torch.Tensor) -> torch.Tensor:
        """D's outputs as reported: critic values, or probabilities for a loss on logits."""
        return out

    def report(self, out: torch.Tensor) -> torch.Tensor:
        """The mean D output logged as ``d/real`` / ``d/fake``."""
        return self.outputs(out).mean()


class BCELoss(GANLoss):
    """The original GAN loss on logits, with the minimax or non-saturating generator loss and
    optional one-sided label smoothing (real targets 1 - s, fake targets stay 0)."""

    def __init__(self, generator_loss: str = "non_saturating", label_smoothing: float = 0.0):
        self.non_saturating = generator_loss == "non_saturating"
        self.real_target = 1.0 - label_smoothing

    def d_loss(self, real_out: torch.Tensor, fake_out: torch.Tensor) -> torch.Tensor:
        real = F.binary_cross_entropy_with_logits(
            real_out, torch.full_like(real_out, self.real_target)
        )
        fake = F.binary_cross_entropy_with_logits(fake_out, torch.zeros_like(fake_out))
        return real + fake

    def g_loss(self, fake_out: torch.Tensor) -> torch.Tensor:
        if self.non_saturating:  # -log D(G(z))
            return F.binary_cross_entropy_with_logits(fake_out, torch.ones_like(fake_out))
        # log(1 - D(G(z))), minimized: the saturating minimax objective
        return -F.binary_cross_entropy_with_logits(fake_out, torch.zeros_like(fake_out))

    def outputs(self, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out)


class HingeLoss(GANLoss):
    """The hinge loss (Lim & Ye 2017; SNGAN, BigGAN): D minimizes E[relu(1 - D(x))] +
    E[relu(1 + D(G(z)))], G minimizes -E[D(G(z))]."""

    def d_loss(self, real_out: torch.Tensor, fake_out: torch.Tensor) -> torch.Tensor:
        return F.relu(1 - real_out).mean() + F.relu(1 + fake_out).mean()

    def g_loss(self, fake_out: torch.Tensor) -> torch.Tensor:
        return -fake_out.mean()


class LeastSquaresLoss(GANLoss):
    """LSGAN (Mao et al. 2017) with targets a-b-c = 0-1-1: D minimizes
    1/2 E[(D(x) - 1)^2] + 1/2 E[D(G(z))^2], G minimizes 1/2 E[(D(G(z)) - 1)^2]."""

    def d_loss(self, real_out: torch.Tensor, fake_out: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((real_out - 1) ** 2).mean() + 0.5 * (fake_out**2).mean()

    def g_loss(self, fake_out: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((fake_out - 1) ** 2).mean()


class WassersteinLoss(GANLoss):
    """Critic maximizes E[D(x)] - E[D(G(z))]; its value estimates the Wasserstein-1 distance."""

    wasserstein = True

    def d_loss(self, real_out: torch.Tensor, fake_out: torch.Tensor) -> torch.Tensor:
        return fake_out.mean() - real_out.mean()

    def g_loss(self, fake_out: torch.Tensor) -> torch.Tensor:
        return -fake_out.mean()


class WeightClippingLoss(WassersteinLoss):
    """WGAN (Arjovsky et al. 2017): every critic weight clipped to [-c, c] after each step."""

    def __init__(self, clip_value: float = 0.01):
        self.clip_value = clip_value

    @torch.no_grad()
    def after_d_step(self, critic: nn.Module) -> None:
        for param in critic.parameters():
            param.clamp_(-self.clip_value, self.clip_value)


class GradientPenaltyLoss(WassersteinLoss):
    """WGAN-GP (Gulrajani et al. 2017): lambda * E[(||grad_x D(x_hat)||_2 - 1)^2] on random
    interpolates x_hat = e * x + (1 - e) * G(z), with e ~ U[0, 1] drawn per sample."""

    def __init__(self, gp_weight: float = 10.0):
        self.gp_weight = gp_weight

    def regularizer(
        self,
        critic: nn.Module,
        real: torch.Tensor,
        fake: torch.Tensor,
        labels: torch.Tensor | None,
        grad_scale: torch.Tensor | float = 1.0,
    ) -> torch.Tensor:
        """A packed critic (PacGAN) sees packs of m samples as one input: each pack gets one e,
        and the norm is that of the gradient with respect to the whole pack."""
        pack = pack_of(critic)
        eps = torch.rand(real.shape[0] // pack, device=real.device).repeat_interleave(pack)
        eps = eps.view((real.shape[0],) + (1,) * (real.dim() - 1))
        mixed = eps * real + (1 - eps) * fake.detach().to(real.dtype)
        norms = input_gradient_norms(critic, mixed, labels, grad_scale)
        return self.gp_weight * ((norms - 1) ** 2).mean()


def input_gradient_norms(
    critic: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor | None,
    grad_scale: torch.Tensor | float = 1.0,
) -> torch.Tensor:
    """||grad_x D(x)||_2 for each input D judges (each pack, for a packed D; a PatchGAN's D(x)
    is the mean of its patch scores, as its loss takes it), in fp32, with the graph kept so a
    penalty on it trains D. Under fp16 the gradient is taken of the scaled output
    and unscaled (the AMP recipe for gradient penalties), so it cannot underflow."""
    inputs = inputs.detach().requires_grad_(True)
    out = critic(inputs, labels).float()
    out = out.reshape(len(out), -1).mean(1)  # a patch critic's score: the mean of its patches'
    (grad,) = torch.autograd.grad(out.sum() * grad_scale, inputs, create_graph=True)
    return (grad.float() / grad_scale).reshape(len(out), -1).norm(2, dim=1)


class R1Penalty:
    """R1 (Mescheder et al. 2018): gamma/2 * E[||grad_x D(x)||^2] on real data, for any loss.

    Lazy regularization (Karras et al. 2020, StyleGAN2): with ``every`` = k > 1 the penalty is
    computed on every k-th critic step only, and weighted by k so its expected size is the same.
    """

    def __init__(self, weight: float, every: int = 1) -> None:
        self.weight = weight
        self.every = every

    def due(self, critic_step: int) -> bool:
        """Whether the critic step numbered ``critic_step`` (from 0) carries the penalty."""
        return self.weight > 0 and critic_step % self.every == 0

    def __call__(
        self,
        critic: nn.Module,
        real: torch.Tensor,
        labels: torch.Tensor | None,
        grad_scale: torch.Tensor | float = 1.0,
    ) -> torch.Tensor:
        norms = input_gradient_norms(critic, real, labels, grad_scale)
        return self.every * self.weight / 2 * (norms**2).mean()


def feature_matching(
    critic: nn.Module,
    real: torch.Tensor,
    real_labels: torch.Tensor | None,
    fake: torch.Tensor,
    fake_labels: torch.Tensor | None,
) -> torch.Tensor:
    """Feature matching (Salimans et al. 2016, sec. 3.1), G's loss instead of the adversarial
    one: the mean over features of (E f(G(z)) - E f(x))^2, f = D's features (what enters its
    output layer), E the batch mean; the real batch's mean is a constant, as in
    openai/improved-gan's ``loss_gen = T.mean(T.square(mom_gen - mom_real))``."""
    with torch.no_grad():
        real_mean = critic.features(real, real_labels).float().mean(0)
    fake_mean = critic.features(fake, fake_labels).float().mean(0)
    return (fake_mean - real_mean).square().mean()


class HistoricalAverage:
    """Historical averaging (Salimans et al. 2016, sec. 3.3): a player's cost gains
    ``weight`` * ||theta - (1/t) sum_i theta[i]||^2, the distance of its parameters from the
    mean of all their past values (one value per optimizer step, the current one included).
    The mean is torch's AveragedModel (its default averaging is that equal-weight mean) and is
    a constant in the gradient."""

    def __init__(self, net: nn.Module, weight: float) -> None:
        self.weight = weight
        self.mean = AveragedModel(net)
        self.mean.update_parameters(net)  # theta[1]: the initial parameters

    def __call__(self, net: nn.Module) -> torch.Tensor:
        pairs = zip(net.parameters(), self.mean.module.parameters(), strict=True)
        return self.weight * sum(((p - m.detach()) ** 2).sum() for p, m in pairs)

    def update(self, net: nn.Module) -> None:
        """Add the parameters after an optimizer step to the mean."""
        self.mean.update_parameters(net)

    def state_dict(self) -> dict[str, Any]:
        return self.mean.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean.load_state_dict(state)


LOSS_CONTRACT = Contract(
    GANLoss,
    ("d_loss", "g_loss"),
    "a subclass of ganexp.losses.GANLoss overriding d_loss and g_loss",
)


def build_loss(cfg: LossConfig) -> GANLoss:
    """The loss named by ``loss.name`` with its parameters, or the user's class named by
    ``loss._target_`` (ganexp.parts.user)."""
    if cfg._target_ is not None:
        return build_part("loss", cfg._target_, LOSS_CONTRACT, cfg.parameters, values=settings(cfg))
    if cfg.name == LossName.bce:
        return BCELoss(cfg.generator_loss, cfg.label_smoothing)
    if cfg.name == LossName.wgan_clip:
        return WeightClippingLoss(cfg.clip_value)
    if cfg.name == LossName.hinge:
        return HingeLoss()
    if cfg.name == LossName.lsgan:
        return LeastSquaresLoss()
    return GradientPenaltyLoss(cfg.gp_weight)
