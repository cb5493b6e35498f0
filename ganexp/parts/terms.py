"""Optional loss terms: what a step adds to a player's loss besides the adversarial loss.

Each term is one object with one small contract (:class:`Term`): the player it adds to, its
value in a step, the keys it logs, its state for checkpoints (and for undoing an abandoned
critic step), and whether stacked replicas can compute it. The trainer's step loops over its
terms (:meth:`ganexp.engine.trainer.Trainer.run_step`); a new term is one class here (or in its
task's module) and one config key that :func:`loss_terms` or the task reads.

The order of a player's terms is the order they are computed in, which is the order they draw
random numbers in: it is part of a run's numerics (``tests/test_golden.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ganexp.config import LossConfig
from ganexp.parts.losses import (
    GANLoss,
    GradientPenaltyLoss,
    HistoricalAverage,
    R1Penalty,
    feature_matching,
)


@dataclass
class StepBatch:
    """What a term sees of one critic or generator step."""

    generator: nn.Module  # G itself (never its DDP wrapper)
    critic: nn.Module  # D itself
    real: torch.Tensor
    labels: torch.Tensor | None  # the real batch's labels (translation: the input images)
    fake: torch.Tensor  # G's output, with its graph in the generator step
    fake_labels: torch.Tensor | None  # what G was given (a cGAN's labels, translation's inputs)
    grad_scale: torch.Tensor | float = 1.0  # the fp16 scaler's factor (penalties unscale by it)
    critic_step: int = 0  # critic steps taken before this one, over the whole run


Value = tuple[torch.Tensor | None, dict[str, torch.Tensor]]  # (added to the loss, logged)


class Term:
    """One optional term of a player's loss.

    ``player``: "d" (added to the critic's loss in every critic step) or "g" (to the generator's).
    ``keys``: the statistics it logs, averaged over steps like ``loss/d``. ``state_key``: its
    entry in a checkpoint, or None when it keeps no state; a critic-side term's state is also
    put back when a stop signal abandons a step. ``penalty``: it differentiates D with respect
    to its input (a double backward: the memory estimate counts one more D pass).
    ``stackable``: stacked replicas (``trainer.replicas``) can compute it.
    ``autocast``: computed under the run's mixed precision, as D's passes are.
    ``replaces_adversarial`` (generator side): the term is G's loss instead of the loss's own
    ``g_loss``, and is logged as ``loss/g``.
    """

    player: str = "d"
    key: str = ""  # the config key that asks for it (named when it is refused)
    keys: tuple[str, ...] = ()
    state_key: str | None = None
    penalty: bool = False
    stackable: bool = False
    replaces_adversarial: bool = False
    autocast: bool = True  # computed under the run's autocast (bf16, fp16) like the losses

    def __call__(self, step: StepBatch) -> Value:
        """(what is added to the player's loss, or None; the logged values by key)."""
        return None, {}

    def show(self, fake: torch.Tensor) -> torch.Tensor:
        """Critic side: what D is shown of the fakes (detached, except under consensus
        optimization, which differentiates D's loss in G's parameters)."""
        return fake

    def after_update(self, net: nn.Module) -> None:
        """After the player's optimizer step, with that player's network."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        """Put back what :meth:`state_dict` returned."""


class LossPenalty(Term):
    """The penalty that comes with the loss: WGAN-GP's gradient penalty, or the ``regularizer``
    a user's loss overrides; logged as ``loss/gp``."""

    key = "loss.name"
    keys = ("loss/gp",)
    penalty = True

    def __init__(self, loss: GANLoss) -> None:
        self.loss = loss
        self.stackable = type(loss) is GradientPenaltyLoss  # the stacked step knows its math

    def __call__(self, step: StepBatch) -> Value:
        value = self.loss.regularizer(
            step.critic, step.real, step.fake, step.labels, step.grad_scale
        )
        return value, ({} if value is None else {"loss/gp": value})


class R1(Term):
    """R1 on real data (``loss.r1_weight``), lazily every ``loss.r1_every`` critic steps."""

    key = "loss.r1_weight"
    keys = ("loss/r1",)
    penalty = True

    def __init__(self, weight: float, every: int) -> None:
        self.r1 = R1Penalty(weight, every)

    def __call__(self, step: StepBatch) -> Value:
        if not self.r1.due(step.critic_step):
            return None, {}
        value = self.r1(step.critic, step.real, step.labels, step.grad_scale)
        return value, {"loss/r1": value}


class Historical(Term):
    """Historical averaging of one player (``loss.historical_weight``): its distance from the
    mean of its past parameters, the mean updated after each of its optimizer steps."""

    key = "loss.historical_weight"
    autocast = False

    def __init__(self, player: str, net: nn.Module, weight: float) -> None:
        self.player = player
        self.keys = (f"loss/hist_{player}",)
        self.state_key = f"historical_{player}"
        self.average = HistoricalAverage(net, weight)

    def __call__(self, step: StepBatch) -> Value:
        value = self.average(step.critic if self.player == "d" else step.generator)
        return value, {self.keys[0]: value}

    def after_update(self, net: nn.Module) -> None:
        self.average.update(net)

    def state_dict(self) -> dict[str, Any]:
        return self.average.state_dict()

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.average.load_state_dict(state)


class FeatureMatching(Term):
    """G matches the mean of D's features on real data (``loss.generator_loss=feature_matching``)
    instead of the adversarial loss."""

    player = "g"
    key = "loss.generator_loss"
    replaces_adversarial = True

    def __call__(self, step: StepBatch) -> Value:
        value = feature_matching(step.critic, step.real, step.labels, step.fake, step.fake_labels)
        return value, {}


def loss_terms(
    cfg: LossConfig, loss: GANLoss, generator: nn.Module, critic: nn.Module
) -> list[Term]:
    """The terms the ``loss`` node asks for, critic side then generator side, in their order."""
    terms: list[Term] = []
    if type(loss).regularizer is not GANLoss.regularizer:
        terms.append(LossPenalty(loss))
    if cfg.r1_weight > 0:
        terms.append(R1(cfg.r1_weight, cfg.r1_every))
    if cfg.historical_weight > 0:
        terms.append(Historical("d", critic, cfg.historical_weight))
        terms.append(Historical("g", generator, cfg.historical_weight))
    if cfg.generator_loss == "feature_matching":
        terms.append(FeatureMatching())
    return terms


def has_penalty(terms: list[Term]) -> bool:
    """Whether any term differentiates D with respect to its input."""
    return any(term.penalty for term in terms)
