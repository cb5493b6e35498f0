"""Generation (``task=generation``, the default): G learns to generate samples of the data from
noise, unconditional or a cGAN (``conditional=true``). The contract's defaults are its behaviour
(:class:`~ganexp.tasks.base.Task`); it alone trains as stacked replicas or in several
processes."""

from __future__ import annotations

from typing import ClassVar

from ganexp.tasks.base import Task


class Generation(Task):
    name: ClassVar[str] = "generation"
    replicas: ClassVar[bool] = True
    processes: ClassVar[bool] = True

    def tags(self) -> list[str]:
        """No tag: the run's other axes say what it is."""
        return []
