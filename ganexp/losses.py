"""The public home of the loss interface a user's loss subclasses (``ganexp.losses.GANLoss``,
a stable import whatever the package's layout); the losses themselves are in
:mod:`ganexp.parts.losses`."""

from ganexp.parts.losses import GANLoss

__all__ = ["GANLoss"]
