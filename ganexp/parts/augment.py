"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

D sees every image, real or fake, through the same random differentiable augmentation, so that
it cannot memorize a small training set, while G still gets gradients through the augmentation.
The policies are the paper's (its code: mit-han-lab/data-efficient-gans, DiffAugment_pytorch.py):

- ``color``: brightness x + (u - 1/2), then saturation (x - mean_c) * 2u + mean_c, then contrast
  (x - mean) * (u + 1/2) + mean, with a fresh u ~ U[0, 1] per image for each, means per image
  (over channels for saturation, over channels and pixels for contrast);
- ``translation``: a shift of each image by whole pixels, up to 1/8 of its height and width in
  each direction, with zeros shifted in;
- ``cutout``: a square of half the height and width, centred uniformly at random (clipped at the
  border), set to zero.

It is applied by a forward pre-hook on D (:func:`attach`), so every pass through D (the critic
steps, the generator step, and the gradient penalty and R1, whose gradients are then taken with
respect to the images before augmentation) sees augmented inputs, and D's weights and checkpoint
keys stay what they are; D's ``features`` (feature matching) is wrapped alike. Written here
because no kept library ships it; its random draws come from torch's global generator, which
checkpoints carry, so a resumed run draws the same ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

Augmentation = Callable[[torch.Tensor], torch.Tensor]


def _uniform(x: torch.Tensor) -> torch.Tensor:
    """One U[0, 1] draw per image, shaped to broadcast over its channels and pixels."""
    return torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device)


def brightness(x: torch.Tensor) -> torch.Tensor:
    return x + (_uniform(x) - 0.5)


def saturation(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (2 * _uniform(x)) + mean


def contrast(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(x) + 0.5) + mean


def translation(x: torch.Tensor) -> torch.Tensor:
    """out[i, j] = x[i - dy, j - dx] (zero outside), dy, dx uniform in [-H/8, H/8], [-W/8, W/8]."""
    n, _, h, w = x.shape
    max_y, max_x = h // 8, w // 8
    dy = torch.randint(-max_y, max_y + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-max_x, max_x + 1, (n, 1, 1), device=x.device)
    padded = F.pad(x, (max_x, max_x, max_y, max_y))
    rows = torch.arange(h, device=x.device).view(1, h, 1) + max_y - dy
    cols = torch.arange(w, device=x.device).view(1, 1, w) + max_x - dx
    images = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded[images, :, rows, cols].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor) -> torch.Tensor:
    """Zero a (H/2) x (W/2) square per image, its centre uniform over the image."""
    n, _, h, w = x.shape
    size_y, size_x = h // 2, w // 2
    top = torch.randint(0, h + 1 - size_y % 2, (n, 1, 1), device=x.device) - size_y // 2
    left = torch.randint(0, w + 1 - size_x % 2, (n, 1, 1), device=x.device) - size_x // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (rows >= top) & (rows < top + size_y) & (cols >= left) & (cols < left + size_x)
    return x * (~inside).unsqueeze(1).to(x.dtype)


POLICIES: dict[str, tuple[Augmentation, ...]] = {
    "color": (brightness, saturation, contrast),
    "translation": (translation,),
    "cutout": (cutout,),
}


def diff_augment(x: torch.Tensor, policy: Sequence[str]) -> torch.Tensor:
    """``x`` (N, C, H, W) through the named policies, in order."""
    for name in policy:
        for augmentation in POLICIES[name]:
            x = augmentation(x)
    return x


def attach(discriminator: nn.Module, policy: Sequence[str]) -> nn.Module:
    """Make every call of ``discriminator``, and of its ``features`` (feature matching's view of
    D), see ``diff_augment(x, policy)`` instead of x: once, also where D's forward itself calls
    ``features`` on the input the hook has already augmented."""
    in_forward = False

    def augment_input(module: nn.Module, args: tuple) -> tuple:
        nonlocal in_forward
        in_forward = True
        return (diff_augment(args[0], policy), *args[1:])

    def forward_done(module: nn.Module, args: tuple, output: object) -> None:
        nonlocal in_forward
        in_forward = False

    discriminator.register_forward_pre_hook(augment_input)
    discriminator.register_forward_hook(forward_done, always_call=True)
    if not hasattr(discriminator, "features"):  # a user's D may have none
        return discriminator
    features = discriminator.features

    def augmented_features(x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return features(x if in_forward else diff_augment(x, policy), labels)

    discriminator.features = augmented_features
    return discriminator
