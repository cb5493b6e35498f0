"""The Dirac-GAN's networks (Mescheder, Geiger and Nowozin 2018, "Which training methods for
GANs do actually converge?", sec. 2.2): the data is the point 0, G(z) = theta and D(x) = psi x,
each a single parameter, so a run is a point moving in the (theta, psi) plane and its unique
equilibrium is (0, 0).

The paper writes its losses with D high on fakes (its L(theta, psi) = E f(D(G(z))) + E f(-D(x))),
ganexp's with D high on real data; :class:`DiracDiscriminator` returns -psi x, so that ``psi`` is
the paper's psi and every trajectory, vector field and phase portrait reads in the paper's
coordinates (tests/test_dirac.py checks ganexp's updates against the paper's vector fields)."""

from __future__ import annotations

import torch
from torch import nn


class DiracGenerator(nn.Module):
    """G(z) = theta for every z: a batch of 1-D points all at ``theta``."""

    def __init__(self, start: float) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(float(start)))

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.theta.expand(z.shape[0], 1)


class DiracDiscriminator(nn.Module):
    """D(x) = psi x in the paper's sign (returned as -psi x, see the module docstring)."""

    def __init__(self, start: float) -> None:
        super().__init__()
        self.psi = nn.Parameter(torch.tensor(float(start)))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return -self.psi * x.reshape(x.shape[0])
