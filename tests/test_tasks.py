"""Tasks keep one contract: each is one module of ganexp/tasks/ with one Task subclass, found by
its name, and nothing outside ganexp/tasks/ and the schema (ganexp/config.py) reads the name."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from helpers import compose_config

import ganexp
from ganexp.config import TASKS, validate
from ganexp.tasks import registry, task_of
from ganexp.tasks.base import Task

ROOT = Path(ganexp.__file__).parent


def test_every_task_is_one_module_one_class_and_one_yaml() -> None:
    assert list(registry()) == list(TASKS)
    yamls = {
        p.name.removesuffix(".yaml") for p in (resources.files("ganexp.conf") / "task").iterdir()
    }
    for name, kind in registry().items():
        assert issubclass(kind, Task) and kind.name == name
        assert kind.__module__ == f"ganexp.tasks.{name}", kind
        assert name in yamls


def test_the_config_selects_its_task() -> None:
    cfg = validate(compose_config("task=paired_translation"))
    task = task_of(cfg)
    assert task.name == "paired_translation" and task.translates and task.conditional
    assert not task_of(validate(compose_config())).conditional


def test_nothing_outside_the_tasks_and_the_schema_reads_the_task_name() -> None:
    reads = re.compile(r"task\.name|task\[.name.\]|\"(" + "|".join(TASKS) + r")\"")
    found = [
        f"{path.relative_to(ROOT)}: {line.strip()}"
        for path in sorted(ROOT.rglob("*.py"))
        if path.parent.name != "tasks" and path.name != "config.py"
        for line in path.read_text().splitlines()
        if reads.search(line.split("#")[0])
    ]
    assert found == [
        # the checkpoint entry of the semi-supervised term (SemiSupervised.state_key)
        'engine/checkpoint.py: "semi_supervised": (_is(dict), "a dict"),',
    ]
