"""Paired image-to-image translation (Pix2Pix, Isola et al. 2017): ``task=paired_translation``.

G translates an input image A (given where a cGAN's labels go) into the target B; D judges
(A, B) pairs patch by patch. Besides the adversarial loss G has the L1 term below. Grids show
input | output | target for held-out pairs; evaluation compares translations of held-out inputs
with their targets (:class:`~ganexp.metrics.translation.PairedEvaluator`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import torch

from ganexp.config import PAIRED_DATASETS
from ganexp.errors import ConfigError
from ganexp.parts.terms import StepBatch, Term, Value
from ganexp.tasks.base import Evaluator, OptimizerFor
from ganexp.tasks.translation import Translation

if TYPE_CHECKING:
    from torch import nn

    from ganexp.data.spec import Shard


class L1(Term):
    """G's ``task.l1_weight`` x mean |G(a) - b| over pixels (Pix2Pix's lambda = 100), of the
    step's targets b (``real``) and G's translations G(a) of its inputs a (``fake``)."""

    player = "g"
    keys = ("loss/l1",)
    autocast = False

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def __call__(self, step: StepBatch) -> Value:
        targets, translations = step.real, step.fake
        value = self.weight * (translations.float() - targets).abs().mean()
        return value, {"loss/l1": value}


class PairedTranslation(Translation):
    """G(z, a) -> b on aligned pairs; D(x, a) judges x beside the input a."""

    name: ClassVar[str] = "paired_translation"
    datasets: ClassVar[tuple[str, ...]] = PAIRED_DATASETS

    def check_data(self, spec) -> None:
        from ganexp.data.translation import check_pairs

        check_pairs(self.cfg.data)

    def terms(
        self, critic: nn.Module, device: torch.device, world: Shard, optimizer_like_d: OptimizerFor
    ) -> list[Term]:
        weight = self.cfg.task.l1_weight
        return [L1(weight)] if weight else []

    def held_out(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``count`` held-out inputs and their targets, in [-1, 1]."""
        from ganexp.data.images import to_signed_unit
        from ganexp.data.translation import held_out_pairs

        inputs, targets, _ = held_out_pairs(self.cfg.data)
        return to_signed_unit(inputs[:count]), to_signed_unit(targets[:count])

    def show(
        self,
        generator: nn.Module,
        noise: torch.Tensor,
        inputs: torch.Tensor | None,
        targets: torch.Tensor | None,
    ) -> torch.Tensor:
        """Each cell input | output | target, side by side."""
        translations = super().show(generator, noise, inputs, targets)
        return torch.cat([inputs, translations, targets], dim=-1)

    def evaluator(
        self, device: torch.device, image_metrics: Callable[[], Evaluator], classifiers=None
    ) -> Evaluator:
        from ganexp.metrics.translation import paired_evaluator

        return paired_evaluator(self.cfg, device)

    def translator(self, generator: nn.Module, direction: str) -> nn.Module:
        if direction != "ab":
            raise ConfigError("direction", direction, "paired translation has one: ab")
        return generator
