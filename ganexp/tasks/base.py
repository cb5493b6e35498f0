"""The one contract every task keeps (:class:`Task`): what the session, the hooks, the memory
estimate and the commands ask of a task instead of comparing its name.

A task is one module in ``ganexp/tasks/`` holding one :class:`Task` subclass (and its own terms
and networks) and one YAML in ``ganexp/conf/task/``; :func:`ganexp.tasks.task_of` finds the
class by ``task.name``. Every method has the plain generation's behaviour here, so a task
overrides only what it changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ganexp.config import RunConfig, lookup
from ganexp.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ganexp.data.spec import DataSpec, Shard
    from ganexp.parts.terms import Term

Evaluator = Any  # what the eval hook calls: setup() -> dict, __call__(G, should_stop) -> dict
Classifiers = tuple["nn.Module", "nn.Module"]  # a task's classifiers whose accuracy is evaluated
OptimizerFor = Callable[[Iterable["torch.nn.Parameter"]], "torch.optim.Optimizer"]


class Task:
    """What a run learns. One instance per run config (:func:`ganexp.tasks.task_of`).

    Class attributes: ``name`` (the ``task.name`` that selects it); ``translates``: G translates
    the batch's second element, an input image, instead of generating from noise (the trainer
    hands G and D that input where a cGAN hands its labels; grids and evaluation use held-out
    inputs); ``datasets``: data sets only this task takes (empty: the generation data sets);
    ``own_keys``: config keys only this task reads, refused (when set) in a run of another;
    ``critic_needs``: what a user's D must have for this task; ``replicas`` / ``processes``:
    stacked replicas (``trainer.replicas``) / several processes (torchrun) can train it.
    """

    name: ClassVar[str] = ""
    translates: ClassVar[bool] = False
    datasets: ClassVar[tuple[str, ...]] = ()
    own_keys: ClassVar[tuple[str, ...]] = ()
    critic_needs: ClassVar[tuple[str, ...]] = ()
    replicas: ClassVar[bool] = False
    processes: ClassVar[bool] = False

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg

    # --- the config ---------------------------------------------------------------------------

    @property
    def choice(self) -> tuple[str, str]:
        """The key and value that chose this task, for a refusal's message."""
        return "task.name", self.name

    def refusal(self, allowed: str) -> ConfigError:
        """A refusal of this task in this run, as one ConfigError line."""
        return ConfigError(*self.choice, allowed)

    def validate(self) -> None:
        """This task's checks of the other axes (config.validate has checked each key's own
        type and range), raised as one ConfigError line; before anything runs."""

    @classmethod
    def refuse_keys(cls, cfg: RunConfig) -> None:
        """In a run of another task: the keys and data sets only this task reads."""
        for key in cls.own_keys:
            value = lookup(cfg, key)
            if value is not None:
                raise ConfigError(key, value, f"is read by task={cls.name} only")
        if cfg.data.name in cls.datasets:
            raise ConfigError("data.name", cfg.data.name, f"is for task={cls.name}")

    @classmethod
    def refuse_networks(cls, cfg: RunConfig, chosen: Task) -> None:
        """In a run of task ``chosen``: the networks only this task (and its kind) builds."""

    def check_data(self, spec: DataSpec) -> None:
        """Preflight: what this task needs of the data found (``spec``), before any work."""

    def tags(self) -> list[str]:
        """The run's W&B tags naming the task."""
        return [f"task={self.name}"]

    # --- the networks and the step ------------------------------------------------------------

    @property
    def conditional(self) -> bool:
        """Whether G and D take the batch's second element: a cGAN's labels, or the input
        image of a translation."""
        return self.cfg.conditional or self.translates

    def generators(self, build: Callable[[], nn.Module]) -> nn.Module:
        """G from ``build()`` (the chosen architecture); a task of two translators builds two."""
        return build()

    def critics(self, build: Callable[[], nn.Module]) -> nn.Module:
        """D from ``build()`` (the chosen architecture); a task of two critics builds two."""
        return build()

    def critic_condition(self, spec: DataSpec) -> int:
        """Channels of the input image a patch critic sees beside the image it judges."""
        return spec.condition_channels

    def wrap_critic(self, critic: nn.Module, spec: DataSpec) -> nn.Module:
        """D as the task uses it (before its init, weight norm, packing and augmentation)."""
        return critic

    def terms(
        self,
        critic: nn.Module,
        device: torch.device,
        world: Shard,
        optimizer_like_d: OptimizerFor,
    ) -> list[Term]:
        """The loss terms the task adds to the step (:class:`ganexp.parts.terms.Term`), after
        the loss axis's own, in the order they are computed. ``optimizer_like_d``: an
        optimizer with D's settings for parameters of the task's own."""
        return []

    # --- sample grids ------------------------------------------------------------------------

    def held_out(self, count: int) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """The fixed inputs of the sample grids a task takes from the data instead of drawing
        labels: (inputs, targets or None) in [-1, 1], or None."""
        return None

    def grid_columns(self, count: int) -> int:
        """Cells per row of a grid of ``count`` samples."""
        import math

        return max(1, math.isqrt(count))

    def show(
        self,
        generator: nn.Module,
        noise: torch.Tensor,
        inputs: torch.Tensor | None,
        targets: torch.Tensor | None,
    ) -> torch.Tensor:
        """A grid's cells: G's samples of the fixed noise and ``inputs`` (a cGAN's labels,
        a translation's input images)."""
        from ganexp.models.common import generate

        return generate(generator, noise, inputs)

    # --- evaluation ---------------------------------------------------------------------------

    def evaluator(
        self,
        device: torch.device,
        image_metrics: Callable[[], Evaluator],
        classifiers: Classifiers | None = None,
    ) -> Evaluator:
        """The eval hook's metrics for this task on image data; ``image_metrics()`` builds the
        generation metrics (FID and the like) of G's samples, ``classifiers`` are the task's
        (:meth:`classifiers`, :meth:`restored_classifiers`)."""
        return image_metrics()

    def classifiers(self, critic: nn.Module, terms: list[Term]) -> Classifiers | None:
        """In training: the networks whose accuracy the task's evaluator reports, or None."""
        return None

    def restored_classifiers(
        self,
        state: dict[str, Any],
        path: Path,
        build_critic: Callable[[], nn.Module],
        device: torch.device,
    ) -> Classifiers | None:
        """In ganexp-eval: :meth:`classifiers` from checkpoint ``state`` (at ``path``), on
        ``device``; ``build_critic()`` builds an untrained D of the run's config."""
        return None

    # --- memory -------------------------------------------------------------------------------

    def step_load(self, batch: int) -> tuple[int, int]:
        """(examples in each network pass of a step, G's forward passes per step) for a batch
        of ``batch`` examples (the memory estimate)."""
        return batch, 1

    def extra_networks(self, generator: nn.Module, critic: nn.Module) -> list[nn.Module]:
        """Networks the task trains beside G and D, each with its gradients and optimizer
        state (the memory estimate; meta networks are enough)."""
        return []

    # --- ganexp-sample ------------------------------------------------------------------------

    def translator(self, generator: nn.Module, direction: str) -> nn.Module:
        """A translation's G for ``direction`` (ab: A -> B, ba: B -> A)."""
        raise ConfigError("mode", "translate", f"task={self.name} does not translate")
