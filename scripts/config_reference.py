"""Write docs/config-reference.md from the run config's schema and the config groups' YAML files.

Every key of the run config (the dataclasses behind ``ganexp.config.RunConfig``) is listed under
its node with its type or allowed values, its default and its meaning: the ``# comment`` after the
field in the schema's source (with the comment lines directly above it, if any). Allowed values
come from the field's enum, or from the named tuples of :data:`ALLOWED` for keys typed ``str``.
Then every config group's options (``ganexp/conf/<group>/*.yaml``) with the first sentence of each
file's opening comment.

    python scripts/config_reference.py            # (re)write docs/config-reference.md
    python scripts/config_reference.py --check    # exit 1, in one line, when the file is stale
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import enum
import importlib
import inspect
import io
import sys
import tokenize
import types
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "config-reference.md"
REGENERATE = "python scripts/config_reference.py"

# Keys typed ``str`` (or ``list[str]``) whose allowed values are a tuple of the schema's module:
# key -> the tuple's name. A name that disappears is an error, not a silent gap.
ALLOWED: dict[str, str] = {
    "data.name": "DATASETS",
    "data.augment": "AUGMENTS",
    "data.augment_policy": "AUGMENT_POLICIES",
    "discriminator.batch_view": "BATCH_VIEWS",
    "loss.generator_loss": "GENERATOR_LOSSES",
    "optim.implementation": "OPTIMIZER_IMPLEMENTATIONS",
    "logger.name": "LOGGERS",
    "metrics.features": "FEATURES",
    "device.precision": "PRECISIONS",
    "task.name": "TASKS",
}


class ReferenceError(RuntimeError):
    """The schema no longer matches what this script knows about it."""


def field_comments(source: str) -> dict[tuple[str, str], str]:
    """(class name, field name) -> the field's meaning: the comment lines directly above the
    field, then its trailing ``# comment``, joined with "; "."""
    comments: dict[int, tuple[str, bool]] = {}  # line -> (text, whole line is a comment)
    lines = source.splitlines()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            whole = not lines[row - 1][:col].strip()
            comments[row] = (tok.string.lstrip("#").strip(), whole)
    found: dict[tuple[str, str], str] = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        for stmt in node.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            above: list[str] = []
            row = stmt.lineno - 1
            while row in comments and comments[row][1]:
                above.insert(0, comments[row][0])
                row -= 1
            trailing = comments.get(stmt.end_lineno or stmt.lineno)
            parts = [" ".join(above)] if above else []
            if trailing and not trailing[1]:
                parts.append(trailing[0])
            found[(node.name, stmt.target.id)] = "; ".join(parts)
    return found


def class_docstrings(source: str) -> dict[str, str]:
    """Class name -> its docstring, on one line."""
    docs = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and (doc := ast.get_docstring(node)):
            docs[node.name] = " ".join(doc.split())
    return docs


def _yaml(value: Any) -> str:
    """A default as it would be written on the command line or in YAML."""
    if isinstance(value, enum.Enum):
        return str(value.value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return str(value)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _type_name(tp: Any) -> str:
    """A field's type, in words a config user reads."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        named = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if origin is list:
        inner = _type_name(args[0]) if args and args[0] is not Any else "any"
        return f"list of {inner}"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of"
    return getattr(tp, "__name__", str(tp))


def _enum_of(tp: Any) -> type[enum.Enum] | None:
    for candidate in (tp, *typing.get_args(tp)):
        if isinstance(candidate, type) and issubclass(candidate, enum.Enum):
            return candidate
    return None


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(values: list[str]) -> str:
    return ", ".join(f"`{v}`" for v in values)


def _nodes(cls: type, prefix: str = "") -> list[tuple[str, type]]:
    """(node path, dataclass) for the run config and every nested node, depth first."""
    out = [(prefix, cls)]
    hints = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += _nodes(tp, f"{prefix}{f.name}.")
    return out


def render(module: types.ModuleType, source: str, conf_dir: Path | None) -> str:
    """The reference page for the schema ``module`` (whose source text is ``source``; its
    ``RunConfig`` is the root) and the config groups under ``conf_dir``."""
    root = module.RunConfig
    sources = {module.__name__: source}  # a node defined in another module: that one's source

    def source_of(cls: type) -> str:
        if cls.__module__ not in sources:
            sources[cls.__module__] = inspect.getsource(sys.modules[cls.__module__])
        return sources[cls.__module__]

    seen_keys: set[str] = set()
    out = [
        "# Config reference",
        "",
        f"<!-- generated by {REGENERATE} from the schema and ganexp/conf; do not edit by hand:",
        f"     run `{REGENERATE}` after changing either (tests/test_docs.py checks it) -->",
        "",
        "Every key of a run's config, by node, with its type or allowed values, the schema's",
        "default and what it means. A config group option or a preset may set another default",
        "(`loss=wgan_gp` brings its optimizer, `data=fashion_mnist` its `data.search`); the",
        "config a command would run is printed by `ganexp ... --cfg job`. Set any key on the",
        "command line as `node.key=value` (see [Composing a run](composing-a-run.md)).",
        "",
        "Nodes: "
        + ", ".join(f"[{p[:-1]}](#{p[:-1]})" for p, _ in _nodes(root) if p)
        + ", [top level](#top-level), [config groups](#config-groups).",
        "",
    ]
    nodes = _nodes(root)
    for path, cls in [*nodes[1:], nodes[0]]:
        hints = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
        title = path[:-1] if path else "top level"
        out += [f"## {title}", ""]
        comments, docs = field_comments(source_of(cls)), class_docstrings(source_of(cls))
        if path and (doc := docs.get(cls.__name__)):
            out += [doc, ""]
        out += ["| key | type / allowed values | default | meaning |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                continue
            key = f"{path}{f.name}"
            seen_keys.add(key)
            allowed = _type_name(tp)
            if members := _enum_of(tp):
                allowed = "one of " + _code([str(m.value) for m in members])
            elif key in ALLOWED:
                name = ALLOWED[key]
                values = getattr(module, name, None)
                if not isinstance(values, tuple):
                    raise ReferenceError(
                        f"{key}: the tuple {name} is gone from {module.__name__}; "
                        f"update ALLOWED in scripts/config_reference.py"
                    )
                allowed = f"{allowed}: " + _code(list(values))
            elif tp is bool:
                allowed = "`true`, `false`"
            default = _default(f)
            shown = "(required)" if default is dataclasses.MISSING else f"`{_yaml(default)}`"
            # a field a node inherits (UserClass's _target_) is commented in its base class
            owners = [base for base in cls.__mro__ if (base.__name__, f.name) in comments]
            meaning = comments.get((owners[0].__name__, f.name), "") if owners else ""
            out.append(f"| `{key}` | {_cell(allowed)} | {_cell(shown)} | {_cell(meaning)} |")
        out.append("")
    if missing := set(ALLOWED) - seen_keys:
        raise ReferenceError(
            f"ALLOWED names keys the schema lacks: {', '.join(sorted(missing))}; "
            f"update scripts/config_reference.py"
        )
    if conf_dir is not None:
        out += config_groups(conf_dir)
    return "\n".join(out).rstrip() + "\n"


def _opening(path: Path) -> str:
    """The first sentence of a YAML file's opening comment (at most three lines of it)."""
    taken: list[str] = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text.startswith("@package") or (not text and not taken):
            continue
        if not text:
            break
        taken.append(text)
        if text.endswith((".", ":")) or len(taken) == 3:
            break
    joined = " ".join(taken)
    return joined if not taken or joined.endswith((".", ":")) else joined + " ..."


def config_groups(conf_dir: Path) -> list[str]:
    """The section listing every config group's options and their opening comments."""
    out = [
        "## Config groups",
        "",
        "Choose an option with `GROUP=OPTION` (e.g. `norm=layer`); each is a YAML file under",
        "`ganexp/conf/GROUP/`, whose opening comment is quoted here (read the file for the rest).",
        "",
    ]
    groups = sorted({p.parent for p in conf_dir.rglob("*.yaml")} - {conf_dir})
    for group in groups:
        name = group.relative_to(conf_dir).as_posix()
        out += [f"### {name}", "", "| option | what |", "|---|---|"]
        for path in sorted(group.glob("*.yaml")):
            out.append(f"| `{name}={path.stem}` | {_cell(_opening(path))} |")
        out.append("")
    return out


def schema_module() -> tuple[types.ModuleType, str]:
    """The module that defines RunConfig, and its source text."""
    from ganexp.config import RunConfig

    module = inspect.getmodule(RunConfig)
    if module is None:
        raise ReferenceError("cannot find the module that defines RunConfig")
    return module, inspect.getsource(module)


def conf_dir() -> Path:
    """ganexp's config groups folder."""
    conf = importlib.import_module("ganexp.conf")
    return Path(conf.__file__).parent


def build() -> str:
    """The reference page for the installed schema and config groups."""
    module, source = schema_module()
    return render(module, source, conf_dir())


def main(argv: list[str] | None = None) -> int:
    """Write the page, or with --check say in one line whether it is stale (exit 1)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    try:
        text = build()
    except ReferenceError as err:
        print(f"config_reference: error: {err}", file=sys.stderr)
        return 2
    if args.check:
        if not args.output.exists() or args.output.read_text() != text:
            print(
                f"config_reference: {args.output.name} is stale (the schema or a config group "
                f"changed): run `{REGENERATE}`",
                file=sys.stderr,
            )
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"config_reference: wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
