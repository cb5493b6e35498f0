"""Frechet distance, KID and Inception Score of generated images, computed by torchmetrics.

Every metric takes uint8 ``(N, C, H, W)`` images, or the features of a feature extractor (an
``nn.Module`` with ``num_features`` whose forward maps uint8 images to ``(N, d)`` features and
whose ``logits`` maps them to ``(N, num_classes)``). The extractor runs once per generated batch:
:meth:`FrechetDistance.update` returns the features it computed, for KID and precision/recall.

KID and IS draw random subsets with ``torch.randperm``; they run under a forked, seeded CPU RNG so
that an evaluation is reproducible and leaves the training RNG untouched.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics.image import fid, inception, kid

KID_SUBSET_SIZE = 1000
KID_SUBSETS = 100
REAL_STATES = ("real_features_sum", "real_features_cov_sum", "real_features_num_samples")


def _device(module: nn.Module) -> torch.device:
    tensor = next(itertools.chain(module.parameters(), module.buffers()), None)
    return torch.device("cpu") if tensor is None else tensor.device


# Rank 0 evaluates alone in a multi-process run: torchmetrics must not wait for the others.
_LOCAL = {"sync_on_compute": False}


def _buffered(metric: type[Any], **kwargs: Any) -> Any:
    """A list-state torchmetrics metric, built without its warning that it keeps every feature:
    that is the point here, and the warning would come back at every evaluation."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features")
        return metric(**kwargs, **_LOCAL)


class _FeatureTap(nn.Module):
    """The extractor, holding on to its last output until :meth:`pop` hands it over."""

    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        self.extractor = extractor
        self.num_features = int(extractor.num_features)
        self._last: Tensor | None = None

    def forward(self, images: Tensor) -> Tensor:
        self._last = self.extractor(images)
        return self._last

    def pop(self) -> Tensor:
        last, self._last = self._last, None
        assert last is not None
        return last


class FrechetDistance:
    """FD between a fixed real set and the generated images seen since the last :meth:`compute`.

    Built on torchmetrics' ``FrechetInceptionDistance(feature=extractor, reset_real_features=False,
    normalize=False)``. Its states are sums in float64: ``real_features_sum`` (d,),
    ``real_features_cov_sum`` (d, d) and ``real_features_num_samples``, and the same for the
    generated side. Memory is O(d^2) whatever the number of images: four (d, d) float64 tensors
    (both sides and torchmetrics' copies of their zero defaults), 134 MB at d = 2048, 0.5 MB at
    d = 128. The real side can be loaded from a cache (:meth:`load_real_state`), so that an
    evaluation costs only the generated side; :meth:`compute` resets the generated side, so repeated
    evaluations in one run hold no more than the first.

    The distance itself is torchmetrics' ``_compute_fid``: |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 sum
    sqrt(eig(S1 S2)). Using the metric's own compute (not a copy with ``scipy.linalg.sqrtm``) keeps
    one definition of FD in the project, needs no scipy at run time, and avoids sqrtm's complex
    round-off parts; the tests check it against a float64 sqrtm.
    """

    def __init__(self, extractor: nn.Module) -> None:
        self._tap = _FeatureTap(extractor)
        metric = fid.FrechetInceptionDistance(
            feature=self._tap, reset_real_features=False, normalize=False, **_LOCAL
        )
        self.metric = metric.to(_device(extractor))

    @property
    def device(self) -> torch.device:
        return self.metric.real_features_sum.device

    @torch.no_grad()
    def update(self, images: Tensor, real: bool = False) -> Tensor:
        """Add a batch of uint8 images to one side; return their ``(N, d)`` features."""
        self.metric.update(images.to(self.device), real=real)
        return self._tap.pop()

    def real_state(self) -> dict[str, Tensor]:
        """The real-side states, on the CPU, as :meth:`load_real_state` takes them."""
        return {name: getattr(self.metric, name).cpu().clone() for name in REAL_STATES}

    def load_real_state(self, state: dict[str, Tensor]) -> None:
        """Replace the real side with cached states (from :meth:`real_state`)."""
        for name in REAL_STATES:
            current = getattr(self.metric, name)
            setattr(self.metric, name, state[name].to(current.device, current.dtype))

    def compute(self) -> float:
        """The distance, after which the generated side is forgotten (the real side is kept)."""
        value = float(self.metric.compute())
        self.reset_fake()
        return value

    def reset_fake(self) -> None:
        """Forget the generated side (an abandoned evaluation's images); the real side stays."""
        self.metric.reset()


@torch.no_grad()
def kernel_distance(real: Tensor, fake: Tensor, seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over subsets) between two feature sets, with torchmetrics'
    ``KernelInceptionDistance`` (cubic polynomial kernel, unbiased MMD^2).

    torchmetrics needs ``subset_size`` <= the size of each set; it is min(1000, N_real, N_fake)
    (1000 is the usual value; for sets smaller than that every subset is the whole set, so the
    std is 0). Features on different devices are compared on ``fake``'s device.
    """
    size = min(KID_SUBSET_SIZE, len(real), len(fake))
    if size < 2:
        raise ValueError(f"KID needs at least 2 samples on each side, got {len(real)}, {len(fake)}")
    metric = _buffered(
        kid.KernelInceptionDistance, feature=nn.Identity(), subsets=KID_SUBSETS, subset_size=size
    )
    metric.update(real.to(fake.device, torch.float32), real=True)
    metric.update(fake.float(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


class Logits(nn.Module):
    """The extractor's class logits as its forward, which is what ``InceptionScore`` calls."""

    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        self.extractor = extractor

    def forward(self, images: Tensor) -> Tensor:
        return self.extractor.logits(images)


class InceptionScore:
    """IS (mean, std over ``splits``) of the images seen since the last :meth:`compute`,
    with torchmetrics' ``InceptionScore`` on the extractor's logits: exp E_x KL(p(y|x) || p(y)).

    With the classifier extractor this is the data set's own "classifier score"; it is at most
    ``num_classes``, reached when every prediction is confident and the classes are balanced.
    """

    def __init__(self, extractor: nn.Module, splits: int = 10) -> None:
        self.device = _device(extractor)
        metric = _buffered(inception.InceptionScore, feature=Logits(extractor), splits=splits)
        self.metric = metric.to(self.device)

    @torch.no_grad()
    def update(self, images: Tensor) -> None:
        """Add a batch of uint8 images (their logits are kept until :meth:`compute`)."""
        self.metric.update(images.to(self.device))

    def compute(self, seed: int = 0) -> tuple[float, float]:
        """The score, after which the images seen are forgotten."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            mean, std = self.metric.compute()
        self.metric.reset()
        return float(mean), float(std)
