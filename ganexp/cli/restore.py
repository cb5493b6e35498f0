"""Rebuilding a trained generator from a checkpoint, for ``ganexp-eval`` and ``ganexp-sample``.

The checkpoint carries its run's resolved config; ``key=value`` arguments override it (a
different device, more samples) and are checked like the training command's.

A checkpoint is data someone may hand you, so what its config says may only select among
ganexp's own parts and values: a ``_target_`` anywhere in it (Hydra's key that names code to
call) is refused, except the four places where a run names the user's own class (``loss``,
``generator``, ``discriminator``, ``norm``), and those only when the command line names the same
class again: the user's code comes from the user, never from the file. A string that would
be resolved (``${...}``) is refused as well: a saved config is resolved already.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from ganexp.config import USER_PARTS, RunConfig, schema, validate
from ganexp.data import DataSpec
from ganexp.errors import ConfigError, GanexpError


@dataclass
class Restored:
    cfg: RunConfig
    spec: DataSpec
    generator: nn.Module
    device: torch.device
    state: dict[str, Any]
    path: Path


def _typed(key: str, value: str, default: Any) -> Any:
    """``value`` as the type of ``default``; ConfigError naming the key if it is not one."""
    if default is None or isinstance(default, str):
        return value
    if isinstance(default, bool):
        if value not in ("true", "false"):
            raise ConfigError(key, value, "allowed: true, false")
        return value == "true"
    try:
        return type(default)(value)
    except ValueError:
        kind = "an integer" if isinstance(default, int) else type(default).__name__
        raise ConfigError(key, value, f"must be {kind}") from None


def parse_args(
    argv: list[str], known: dict[str, Any], required: bool = True
) -> tuple[Path | None, dict[str, Any], list[str]]:
    """Split ``checkpoint=PATH`` (``required``), the command's own ``known`` keys and config
    overrides."""
    own = dict(known)
    overrides = []
    checkpoint = None
    for arg in argv:
        key, sep, value = arg.partition("=")
        if key == "device":  # the group choice of the training command line
            key, arg = "device.name", f"device.name={value}"
        if not sep:
            raise ConfigError(arg, None, "arguments are key=value, e.g. checkpoint=PATH")
        if key == "checkpoint":
            checkpoint = Path(value).expanduser()
        elif key in own:
            own[key] = _typed(key, value, known[key])
        else:
            overrides.append(arg)
    if checkpoint is None and required:
        raise ConfigError(
            "checkpoint", None, "required: checkpoint=PATH (a .pt file or run folder)"
        )
    return checkpoint, own, overrides


def _named_code(value: Any, where: str) -> list[tuple[str, Any]]:
    """Every ``_target_`` (and every ``${...}`` string) inside ``value``, with its key."""
    if isinstance(value, dict):
        found = [(f"{where}{k}", v) for k, v in value.items() if k == "_target_"]
        for k, v in value.items():
            found += _named_code(v, f"{where}{k}.")
        return found
    if isinstance(value, list | tuple):
        return [hit for i, v in enumerate(value) for hit in _named_code(v, f"{where}{i}.")]
    if isinstance(value, str) and "${" in value:
        return [(where.rstrip("."), value)]
    return []


def check_no_code(config: dict[str, Any], path: Path, overrides: list[str]) -> None:
    """Refuse a checkpoint whose config names code the user did not name (module docstring)."""
    named = {k: v.strip("'\"") for k, _, v in (o.partition("=") for o in overrides)}
    unnamed = []
    for key, value in _named_code(config, ""):
        slot = key.removesuffix("._target_") in USER_PARTS and key.endswith("._target_")
        if slot and (value is None or named.get(key) == value):
            continue  # the schema's own null (a built-in part), or the user's own choice
        if slot and isinstance(value, str):
            unnamed.append(f"{key}={value}")
            continue
        if key.endswith("_target_"):
            what = f"refused: its config names code to run ({key}={value!r}); a checkpoint may"
            raise ConfigError("checkpoint", str(path), f"{what} only select ganexp's own parts")
        what = "refused: a checkpoint's config is resolved; it holds an interpolation"
        raise ConfigError("checkpoint", str(path), f"{what} at {key} ({value!r})")
    if unnamed:
        raise ConfigError(
            "checkpoint",
            str(path),
            f"its config names your own classes ({', '.join(unnamed)}); a checkpoint never "
            f"chooses code to run: if you trust them, name them yourself: {' '.join(unnamed)}",
        )


def sampler_weights(state: dict[str, Any]) -> dict[str, Any]:
    """The weights a checkpoint samples with: its generator's EMA (trainer.ema_decay) where it
    holds one, else the generator's own."""
    if "generator_ema" not in state:
        return state["generator"]
    averaged = state["generator_ema"].items()  # AveragedModel's: module.*, n_averaged
    return {k.removeprefix("module."): v for k, v in averaged if k.startswith("module.")}


def load_for_sampling(target: Path) -> tuple[dict[str, Any], Path]:
    """The checkpoint ``target`` names: a file, or a run folder's newest one that loads (the
    ones that do not are skipped with a message, as training does)."""
    from ganexp.engine.checkpoint import SAMPLING, checkpoint_folder, load_checkpoint

    if target.is_dir():
        store = checkpoint_folder(target)
        if store is None:
            raise ConfigError(
                "checkpoint", str(target), "holds no checkpoints/last.pt or step_*.pt"
            )
        return store.load_latest("checkpoint", SAMPLING)
    return load_checkpoint(target, "checkpoint", SAMPLING), target


def restore(target: Path, overrides: list[str]) -> Restored:
    """The generator of checkpoint ``target`` (a file or run folder) on the configured device,
    in eval mode."""
    from ganexp.config import register_schema
    from ganexp.data import DataSpec
    from ganexp.engine.device import resolve_device
    from ganexp.session.build import build_generator
    from ganexp.tasks import check as check_task

    register_schema()
    state, path = load_for_sampling(target)
    check_no_code(state["config"], path, overrides)
    try:
        merged = OmegaConf.merge(schema(), state["config"])
    except OmegaConfBaseException as ex:
        first = str(ex).splitlines()[0]
        raise ConfigError(
            "checkpoint", str(path), f"its config does not fit ganexp ({first})"
        ) from ex
    try:
        merged.merge_with_dotlist(overrides)
    except OmegaConfBaseException as ex:
        from ganexp.config import composition_error

        raise composition_error(ex) from ex
    cfg = validate(merged)
    check_task(cfg)
    device = resolve_device(cfg.device.name)
    spec = DataSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in state["spec"].items()})
    generator = build_generator(cfg, spec)
    try:
        generator.load_state_dict(sampler_weights(state))
    except RuntimeError as ex:
        first = str(ex).strip().splitlines()[0]
        reason = f"its generator weights do not fit the network its config builds ({first})"
        raise ConfigError("checkpoint", str(path), reason) from None
    return Restored(cfg, spec, generator.to(device).eval(), device, state, path)


def report_errors(command: str, main: Callable[[], None], usage: str) -> None:
    """Run ``main`` and turn a GanexpError into one line and its exit code; ``-h``/``--help``
    prints ``usage`` (the command module's docstring) instead."""
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(usage.strip())
        return
    try:
        main()
    except GanexpError as error:
        print(f"{command}: error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
