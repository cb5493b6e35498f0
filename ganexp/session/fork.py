"""A fork: ``ganexp resume=RUN [KEY=VALUE ...]`` into a new folder is RUN's experiment.

Every key the command line does not set takes the value in RUN's checkpoint (its resolved
config), so a fork repeats none of RUN's overrides; the keys it does set must still be ones a
resume may change (preflight checks that, as for any resume). Two exceptions: the device keys
are the machine's (a fork may run elsewhere), and a ``_target_`` (a user's class) is never
taken from a file: the command line must name the class itself (``loss=mine`` with its
``hydra.searchpath``, or ``loss._target_=...``), or the fork is refused in one line.

Continuing RUN in its own folder (the same command, or ``hydra.run.dir=RUN``) keeps its W&B
run; a fork starts a new W&B run, its history up to the checkpoint copied in.
"""

from __future__ import annotations

import math
import re
from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from ganexp.config import CONFIG_MODULE
from ganexp.engine.checkpoint import load_resume, resume_source
from ganexp.errors import ConfigError
from ganexp.session.preflight import _flat, split_argv

NOT_INHERITED = ("device.", "resume")  # the machine's own keys, and the fork's source
# the overrides the command line gained from the checkpoint (not the user's: not in the run name)
INHERITED: set[str] = set()


def _value(value: Any) -> str:
    """``value`` in Hydra's override grammar."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_value(v)}" for k, v in value.items()) + "}"
    return quoted(str(value))


def quoted(text: str) -> str:
    """``text`` as a quoted value of Hydra's grammar, where a backslash is literal but before a
    quote or the end, and a quote is escaped."""
    text = re.sub(r"(\\+)(?='|$)", lambda run: run[1] * 2, text)
    return "'" + text.replace("'", "\\'") + "'"


def _composed(overrides: list[str]) -> dict[str, Any]:
    cfg = compose("config", overrides=overrides)
    return _flat(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))


def _named(overrides: list[str]) -> list[str]:
    """The keys (and groups) the command line names, swept ones included."""
    return [o.lstrip("+~").split("=", 1)[0] for o in overrides if "=" in o]


def fork_overrides(argv: list[str]) -> list[str]:
    """The overrides a ``resume=`` command into a new folder gains from its checkpoint (none
    for any other command): ``KEY=VALUE`` for each key it does not set whose checkpoint value
    differs from what the command line composes to."""
    flags, overrides = split_argv(argv)
    resume = [o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith("resume=")]
    if not resume or not resume[-1] or resume[-1] == "null" or "," in resume[-1]:
        return []
    if {"-h", "--help", "--cfg", "-c", "--info", "-i", "--hydra-help"} & set(flags):
        return []
    loaded = load_resume(resume_source(resume[-1], None))
    if loaded is None or not isinstance(loaded[0].get("config"), dict):
        return []  # a checkpoint without its config: judged by its contents, as before
    saved = _flat(loaded[0]["config"])
    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        plain, mine = (
            _flat(
                OmegaConf.to_container(
                    compose("config", overrides=o), resolve=True, enum_to_str=True
                )
            )
            for o in ([], fixed)
        )
    named = _named(overrides)

    def set_here(key: str) -> bool:
        return mine.get(key) != plain.get(key) or any(
            key == n or key.startswith(f"{n}.") for n in named
        )

    found = []
    for key, value in saved.items():
        if key.startswith(NOT_INHERITED) or set_here(key) or mine.get(key, object()) == value:
            continue
        if key.endswith("_target_"):
            raise ConfigError(
                key,
                value,
                "the checkpoint's class is not taken from a file: name it on the command line "
                "(its config group with hydra.searchpath, or the key itself)",
            )
        found.append(f"{'' if key in mine else '+'}{key}={_value(value)}")
    INHERITED.update(found)
    return found
