"""The ``ganexp`` command: check the whole command line first, then hand it to Hydra."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from ganexp.config import register_schema
from ganexp.errors import ConfigError, GanexpError
from ganexp.preflight import check_config, preflight


def _fail(error: GanexpError) -> None:
    print(f"ganexp: error: {error}", file=sys.stderr)


def _remove_if_untouched(run_dir: Path) -> None:
    """A job refused before it started leaves no run folder behind (only Hydra's files)."""
    made = {p.name for p in run_dir.iterdir()} if run_dir.is_dir() else set()
    if made <= {".hydra", "main.log", "__main__.log"}:
        shutil.rmtree(run_dir, ignore_errors=True)


def _run_name(hydra_cfg: DictConfig) -> str:
    """The W&B run name: the job's own overrides, or the preset's name, or 'default'."""
    overrides = [o for o in hydra_cfg.overrides.task if not o.startswith("hydra")]
    if overrides:
        return ",".join(overrides)
    return hydra_cfg.runtime.choices.get("experiment") or "default"


def _group(cfg: DictConfig, hydra_cfg: DictConfig) -> str | None:
    """The W&B group: logger.group, else the sweep (for -m), else the experiment preset."""
    if cfg.logger.group:
        return cfg.logger.group
    experiment = hydra_cfg.runtime.choices.get("experiment")
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return f"{experiment or 'sweep'}-{Path(hydra_cfg.sweep.dir).name}"
    return experiment


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def _job(cfg: DictConfig) -> dict[str, float]:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        run_cfg = check_config(cfg)
        from ganexp.run import run  # after the checks: it imports torch

        return run(
            run_cfg,
            OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
            run_dir,
            name=_run_name(hydra_cfg),
            group=_group(cfg, hydra_cfg),
        )
    except GanexpError as error:
        _fail(error)
        if isinstance(error, ConfigError):
            _remove_if_untouched(run_dir)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise
        sys.exit(error.exit_code)


def main() -> None:
    register_schema()
    try:
        preflight(sys.argv[1:])
    except ConfigError as error:
        _fail(error)
        sys.exit(2)
    _job()


if __name__ == "__main__":
    main()
