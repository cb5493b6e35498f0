"""CycleGAN's own parts (Zhu et al. 2017, junyanz/pytorch-CycleGAN-and-pix2pix): the cycle and
identity terms, and the pool of past generated images the discriminators are shown."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


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
