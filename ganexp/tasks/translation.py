"""What the two image-to-image translation tasks share (:class:`Translation`): G translates an
input image A, given where a cGAN's labels go, into domain B; their data, their networks, and
nothing that treats the input image as class labels or judges batches. The tasks themselves:
:mod:`ganexp.tasks.paired_translation`, :mod:`ganexp.tasks.unpaired_translation`."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from ganexp.config import Norm, RunConfig, lookup
from ganexp.errors import ConfigError
from ganexp.tasks.base import Task

if TYPE_CHECKING:
    pass

# the architectures only translation builds, by network
ARCHS = {"generator": ("unet", "resnet_blocks"), "discriminator": ("patch",)}
FOLDERS = ("pix2pix_folder", "cyclegan_folder")  # images without classes


class Translation(Task):
    """Image-to-image translation: the batch's second element (``labels`` in the step and its
    terms) is the input image, the first the target."""

    translates: ClassVar[bool] = True

    @classmethod
    def refuse_networks(cls, cfg: RunConfig, chosen: Task) -> None:
        if chosen.translates:
            return
        for net, archs in ARCHS.items():
            network = getattr(cfg, net)
            if network._target_ is None and network.arch.value in archs:
                allowed = f"is for image-to-image translation; task={chosen.name} takes dcgan, "
                raise ConfigError(f"{net}.arch", network.arch.value, allowed + "resnet, mlp")

    def validate(self) -> None:
        cfg, task = self.cfg, self.name
        for net, archs in ARCHS.items():
            network = getattr(cfg, net)
            arch = network.arch.value
            if network._target_ is None and arch not in archs:
                allowed = f"task={task} takes {net}.arch={' or '.join(archs)} (or a _target_)"
                raise ConfigError(f"{net}.arch", arch, allowed)
        name = cfg.data.name
        if name not in self.datasets:
            raise ConfigError("data.name", name, f"task={task} takes {', '.join(self.datasets)}")
        features = cfg.metrics.features
        if name in FOLDERS and features == "classifier":
            no_classes = "a folder of images has no classes to train a classifier on"
            raise ConfigError("metrics.features", features, f"{no_classes}: auto, inception")
        refused = {
            "conditional": cfg.conditional,
            "discriminator.pack": cfg.discriminator.pack != 1,
            "discriminator.batch_view": cfg.discriminator.batch_view != "none",
            "loss.generator_loss": cfg.loss.generator_loss == "feature_matching",
            "data.augment": cfg.data.augment != "none",
            "norm.generator": cfg.norm.generator == Norm.virtual_batch,
        }
        for key, taken in refused.items():
            if taken:
                allowed = f"task={task} conditions on the input image; leave it unset"
                raise ConfigError(key, lookup(cfg, key), allowed)

    def grid_columns(self, count: int) -> int:
        """Each cell is input | output | target (or input | translated | translated back)."""
        import math

        return max(1, math.isqrt(count) // 2)
