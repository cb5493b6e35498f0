"""Paired image-to-image translation (Pix2Pix, Isola et al. 2017): ``task=paired_translation``.

G translates an input image A (given where a cGAN's labels go) into the target B; D judges
(A, B) pairs patch by patch. Besides the adversarial loss G has the L1 term below.
"""

from __future__ import annotations

from ganexp.parts.terms import StepBatch, Term, Value


class L1(Term):
    """G's ``task.l1_weight`` x mean |G(a) - b| over pixels (Pix2Pix's lambda = 100)."""

    player = "g"
    keys = ("loss/l1",)
    autocast = False

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def __call__(self, step: StepBatch) -> Value:
        value = self.weight * (step.fake.float() - step.real).abs().mean()
        return value, {"loss/l1": value}
