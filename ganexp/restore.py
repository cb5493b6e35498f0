"""Rebuilding a trained generator from a checkpoint, for ``ganexp-eval`` and ``ganexp-sample``.

The checkpoint carries its run's resolved config; ``key=value`` arguments override it (a
different device, more samples) and are checked like the training command's.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from ganexp.config import RunConfig, schema, validate
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


def parse_args(argv: list[str], known: dict[str, Any]) -> tuple[Path, dict[str, Any], list[str]]:
    """Split ``checkpoint=PATH``, the command's own ``known`` keys and config overrides."""
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
            own[key] = type(known[key])(value) if known[key] is not None else value
        else:
            overrides.append(arg)
    if checkpoint is None:
        raise ConfigError(
            "checkpoint", None, "required: checkpoint=PATH (a .pt file or run folder)"
        )
    if checkpoint.is_dir():
        checkpoint = checkpoint / "checkpoints" / "last.pt"
    return checkpoint, own, overrides


def sampler_weights(state: dict[str, Any]) -> dict[str, Any]:
    """The weights a checkpoint samples with: its generator's EMA (trainer.ema_decay) where it
    holds one, else the generator's own."""
    if "generator_ema" not in state:
        return state["generator"]
    averaged = state["generator_ema"].items()  # AveragedModel's: module.*, n_averaged
    return {k.removeprefix("module."): v for k, v in averaged if k.startswith("module.")}


def restore(path: Path, overrides: list[str]) -> Restored:
    """The generator of checkpoint ``path`` on the configured device, in eval mode."""
    from ganexp.build import build_generator
    from ganexp.checkpoint import load_checkpoint
    from ganexp.config import register_schema
    from ganexp.data import DataSpec
    from ganexp.device import resolve_device

    register_schema()
    state = load_checkpoint(path, key="checkpoint")
    if not isinstance(state.get("config"), dict):
        raise ConfigError("checkpoint", str(path), "has no run config (not written by ganexp)")
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
        from ganexp.preflight import composition_error

        raise composition_error(ex) from ex
    cfg = validate(merged)
    device = resolve_device(cfg.device.name)
    spec = DataSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in state["spec"].items()})
    generator = build_generator(cfg, spec).to(device)
    generator.load_state_dict(sampler_weights(state))
    return Restored(cfg, spec, generator.eval(), device, state, path)


def report_errors(command: str, main) -> None:
    """Run ``main`` and turn a GanexpError into one line and its exit code."""
    try:
        main()
    except GanexpError as error:
        print(f"{command}: error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
