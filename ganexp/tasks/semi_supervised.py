"""Semi-supervised learning with a GAN (Salimans et al. 2016, sec. 5): ``task=semi_supervised``.

D is a classifier with K class logits l(x) and the fake class implicit (its logit fixed at 0), so
D(x) = P(real | x) = Z / (Z + 1) with Z = sum_k exp(l_k(x)): D's logit is logsumexp(l(x)).
:class:`ClassifierCritic` gives that logit as D's score, so the adversarial loss stays the
``loss`` axis; with BCE it is openai/improved-gan's unsupervised loss

    loss_unl = -0.5 E lse(l(x)) + 0.5 E softplus(lse(l(x))) + 0.5 E softplus(lse(l(G(z))))

times two (BCE sums a real and a fake mean; softplus(s) - s = softplus(-s)). To that D adds
``task.supervised_weight`` x the cross-entropy of its K logits on a batch of the labelled subset
(``data.labels_per_class`` examples of each class). G's default loss is feature matching.

The supervised-only baseline (``eval/ssl_baseline_accuracy``) is a copy of D at its
initialization, trained in the same loop on the same labelled batches with cross-entropy alone
and the same optimizer settings: the same network and labels without the unlabelled images
and the generator.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ganexp.config import lookup
from ganexp.data import BatchSource
from ganexp.data.images import to_signed_unit
from ganexp.errors import ConfigError
from ganexp.parts.terms import StepBatch, Term, Value
from ganexp.tasks.base import Classifiers, Evaluator, OptimizerFor, Task

if TYPE_CHECKING:
    from ganexp.data.spec import DataSpec, Shard

BATCH = 500  # test images classified at once
NEEDS_LABELS = (
    "needs a data set with at least 2 classes; data.name={} has none (or data.num_classes=0)"
)


class ClassifierCritic(nn.Module):
    """A discriminator as a K-class classifier: a linear layer of K logits on the features of
    ``critic`` (what enters its own output layer); its score is logsumexp of the logits.
    ``critic``'s own output layer is not used."""

    def __init__(self, critic: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.critic = critic
        self.classes = nn.Linear(critic.feature_width, num_classes)
        self.feature_width = critic.feature_width

    def features(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.critic.features(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.classes(self.critic.features(x))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """D's logit of "real": logsumexp of the class logits (the fake logit is 0)."""
        return torch.logsumexp(self.logits(x).float(), dim=1)


class SemiSupervised(Term):
    """D's supervised term (``task.supervised_weight`` x the cross-entropy of its class logits on
    a labelled batch), logged as ``loss/supervised``; with it, the baseline's own step on the
    same batch (its loss logged as ``loss/baseline``, not added)."""

    keys = ("loss/supervised", "loss/baseline")
    state_key = "semi_supervised"
    autocast = False

    def __init__(
        self,
        labelled: BatchSource,
        baseline: ClassifierCritic,
        opt_baseline: torch.optim.Optimizer,
        weight: float,
    ) -> None:
        self.labelled = labelled
        self.baseline = baseline
        self.opt_baseline = opt_baseline
        self.weight = weight

    def __call__(self, step: StepBatch) -> Value:
        """The weighted cross-entropy of D on the next labelled batch; the baseline's
        unweighted cross-entropy on it, after its own optimizer step on it, is logged."""
        x, y = self.labelled.next_batch()
        supervised = F.cross_entropy(step.critic.logits(x).float(), y)
        baseline = F.cross_entropy(self.baseline.logits(x).float(), y)
        self.opt_baseline.zero_grad(set_to_none=True)
        baseline.backward()
        self.opt_baseline.step()
        weighted = self.weight * supervised
        return weighted, {"loss/supervised": weighted, "loss/baseline": baseline.detach()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline.state_dict(),
            "opt_baseline": self.opt_baseline.state_dict(),
            "labelled": self.labelled.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.baseline.load_state_dict(state["baseline"])
        self.opt_baseline.load_state_dict(state["opt_baseline"])
        self.labelled.load_state_dict(state["labelled"])


@torch.no_grad()
def accuracy(classifier: ClassifierCritic, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``images`` (float in [-1, 1]) whose arg-max class logit is the label; the
    classifier is evaluated in eval mode (batch norm's running statistics) and put back."""
    was_training = classifier.training
    classifier.eval()
    device = next(classifier.parameters()).device
    right = 0
    for start in range(0, len(images), BATCH):
        x = images[start : start + BATCH].to(device)
        predicted = classifier.logits(x).argmax(dim=1).cpu()
        right += int((predicted == labels[start : start + BATCH]).sum())
    classifier.train(was_training)
    return right / len(images)


class SemiSupervisedEvaluator:
    """``ssl_accuracy`` (D's) and ``ssl_baseline_accuracy`` on the test split, and
    ``ssl_gain``, their difference; headed by the first, next to the image metrics of the
    generator (``images``, or none)."""

    headline = "ssl_accuracy"
    maximize = True

    def __init__(
        self,
        critic: ClassifierCritic,
        baseline: ClassifierCritic,
        test: tuple[torch.Tensor, torch.Tensor, str],
        images: Any | None,
    ) -> None:
        self.critic = critic
        self.baseline = baseline
        uint8, self.labels, self.split = test
        self.images = to_signed_unit(uint8)
        self.image_metrics = images

    def setup(self) -> dict[str, Any]:
        record = self.image_metrics.setup() if self.image_metrics is not None else {}
        reason = f"classification accuracy on the {self.split}"
        return record | {
            "features_reason": reason,
            "ssl_split": self.split,
            "headline": f"eval/{self.headline}",
        }

    def __call__(
        self, generator: nn.Module, should_stop: Callable[[], bool] | None = None
    ) -> dict[str, float]:
        results = {}
        if self.image_metrics is not None:
            results = self.image_metrics(generator, should_stop)
        ssl = accuracy(self.critic, self.images, self.labels)
        baseline = accuracy(self.baseline, self.images, self.labels)
        return results | {
            "ssl_accuracy": ssl,
            "ssl_baseline_accuracy": baseline,
            "ssl_gain": ssl - baseline,
        }


class SemiSupervisedLearning(Task):
    """D a K-class classifier (:class:`ClassifierCritic`) with its supervised term and the
    supervised-only baseline (:class:`SemiSupervised`); evaluated by both accuracies."""

    name: ClassVar[str] = "semi_supervised"
    own_keys: ClassVar[tuple[str, ...]] = ("data.labels_per_class",)
    critic_needs: ClassVar[tuple[str, ...]] = ("features", "feature_width")

    def validate(self) -> None:
        cfg = self.cfg
        refused = {
            "conditional": cfg.conditional,
            "discriminator.pack": cfg.discriminator.pack != 1,
            "discriminator.batch_view": cfg.discriminator.batch_view != "none",
        }
        for key, taken in refused.items():
            if taken:
                allowed = f"task={self.name} makes D a classifier of single samples; leave it unset"
                raise ConfigError(key, lookup(cfg, key), allowed)

    def check_data(self, spec: DataSpec) -> None:
        """Classes to learn, and ``data.labels_per_class`` examples of each."""
        from ganexp.data import labelled_subset

        if spec.num_classes < 2:
            raise self.refusal(NEEDS_LABELS.format(self.cfg.data.name))
        labelled_subset(self.cfg.data)

    def wrap_critic(self, critic: nn.Module, spec: DataSpec) -> nn.Module:
        """K class logits on D's features."""
        return ClassifierCritic(critic, spec.num_classes)

    def terms(
        self, critic: nn.Module, device: torch.device, world: Shard, optimizer_like_d: OptimizerFor
    ) -> list[Term]:
        """The labelled batches and the supervised-only baseline: D as initialized."""
        from ganexp.data import build_labelled

        cfg = self.cfg
        labelled = build_labelled(cfg.data, cfg.trainer.batch_size, device, cfg.seed + 1, world)
        baseline = copy.deepcopy(critic)
        optimizer = optimizer_like_d(baseline.parameters())
        return [SemiSupervised(labelled, baseline, optimizer, cfg.task.supervised_weight)]

    def evaluator(
        self,
        device: torch.device,
        image_metrics: Callable[[], Evaluator],
        classifiers: Classifiers | None = None,
    ) -> Evaluator:
        """Both accuracies on the test split, beside the image metrics of G's samples."""
        images = image_metrics()
        if classifiers is None:
            return images
        from ganexp.data.test_split import eval_split

        test = eval_split(self.cfg.data, self.cfg.seed)
        return SemiSupervisedEvaluator(*classifiers, test, images)

    def classifiers(self, critic: nn.Module, terms: list[Term]) -> Classifiers | None:
        """D and the baseline of the run's :class:`SemiSupervised` term."""
        term = next((t for t in terms if isinstance(t, SemiSupervised)), None)
        return None if term is None else (critic, term.baseline)

    def restored_classifiers(
        self,
        state: dict[str, Any],
        path: Path,
        build_critic: Callable[[], nn.Module],
        device: torch.device,
    ) -> Classifiers:
        task_state = state.get(SemiSupervised.state_key)
        if not isinstance(task_state, dict) or "baseline" not in task_state:
            allowed = "incomplete checkpoint: a semi-supervised run's holds its baseline classifier"
            raise ConfigError("checkpoint", str(path), allowed)
        nets = []
        for weights in (state["discriminator"], task_state["baseline"]):
            net = build_critic()
            try:
                net.load_state_dict(weights)
            except (RuntimeError, TypeError, AttributeError) as ex:
                first = str(ex).strip().splitlines()[0]
                allowed = f"its classifier weights do not fit its config ({first})"
                raise ConfigError("checkpoint", str(path), allowed) from None
            nets.append(net.to(device))
        return nets[0], nets[1]

    def extra_networks(self, generator: nn.Module, critic: nn.Module) -> list[nn.Module]:
        """The supervised-only baseline, a copy of D trained alongside it."""
        return [critic]
