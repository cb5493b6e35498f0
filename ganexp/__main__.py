"""The ``ganexp`` command: check the whole command line first, then hand it to Hydra."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from ganexp.config import register_schema
from ganexp.errors import ConfigError, GanexpError, Interrupted
from ganexp.job import read_job_record, write_job_record
from ganexp.preflight import check_config, flags_first, preflight, run_settings

if TYPE_CHECKING:
    from ganexp.config import RunConfig
    from ganexp.run import RunResult


def _fail(error: Exception) -> None:
    print(f"ganexp: error: {error}", file=sys.stderr)


def _remove_if_untouched(run_dir: Path) -> bool:
    """A job refused before it started leaves no run folder behind (only Hydra's files)."""
    made = {p.name for p in run_dir.iterdir()} if run_dir.is_dir() else set()
    if made <= {".hydra", "main.log", "__main__.log", "config.yaml"}:
        shutil.rmtree(run_dir, ignore_errors=True)
        return True
    return False


def _save_config(resolved: dict, run_dir: Path, show: bool) -> None:
    """The resolved config as RUN/config.yaml (Hydra's .hydra/config.yaml keeps the
    interpolations), and on stdout for a single run."""
    text = OmegaConf.to_yaml(resolved)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(text)
    if show:
        print(f"# ganexp: resolved config (saved as {run_dir / 'config.yaml'})\n{text}", flush=True)


def _finished(result: RunResult, run_dir: Path, wall_time_s: float, multirun: bool) -> None:
    """The run's own report on stderr; in a sweep one line per job (the sweep ends with its
    summary's path)."""
    from ganexp.run import report

    block = report(result, run_dir, wall_time_s)
    if multirun:
        block = block.splitlines()[0] + f" ({run_dir})"
    print(block, file=sys.stderr)


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
def _job(cfg: DictConfig) -> float | None:
    """One job. In a sweep a failing job is recorded (job.json) and the sweep goes on; the
    return value (the best headline metric) is what Hydra's sweepers optimize."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    group = _group(cfg, hydra_cfg)
    record: dict = {"status": "failed", "error": None, "overrides": list(hydra_cfg.overrides.task)}
    record |= {"group": group, "steps": 0, "wall_time_s": 0.0, "final": {}, "best": {}}
    start = time.monotonic()
    # a job started again (a resume, or a finished job re-run by its sweep) adds its time to
    # that of its earlier attempts in the folder
    earlier = (read_job_record(run_dir) or {}).get("wall_time_s") or 0.0
    main_process = True
    try:
        run_cfg = check_config(cfg)
        from ganexp import distributed  # after the checks: torch takes seconds to import
        from ganexp.device import resolve_device
        from ganexp.run import run

        # joins the other tasks of a multi-task submitit job (torchrun's joined in main())
        main_process = distributed.start(resolve_device(run_cfg.device.name).type).is_main
        resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        if main_process:
            _save_config(resolved, run_dir, show=not multirun)

        if run_cfg.trainer.replicas > 1:
            return _replicas(run_cfg, resolved, run_dir, record, _run_name(hydra_cfg), multirun)
        result = run(
            run_cfg,
            resolved,
            run_dir,
            name=_run_name(hydra_cfg),
            group=group,
        )
        record |= {"status": "completed", "steps": result.steps}
        record |= {"final": result.final, "best": result.best}
        if main_process:
            _finished(result, run_dir, time.monotonic() - start, multirun)
        return result.best.get("value")
    except Interrupted as stop:
        record |= {"status": "interrupted", "error": str(stop)}
        _fail(stop)
        requeue = signal.getsignal(signal.SIGUSR2)
        if stop.exit_code == 128 + signal.SIGUSR2 and callable(requeue):
            requeue(signal.SIGUSR2, None)  # submitit: checkpointed, now requeue the job
        sys.exit(stop.exit_code)
    except GanexpError as error:
        record["error"] = str(error)
        _fail(error)
        if isinstance(error, ConfigError) and main_process and _remove_if_untouched(run_dir):
            record = None
        if not multirun:
            sys.exit(error.exit_code)
        return None
    except Exception as error:  # a bug: the traceback goes to the job's log
        record["error"] = f"{type(error).__name__}: {error}".splitlines()[0]
        if not multirun:
            raise
        logging.getLogger("ganexp").exception("job failed")
        _fail(error)
        return None
    finally:
        if record is not None and main_process:
            record["wall_time_s"] = round(earlier + time.monotonic() - start, 3)
            write_job_record(run_dir, record)


def _replicas(
    cfg: RunConfig, resolved: dict, run_dir: Path, record: dict, name: str, multirun: bool
) -> float | None:
    """trainer.replicas=K: K runs in RUN/replica_k/, each with a job.json of its own as a job
    with seed=seed+k would write (so a sweep's cells count replicas as seeds); the job's own
    job.json lists them. Returns the mean of their best headline values (for sweepers)."""
    from ganexp.replicas import replica_dir, train_replicas

    start = time.monotonic()
    outcomes = train_replicas(cfg, resolved, run_dir, name=name, group=record["group"])
    wall = round(time.monotonic() - start, 3)
    overrides = [o for o in record["overrides"] if not o.startswith("seed=")]
    names, bests = [], []
    for k, (result, error) in enumerate(outcomes):
        own = dict(record, overrides=[*overrides, f"seed={cfg.seed + k}"], wall_time_s=wall)
        if result is None:
            own |= {"status": "failed", "error": error}
        else:
            own |= {"status": "completed", "steps": result.steps}
            own |= {"final": result.final, "best": result.best}
            _finished(result, replica_dir(run_dir, k), wall, multirun=True)
            bests += [result.best["value"]] if result.best.get("value") is not None else []
        write_job_record(replica_dir(run_dir, k), own)
        names.append(replica_dir(run_dir, k).name)
    failed = sum(result is None for result, _ in outcomes)
    record |= {"status": "completed" if not failed else "failed", "replicas": names}
    record["error"] = f"{failed} of {len(outcomes)} replicas failed" if failed else None
    return sum(bests) / len(bests) if bests else None


def _join_processes(argv: list[str]) -> list[str]:
    """Under torchrun: join the other processes, and the overrides that make every one of them
    use rank 0's run folder (its time-stamped name could differ by a second elsewhere). Only rank
    0 keeps Hydra's files there."""
    from ganexp import distributed
    from ganexp.device import resolve_device

    run_dir, device_name = run_settings(argv)
    world = distributed.start(resolve_device(device_name).type)
    quoted = world.broadcast(run_dir).replace("\\", "\\\\").replace("'", "\\'")
    overrides = [f"hydra.run.dir='{quoted}'"]
    if not world.is_main:
        overrides += ["hydra.output_subdir=null", "hydra/job_logging=stdout"]
    return overrides


def main() -> None:
    register_schema()
    sys.argv[1:] = flags_first(sys.argv[1:])
    try:
        preflight(sys.argv[1:])
        if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
            sys.argv += _join_processes(sys.argv[1:])
    except ConfigError as error:
        _fail(error)
        sys.exit(2)
    _job()
    from ganexp.sweep import SweepSummary

    if SweepSummary.last_failed:  # a sweep whose jobs did not all complete fails as a command
        sys.exit(1)


if __name__ == "__main__":
    main()
