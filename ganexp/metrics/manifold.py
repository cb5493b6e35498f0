"""Precision/recall and density/coverage of generated features against a fixed real set.

Precision and recall (Kynkaanniemi et al. 2019, k = 3): each set's manifold is the union of balls
around its points, each ball's radius the distance to the point's k-th nearest neighbour in its own
set (the point itself excluded). Precision is the fraction of generated points inside the real
manifold; recall the fraction of real points inside the generated one.

Density and coverage (Naeem et al. 2020, k = 5, real balls only): density is the number of
(generated point, real ball containing it) pairs divided by k * M, so about 1 when the two sets
come from the same distribution (it can exceed 1); coverage is the fraction of real balls holding
at least one generated point, about 1 - 2^-k (0.969) for two equal-sized sets from the same
distribution.

"Inside" is a strict ``<``, as in Naeem et al.'s reference code. Distances are float32
``torch.cdist``, taken ``block_size`` rows at a time: the full (N, M) matrix never exists, and each
block (block_size, N) is used for all four numbers before the next one is computed.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _blocks(n: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def knn_radii(points: Tensor, ks: tuple[int, ...], block_size: int = 1024) -> list[Tensor]:
    """For each k in ``ks``: the (N,) distances from each point to its k-th nearest other point."""
    top = max(ks) + 1  # the point itself is its own nearest neighbour, at distance 0
    if top > len(points):
        raise ValueError(f"{max(ks)}-nearest neighbours need more than {max(ks)} points")
    nearest = torch.cat(
        [
            torch.cdist(points[rows], points).topk(top, dim=1, largest=False).values
            for rows in _blocks(len(points), block_size)
        ]
    )
    return [nearest[:, k] for k in ks]


class ManifoldMetrics:
    """P, R (k = ``pr_k``) and D, C (k = ``dc_k``) of generated features against ``real``.

    The real k-NN radii are computed once, here; each :meth:`compute` then costs one pass over the
    generated set against itself (its radii, for recall) and one against the real set.
    """

    @torch.no_grad()
    def __init__(self, real: Tensor, pr_k: int = 3, dc_k: int = 5, block_size: int = 1024) -> None:
        self.real = real.float()
        self.pr_k, self.dc_k, self.block_size = pr_k, dc_k, block_size
        self.pr_radius, self.dc_radius = knn_radii(self.real, (pr_k, dc_k), block_size)

    @torch.no_grad()
    def compute(self, fake: Tensor) -> dict[str, float]:
        """``precision``, ``recall``, ``density``, ``coverage`` of ``fake`` (M, d) features."""
        fake = fake.to(self.real.device, torch.float32)
        (fake_radius,) = knn_radii(fake, (self.pr_k,), self.block_size)
        in_real = 0  # generated points inside the real manifold (precision)
        pairs = 0  # (generated point, real dc-ball holding it) pairs (density)
        recalled = torch.zeros(len(self.real), dtype=torch.bool, device=self.real.device)
        nearest = torch.full((len(self.real),), torch.inf, device=self.real.device)
        for rows in _blocks(len(fake), self.block_size):
            dist = torch.cdist(fake[rows], self.real)  # (block, N)
            in_real += int((dist < self.pr_radius).any(dim=1).sum())
            pairs += int((dist < self.dc_radius).sum())
            recalled |= (dist < fake_radius[rows, None]).any(dim=0)
            nearest = torch.minimum(nearest, dist.min(dim=0).values)
        return {
            "precision": in_real / len(fake),
            "recall": float(recalled.float().mean()),
            "density": pairs / (self.dc_k * len(fake)),
            "coverage": float((nearest < self.dc_radius).float().mean()),
        }
