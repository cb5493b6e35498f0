"""Mode statistics on toy 2-D mixtures (the VEEGAN / PacGAN definitions).

As in PacGAN's evaluation code (``MetricLogger`` in fjxmlzn/PacGAN, following VEEGAN): each sample
is assigned to its nearest mode; it is high quality when that distance is under 3 standard
deviations; a mode is covered when at least one high-quality sample is assigned to it. The reverse
KL is KL(p || uniform), p the histogram of the high-quality samples over the modes (the data's
modes are equally likely); with no high-quality sample at all it is set to log K, its value for a
generator collapsed onto one mode.
"""

from __future__ import annotations

import math

import torch


def mode_stats(samples: torch.Tensor, centers: torch.Tensor, std: float) -> dict[str, float]:
    """``modes_covered`` (count), ``high_quality`` (fraction of all samples) and ``reverse_kl``
    of (N, 2) ``samples`` against (K, 2) ``centers`` of isotropic modes of standard deviation
    ``std``."""
    samples, centers = samples.double().cpu(), centers.double().cpu()
    dist = torch.cdist(samples, centers)
    nearest_dist, nearest = dist.min(dim=1)
    good = nearest_dist < 3 * std
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
