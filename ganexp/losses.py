"""The loss interface and its three implementations.

Every loss gives the discriminator's loss, the generator's loss, an optional regularizer on the
discriminator (the gradient penalty), an optional hook after each discriminator step (weight
clipping), and what ``d/real``/``d/fake`` report: probabilities for BCE, raw critic values for the
Wasserstein losses, so "D(x) -> 1, D(G(z)) -> 0" is visible when D overpowers G.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ganexp.config import LossConfig, LossName
from ganexp.models.common import pack_of


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
        """Under fp16 autocast the input gradient is taken of the scaled output and unscaled
        (the AMP recipe for gradient penalties), so it cannot underflow; the norm is in fp32.
        A packed critic (PacGAN) sees packs of m samples as one input: each pack gets one e,
        and the norm is that of the gradient with respect to the whole pack."""
        pack = pack_of(critic)
        eps = torch.rand(real.shape[0] // pack, device=real.device).repeat_interleave(pack)
        eps = eps.view((real.shape[0],) + (1,) * (real.dim() - 1))
        mixed = (eps * real + (1 - eps) * fake.detach().to(real.dtype)).requires_grad_(True)
        out = critic(mixed, labels).float()
        (grad,) = torch.autograd.grad(out.sum() * grad_scale, mixed, create_graph=True)
        norms = (grad.float() / grad_scale).reshape(len(out), -1).norm(2, dim=1)
        return self.gp_weight * ((norms - 1) ** 2).mean()


def build_loss(cfg: LossConfig) -> GANLoss:
    """The loss named by ``loss.name``, with its parameters."""
    if cfg.name == LossName.bce:
        return BCELoss(cfg.generator_loss, cfg.label_smoothing)
    if cfg.name == LossName.wgan_clip:
        return WeightClippingLoss(cfg.clip_value)
    return GradientPenaltyLoss(cfg.gp_weight)
