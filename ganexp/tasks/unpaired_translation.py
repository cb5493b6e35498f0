"""Unpaired image-to-image translation (CycleGAN, Zhu et al. 2017,
junyanz/pytorch-CycleGAN-and-pix2pix): ``task=unpaired_translation``.

G_AB and G_BA translate between domains A and B, run as one generator of inputs ``A | B``
(:class:`CycleGenerators`); D_B and D_A judge each domain's images (:class:`CycleCritics`).
CycleGAN's own parts: the cycle and identity terms, and the pool of past generated images the
discriminators are shown. Grids show A -> B -> A and B -> A -> B of held-out images; evaluation
translates held-out images of each domain (:class:`~ganexp.metrics.translation.UnpairedEvaluator`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from ganexp.config import UNPAIRED_DATASETS
from ganexp.errors import ConfigError
from ganexp.models.common import generate
from ganexp.parts.terms import StepBatch, Term, Value
from ganexp.tasks.base import Evaluator, OptimizerFor
from ganexp.tasks.translation import Translation

if TYPE_CHECKING:
    from ganexp.data.spec import DataSpec, Shard


def cycle_loss(
    real_a: torch.Tensor,
    rec_a: torch.Tensor,
    real_b: torch.Tensor,
    rec_b: torch.Tensor,
    weight: float,
) -> torch.Tensor:
    """lambda (||F(G(a)) - a||_1 + ||G(F(b)) - b||_1), each a mean over pixels (the
    repository's ``lambda_A = lambda_B = 10``)."""
    return weight * ((rec_a - real_a).abs().mean() + (rec_b - real_b).abs().mean())


def identity_loss(
    g_ab: nn.Module, g_ba: nn.Module, real_a: torch.Tensor, real_b: torch.Tensor, weight: float
) -> torch.Tensor:
    """weight (||G(b) - b||_1 + ||F(a) - a||_1): each generator leaves images of its target
    domain alone. The repository's weight is ``lambda_identity x lambda`` = 0.5 x 10."""
    same_b = g_ab(None, real_b)
    same_a = g_ba(None, real_a)
    return weight * ((same_b - real_b).abs().mean() + (same_a - real_a).abs().mean())


class ImagePool:
    """The last ``size`` generated images (Shrivastava et al. 2017). :meth:`query` returns, for
    each new image, the image itself while the pool fills; once full, with probability 1/2 a
    stored image chosen at random (which the new one replaces), else the new one. Draws come
    from torch's generator, so a checkpointed run resumes with the same choices."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []

    @torch.no_grad()
    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        shown = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                shown.append(image)
            elif float(torch.rand(())) > 0.5:
                k = int(torch.randint(self.size, ()))
                shown.append(self.images[k])
                self.images[k] = image.clone()
            else:
                shown.append(image)
        return torch.stack(shown)

    def state_dict(self) -> dict[str, Any]:
        stacked = torch.stack(self.images).cpu() if self.images else None
        return {"size": self.size, "images": stacked}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.size = state["size"]
        images = state["images"]
        self.images = [] if images is None else list(images.to(device).unbind())


def swap_halves(x: torch.Tensor) -> torch.Tensor:
    """``u | v`` (two equal halves of a batch) to ``v | u``."""
    first, second = x.chunk(2)
    return torch.cat([second, first])


class CycleGenerators(nn.Module):
    """G_AB and G_BA as one generator, so that the training step treats CycleGAN like any GAN:
    of inputs ``A | B`` (two equal halves of a batch) it makes ``G_AB(A) | G_BA(B)``, the fakes
    of B, then of A. Each network translates its input; z is not used."""

    def __init__(self, g_ab: nn.Module, g_ba: nn.Module) -> None:
        super().__init__()
        self.g_ab, self.g_ba = g_ab, g_ba

    def forward(self, z: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor:
        a, b = labels.chunk(2)
        return torch.cat([self.g_ab(None, a), self.g_ba(None, b)])


class CycleCritics(nn.Module):
    """D_B and D_A as one critic: of images ``B | A``, D_B's patch scores of the first half
    and D_A's of the second (each judges its own domain, real or translated)."""

    def __init__(self, d_b: nn.Module, d_a: nn.Module) -> None:
        super().__init__()
        self.d_b, self.d_a = d_b, d_a

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        b, a = x.chunk(2)
        return torch.cat([self.d_b(b), self.d_a(a)])


class CycleTerms(Term):
    """G's own terms in CycleGAN: the cycle term and (``identity_weight`` > 0) the identity
    term, of the inputs ``A | B`` and their translations ``G_AB(A) | G_BA(B)``."""

    player = "g"

    def __init__(self, cycle_weight: float, identity_weight: float) -> None:
        self.cycle_weight = cycle_weight
        self.identity_weight = identity_weight
        self.keys = ("loss/cycle", "loss/identity") if identity_weight else ("loss/cycle",)

    def __call__(self, step: StepBatch) -> Value:
        inputs = step.labels  # translation: the batch's second element is the input image
        a, b = inputs.chunk(2)
        fake_b, fake_a = step.fake.chunk(2)
        g_ab, g_ba = step.generator.g_ab, step.generator.g_ba
        rec_a, rec_b = g_ba(None, fake_b), g_ab(None, fake_a)
        cycle = cycle_loss(a, rec_a, b, rec_b, self.cycle_weight)
        if not self.identity_weight:
            return cycle, {"loss/cycle": cycle}
        identity = identity_loss(g_ab, g_ba, a, b, self.identity_weight)
        return cycle + identity, {"loss/cycle": cycle, "loss/identity": identity}


class DomainPools(Term):
    """One :class:`ImagePool` per domain, for fakes ``B | A``: what D_B and D_A are shown."""

    state_key = "pool"

    def __init__(self, size: int) -> None:
        self.pools = (ImagePool(size), ImagePool(size))

    def show(self, fake: torch.Tensor) -> torch.Tensor:
        halves = zip(self.pools, fake.chunk(2), strict=True)
        return torch.cat([pool.query(half) for pool, half in halves])

    def state_dict(self) -> dict[str, Any]:
        return {"b": self.pools[0].state_dict(), "a": self.pools[1].state_dict()}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.pools[0].load_state_dict(state["b"], device)
        self.pools[1].load_state_dict(state["a"], device)


class UnpairedTranslation(Translation):
    """Two translators and two critics, trained as one G and one D on batches ``A | B``."""

    name: ClassVar[str] = "unpaired_translation"
    datasets: ClassVar[tuple[str, ...]] = UNPAIRED_DATASETS

    def validate(self) -> None:
        super().validate()
        consensus = self.cfg.loss.consensus_weight
        if consensus and self.cfg.task.pool_size:
            # the pool shows D detached past fakes: the part of the field through D's loss is lost
            allowed = "not with the image pool, which shows D detached fakes: task.pool_size=0"
            raise ConfigError("loss.consensus_weight", consensus, allowed)
        classes = list(self.cfg.data.domain_classes)
        if self.cfg.data.name == "fashion_domains":
            good = len(classes) == 2 and classes[0] != classes[1]
            good = good and all(0 <= c < 10 for c in classes)
            allowed = "two different Fashion-MNIST classes, 0-9 (domain A's, then B's)"
            if not good:
                raise ConfigError("data.domain_classes", classes, allowed)

    def check_data(self, spec: DataSpec) -> None:
        from ganexp.data.translation import check_domains

        check_domains(self.cfg.data)

    def generators(self, build: Callable[[], nn.Module]) -> nn.Module:
        return CycleGenerators(build(), build())

    def critics(self, build: Callable[[], nn.Module]) -> nn.Module:
        return CycleCritics(build(), build())

    def critic_condition(self, spec: DataSpec) -> int:
        """None: each critic judges its own domain's images alone."""
        return 0

    def terms(
        self, critic: nn.Module, device: torch.device, world: Shard, optimizer_like_d: OptimizerFor
    ) -> list[Term]:
        task = self.cfg.task
        terms: list[Term] = [CycleTerms(task.cycle_weight, task.identity_weight)]
        return terms + ([DomainPools(task.pool_size)] if task.pool_size else [])

    def held_out(self, count: int) -> tuple[torch.Tensor, None]:
        """As many held-out A's as B's, inputs ``A | B`` in [-1, 1], about ``count`` in all;
        no targets."""
        from ganexp.data.images import to_signed_unit
        from ganexp.data.translation import held_out_domains

        a, b, _ = held_out_domains(self.cfg.data)
        half = min(max(1, count // 2), len(a), len(b))
        return to_signed_unit(torch.cat([a[:half], b[:half]])), None

    def show(
        self,
        generator: nn.Module,
        noise: torch.Tensor,
        inputs: torch.Tensor | None,
        targets: torch.Tensor | None,
    ) -> torch.Tensor:
        """Each cell input | translated | translated back: G(A | B) = G_AB(A) | G_BA(B),
        swapped, goes back the other way."""
        translated = generate(generator, noise, inputs)
        back = swap_halves(generate(generator, noise, swap_halves(translated)))
        return torch.cat([inputs, translated, back], dim=-1)

    def evaluator(
        self, device: torch.device, image_metrics: Callable[[], Evaluator], classifiers=None
    ) -> Evaluator:
        from ganexp.metrics.translation import unpaired_evaluator

        return unpaired_evaluator(self.cfg, device)

    def step_load(self, batch: int) -> tuple[int, int]:
        """A batch holds both domains; G also translates back (the cycle term) and translates
        each domain to itself (the identity term)."""
        return 2 * batch, 3 if self.cfg.task.identity_weight else 2

    def translator(self, generator: nn.Module, direction: str) -> nn.Module:
        return generator.g_ab if direction == "ab" else generator.g_ba
