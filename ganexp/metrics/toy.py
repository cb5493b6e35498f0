"""Mode statistics on toy 2-D mixtures (the VEEGAN / PacGAN definitions).

A sample is high quality when it lies within 3 standard deviations of its nearest mode; a mode is
covered when at least one high-quality sample is nearest to it. The reverse KL compares the
histogram of high-quality samples over modes with the uniform distribution of the data.
"""

from __future__ import annotations

import math

import torch


def mode_stats(samples: torch.Tensor, centers: torch.Tensor, std: float) -> dict[str, float]:
    """``modes_covered``, ``high_quality`` (fraction) and ``reverse_kl`` of ``samples``."""
    samples, centers = samples.double().cpu(), centers.double().cpu()
    dist = torch.cdist(samples, centers)
    nearest_dist, nearest = dist.min(dim=1)
    good = nearest_dist <= 3 * std
    counts = torch.bincount(nearest[good], minlength=len(centers)).double()
    k = len(centers)
    if counts.sum() > 0:
        p = counts / counts.sum()
        nonzero = p > 0
        reverse_kl = float((p[nonzero] * (p[nonzero] * k).log()).sum())
    else:
        reverse_kl = math.log(k)
    return {
        "modes_covered": float((counts > 0).sum()),
        "high_quality": float(good.double().mean()),
        "reverse_kl": reverse_kl,
    }
