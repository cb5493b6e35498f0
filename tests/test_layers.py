"""The package's layers point one way: command line -> session -> engine, tasks, metrics,
tracking, analysis -> parts, models, data -> config and errors. No import circle anywhere
(imports inside functions count), and data and metrics never import the training loop."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ganexp

ROOT = Path(ganexp.__file__).parent
# a module's layer: the first folder under ganexp/, or the module itself at the top
LAYER = {
    "cli": 4,
    "session": 3,
    "engine": 2,
    "tasks": 2,
    "metrics": 2,
    "tracking": 2,
    "analysis": 2,
    "parts": 1,
    "models": 1,
    "data": 1,
    "config": 0,
    "errors": 0,
    "keys": 0,
    "conf": 0,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The ganexp modules ``path`` imports, anywhere in it (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {name for name in found if name.split(".")[0] == "ganexp"}


# top-level modules that belong to a folder: `python -m ganexp`, and the public home of the
# class a user's loss subclasses (ganexp.losses.GANLoss, whatever the layout)
FOLDER_OF = {"__main__": "cli", "losses": "parts"}


def folder(module: str) -> str:
    name = module.split(".")[1] if "." in module else "config"
    return FOLDER_OF.get(name, name)


def layer(module: str) -> int:
    return LAYER[folder(module)]


def graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (a package's __init__ stands for it)."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    return {
        m: {r for r in map(resolve, imports(p)) if r and r != m and not m.startswith(r + ".")}
        for m, p in modules.items()
    }


def test_every_module_has_a_layer() -> None:
    assert all(folder(m) in LAYER for m in graph())


def test_layers_point_down() -> None:
    upward = [
        f"{m} -> {t}"
        for m, targets in graph().items()
        for t in targets
        if layer(t) > layer(m) or (layer(t) == layer(m) and layer(m) in (1, 3, 4) and _other(m, t))
    ]
    assert not upward, upward


def _other(m: str, t: str) -> bool:
    """Whether ``t`` is in another folder of the same low layer (parts, models and data are
    independent of each other, except that parts and data may use models' helpers)."""
    a, b = folder(m), folder(t)
    return a != b and b != "models"


def test_no_import_circle() -> None:
    edges = graph()
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in edges[m]:
            if state.get(t) == 1:
                pytest.fail("import circle: " + " -> ".join([*path[path.index(t) :], m, t]))
            if t not in state:
                visit(t, [*path, m])
        state[m] = 2

    for m in edges:
        if m not in state:
            visit(m, [])


def test_data_and_metrics_never_import_the_loop() -> None:
    loop = ("ganexp.engine", "ganexp.session", "ganexp.cli")
    bad = [
        f"{m} -> {t}"
        for m, targets in graph().items()
        if m.startswith(("ganexp.data", "ganexp.metrics"))
        for t in targets
        if t.startswith(loop) and t != "ganexp.engine.checkpoint"
    ]
    assert not bad, bad
