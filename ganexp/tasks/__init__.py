"""What a run learns: one module per task (generation, semi-supervised, paired and unpaired
translation), each one :class:`~ganexp.tasks.base.Task` subclass with its own terms and
networks, found by its ``name`` (:func:`task_of`). A new task is one module here and one YAML
in ``ganexp/conf/task/`` (and its name in :data:`ganexp.config.TASKS`)."""

from __future__ import annotations

import functools
import importlib
import pkgutil

from ganexp.config import REPLICAS_ALLOWED, TASKS, RunConfig
from ganexp.tasks.base import Task

__all__ = ["Task", "check", "registry", "task_of"]


@functools.cache
def registry() -> dict[str, type[Task]]:
    """Each task's class by name, in the order of :data:`ganexp.config.TASKS`: the named
    :class:`Task` subclass of each module of this package."""
    found: dict[str, type[Task]] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for value in vars(module).values():
            own = isinstance(value, type) and value.__module__ == module.__name__
            if own and issubclass(value, Task) and value.name:
                found[value.name] = value
    missing = [name for name in TASKS if name not in found]
    if missing:
        raise ImportError(f"no Task subclass in ganexp/tasks/ named {', '.join(missing)}")
    return {name: found[name] for name in TASKS}


def task_of(cfg: RunConfig) -> Task:
    """The task of run config ``cfg`` (``task.name``, one of :data:`ganexp.config.TASKS`)."""
    return registry()[cfg.task.name](cfg)


def check(cfg: RunConfig) -> Task:
    """The task's checks of a validated config (:func:`ganexp.config.validate`), raised as one
    ConfigError line before anything runs: what only other tasks read or build, this task's
    own checks, and replicas; returns the task."""
    task = task_of(cfg)
    others = [kind for kind in registry().values() if type(task) is not kind]
    for other in others:
        other.refuse_keys(cfg)
    for other in others:
        other.refuse_networks(cfg, task)
    task.validate()
    replicas = cfg.trainer.replicas
    if replicas > 1 and not task.replicas:
        raise task.refusal(REPLICAS_ALLOWED.format(replicas))
    return task
