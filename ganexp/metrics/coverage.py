"""Class coverage on labelled data: which classes a classifier sees in the generated samples.

The KL is KL(generated || data) = sum_c p_gen(c) log(p_gen(c) / p_data(c)), the "reverse" KL of the
mode-collapse literature (as in :mod:`ganexp.metrics.toy`): 0 when the class histograms match,
log K when every sample falls in one class of K equally likely ones. It weighs each class by how
often the generator produces it, so a dropped class costs only through the mass moved elsewhere;
the histogram (logged beside it) shows which classes are missing.

Both distributions are smoothed with ``eps`` before the KL, p = (p + eps) / (1 + K eps), so that a
class the data never shows (p_data = 0) gives a large, finite value instead of infinity; an empty
generated class contributes about eps log(eps), i.e. nothing. With eps = 1e-8 the collapsed value
is log K to within 1e-5, and a class missing from the data costs about log(1 / eps) = 18.

``data`` is best the same classifier's predictions on real images, so that its confusions appear on
both sides; the data set's label histogram also works.
"""

from __future__ import annotations

import torch
from torch import Tensor


def class_histogram(predictions: Tensor, num_classes: int) -> Tensor:
    """The (K,) float64 class frequencies of ``predictions`` (N,) class indices."""
    counts = torch.bincount(predictions.flatten().cpu(), minlength=num_classes).double()
    return counts / counts.sum()


def class_kl(generated: Tensor, data: Tensor, eps: float = 1e-8) -> float:
    """KL(generated || data) between two (K,) class distributions, both smoothed by ``eps``."""
    p, q = (_smooth(d.double().cpu(), eps) for d in (generated, data))
    return float((p * (p / q).log()).sum())


def _smooth(distribution: Tensor, eps: float) -> Tensor:
    return (distribution + eps) / (distribution.sum() + len(distribution) * eps)
