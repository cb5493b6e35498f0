"""Refuse a bad command before it costs anything.

Before Hydra creates a run folder, every job the command line describes (one, or each job of a
``-m`` sweep) is composed with Hydra's compose API and checked as a job would check it: types and
options (Hydra), ranges (:func:`ganexp.config.validate`), data files, device, and the networks
built on the meta device. The first problem is printed as one line, with no traceback.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from ganexp.config import RunConfig, validate
from ganexp.errors import ConfigError

CONFIG_MODULE = "ganexp.conf"
# Flags that take a value, and flags after which Hydra does not run a job.
_FLAGS_WITH_VALUE = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd"}
_FLAGS_WITH_VALUE |= {"--cfg", "-c", "--package", "-p", "--experimental-rerun"}
_INFO_FLAGS = {"--info", "-i"}  # its value is optional: one of Hydra's topics
_INFO_TOPICS = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}
_NO_JOB_FLAGS = {"-h", "--help", "--hydra-help", "--info", "-i", "--cfg", "-c", "-sc"}
_NO_JOB_FLAGS |= {"--shell-completion", "--version"}


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separate Hydra's flags (with their values) from the overrides, wherever each stands."""
    flags: list[str] = []
    overrides: list[str] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if not arg.startswith("-"):
            overrides.append(arg)
            continue
        flags.append(arg)
        info_topic = arg in _INFO_FLAGS and bool(args) and args[0] in _INFO_TOPICS
        if (arg in _FLAGS_WITH_VALUE or info_topic) and args:
            flags.append(args.pop(0))
    return flags, overrides


def flags_first(argv: list[str]) -> list[str]:
    """``argv`` with Hydra's flags before the overrides, so that ``ganexp experiment=X -m
    norm=a,b`` works as typed (Hydra's argument parser wants flags before overrides)."""
    flags, overrides = split_argv(argv)
    return [*flags, *overrides]


def _is_hydra_override(override: str) -> bool:
    return override.lstrip("+~").startswith(("hydra.", "hydra/"))


def job_overrides(
    overrides: list[str], multirun: bool, config_params: dict[str, str] | None = None
) -> list[list[str]]:
    """The override list of every job the command would run (Hydra's own sweep expansion).

    ``config_params``: ``hydra.sweeper.params`` from the composed config (a preset's sweep);
    the command line comes after them and wins, as in Hydra's basic sweeper.
    """
    own = [o for o in overrides if not _is_hydra_override(o)]
    if not multirun:
        return [own]
    params = [f"{key}={value}" for key, value in (config_params or {}).items()]
    parsed = OverridesParser.create().parse_overrides(params + own)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def _sweeper_params(overrides: list[str]) -> dict[str, str]:
    """The basic sweeper's ``params`` that a preset defines (other sweepers search, not list)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    cfg = compose("config", overrides=fixed, return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    if "BasicSweeper" not in str(sweeper.get("_target_", "")) or not sweeper.get("params"):
        return {}
    return {str(k): str(v) for k, v in sweeper.params.items()}


def check_config(cfg: DictConfig) -> RunConfig:
    """Everything a job checks before it starts work; returns the typed config."""
    run_cfg = validate(cfg)
    # torch and torchvision take seconds to import: a typo is reported before that
    from ganexp.build import check_buildable
    from ganexp.checkpoint import load_resume, resume_source
    from ganexp.data import data_spec
    from ganexp.device import resolve_device, resolve_precision

    if run_cfg.resume:
        load_resume(resume_source(run_cfg.resume, Path.cwd()))
    device = resolve_device(run_cfg.device.name)
    resolve_precision(run_cfg.device.precision, device)
    check_processes(run_cfg, device.type)
    check_buildable(run_cfg, data_spec(run_cfg.data))
    return run_cfg


def check_processes(cfg: RunConfig, device_type: str) -> None:
    """What a run of several processes (torchrun) needs: a batch that splits evenly, and
    batch norm synchronized only where PyTorch can (CUDA)."""
    from ganexp.distributed import launched_world_size

    processes = launched_world_size()
    if processes == 1:
        return
    if cfg.trainer.batch_size % processes:
        raise ConfigError(
            "trainer.batch_size",
            cfg.trainer.batch_size,
            f"is the whole batch and must split evenly across the {processes} processes",
        )
    if cfg.norm.sync_batchnorm and device_type != "cuda":
        raise ConfigError(
            "norm.sync_batchnorm",
            True,
            f"PyTorch synchronizes batch norm on CUDA only, this run is on {device_type}",
        )


def preflight(argv: list[str]) -> None:
    """Compose and check every job of ``argv``; raise ConfigError on the first bad one."""
    flags, overrides = split_argv(argv)
    if _NO_JOB_FLAGS & set(flags):
        return
    multirun = bool({"-m", "--multirun"} & set(flags))
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        for job in _expand(overrides, multirun):
            try:
                cfg = compose("config", overrides=job)
            except (HydraException, OmegaConfBaseException) as ex:
                raise composition_error(ex, job) from ex
            check_config(cfg)


def run_settings(argv: list[str]) -> tuple[str, str]:
    """The run folder and ``device.name`` a single-run command resolves to."""
    flags, overrides = split_argv(argv)
    if {"-m", "--multirun"} & set(flags):
        raise ConfigError(
            "-m",
            True,
            "a sweep cannot run under torchrun; run each job with torchrun, or sweep "
            "with hydra/launcher=slurm and hydra.launcher.tasks_per_node",
        )
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    return str(cfg.hydra.run.dir), str(cfg.device.name)


def _expand(overrides: list[str], multirun: bool) -> list[list[str]]:
    try:
        params = _sweeper_params(overrides) if multirun else {}
        return job_overrides(overrides, multirun, params)
    except (HydraException, OmegaConfBaseException) as ex:
        raise composition_error(ex) from ex


_TYPE_WORDS = {
    "Integer": "must be an integer",
    "Float": "must be a number",
    "not a valid bool": "must be true or false",
}


def composition_error(ex: Exception, overrides: list[str] = ()) -> ConfigError:
    """Hydra's and OmegaConf's multi-line composition errors, as one ConfigError; the value of
    an unknown key is looked up in ``overrides`` (OmegaConf's error does not carry it)."""
    if isinstance(ex, MissingConfigException) and ex.missing_cfg_file:
        group, _, option = ex.missing_cfg_file.rpartition("/")
        if ex.options:
            return ConfigError(group, option, "allowed: " + ", ".join(ex.options))
        return ConfigError(group or option, option, "no such config group")
    cause = ex.__cause__ if isinstance(ex.__cause__, OmegaConfBaseException) else ex
    full_key = getattr(cause, "full_key", None)
    first_line = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    if full_key:
        value = getattr(cause, "value", None)
        typed = {o.split("=", 1)[0].lstrip("+~"): o.split("=", 1)[1] for o in overrides if "=" in o}
        value = typed.get(full_key, value) if value is None else value
        if isinstance(cause, ConfigAttributeError | ConfigKeyError):
            return ConfigError(full_key, value, "no such key; " + _known_keys(full_key))
        choices = re.search(r"expected one of \[(.*)\]", first_line)
        if choices:
            return ConfigError(full_key, value, "allowed: " + choices.group(1))
        for word, allowed in _TYPE_WORDS.items():
            if word in first_line:
                return ConfigError(full_key, value, allowed)
        return ConfigError(full_key, value, first_line)
    ambiguous = re.match(r"Ambiguous value for argument '([^=]+)=(.*)'", first_line)
    if ambiguous:
        key, value = ambiguous.groups()
        return ConfigError(key, value, "a comma-separated list sweeps only with -m")
    return ConfigError("command line", " ".join(ex.args[:1]) or first_line, first_line)


def _known_keys(full_key: str) -> str:
    """The keys next to ``full_key`` in the schema, for a typo's message."""
    node: object = RunConfig()
    parts = full_key.split(".")
    for part in parts[:-1]:
        node = getattr(node, part, None)
        if not dataclasses.is_dataclass(node):
            return "see `ganexp --cfg job` for every key"
    names = ", ".join(f.name for f in dataclasses.fields(node))
    where = ".".join(parts[:-1]) or "the top level"
    return f"keys of {where}: {names}"
