"""The user's own parts: a class named by ``_target_`` (Hydra's convention) in the ``loss``,
``generator``, ``discriminator`` or ``norm`` node, imported from the user's package or from the
folder ganexp runs in, checked against the contract of its kind, and built with the node's
other keys as its constructor keywords (its *parameters*) plus what ganexp knows about the run
(its *context*: the data's shape, the latent size, the norm factory, ...), each passed only if
the constructor names it. Every way this can fail is one :class:`ConfigError` line, raised by
preflight before any work.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hydra.utils import instantiate

from ganexp.errors import ConfigError


@dataclass(frozen=True)
class Contract:
    """What a kind of part must be: a subclass of ``base`` that overrides ``methods``."""

    base: type
    methods: tuple[str, ...]
    words: str  # the contract in words, for the error line

    def check(self, key: str, target: str, cls: type) -> None:
        if not inspect.isclass(cls):
            raise ConfigError(key, target, "is not a class")
        if not issubclass(cls, self.base):
            raise ConfigError(key, target, f"must be {self.words}")
        missing = [m for m in self.methods if getattr(cls, m) is getattr(self.base, m)]
        if missing:
            raise ConfigError(key, target, f"must be {self.words}; it lacks {missing[0]}")


def settings(node: Any) -> dict[str, Any]:
    """The ganexp keys of a typed config node (``width``, ``gp_weight``, ...): a user's class
    that names one of them among its constructor keywords gets its value."""
    fields = dataclasses.fields(node)
    return {f.name: getattr(node, f.name) for f in fields if f.name != "_target_"}


def import_class(key: str, target: str) -> type:
    """The object ``target`` (``module.Name``) names; ``key`` is the config key, for errors."""
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    module_name, _, name = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as ex:
        reason = str(ex).splitlines()[0] if module_name else "not a dotted path module.Class"
        top = module_name.partition(".")[0]
        if isinstance(ex, ModuleNotFoundError) and ex.name == top:  # not found at all: where
            reason += (
                f"; ganexp imports a user's module from the working folder ({os.getcwd()}) "
                f"or PYTHONPATH: run it from the folder that holds {top}.py or {top}/, or add "
                "that folder to PYTHONPATH"
            )
        raise ConfigError(key, target, f"cannot be imported ({reason})") from None


def build_part(
    node: str,
    target: str,
    contract: Contract,
    parameters: Mapping[str, Any],
    context: Mapping[str, str] | None = None,
    values: Mapping[str, Any] | None = None,
) -> Any:
    """Build the class ``target`` of config node ``node`` with ``parameters`` (its YAML keys)
    and, of ``values``, those its constructor names. ``context`` maps each context keyword to
    where ganexp takes it from (for the error when a YAML key tries to set it)."""
    key = f"{node}._target_"
    cls = import_class(key, target)
    contract.check(key, target, cls)
    context, values = dict(context or {}), dict(values or {})
    signature = inspect.signature(cls)
    params = signature.parameters.values()
    named = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    any_keyword = any(p.kind is p.VAR_KEYWORD for p in params)
    for name, value in parameters.items():
        if name in context:
            raise ConfigError(f"{node}.{name}", value, f"is set by ganexp ({context[name]})")
        if name not in named and not any_keyword:
            own = [n for n in named if n not in context]
            allowed = f"takes {', '.join(own)}" if own else "takes no parameters"
            raise ConfigError(
                f"{node}.{name}", value, f"not a parameter of {target}, which {allowed}"
            )
    given = {name: value for name, value in values.items() if name in named or any_keyword}
    for param in params:
        variadic = param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL)
        required = param.default is param.empty and not variadic
        if required and param.name not in parameters and param.name not in given:
            raise ConfigError(f"{node}.{param.name}", None, f"missing; {target} requires it")
    try:
        build = instantiate({"_target_": target, "_partial_": True, **parameters})
        return build(**given)  # context objects passed as they are, not as configs
    except Exception as ex:
        reason = str(ex.__cause__ or ex).splitlines()[0]
        raise ConfigError(key, target, f"failed to build: {reason}") from None
