"""The ``ganexp`` command: check the whole command line first, then hand it to Hydra."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ganexp.config import CONFIG_MODULE, register_schema
from ganexp.engine import runfolder
from ganexp.errors import ConfigError, GanexpError, Interrupted
from ganexp.session.fork import INHERITED, fork_overrides, quoted
from ganexp.session.job import (
    RESERVE_FILE,
    noted_step,
    read_job_record,
    reserve_room,
    write_job_record,
)
from ganexp.session.preflight import (
    _NO_JOB_FLAGS,
    flags_first,
    plan_job,
    preflight,
    run_settings,
    split_argv,
)

if TYPE_CHECKING:
    from ganexp.config import RunConfig
    from ganexp.session.run import RunResult


SIGINT_EXIT = 128 + signal.SIGINT
DRY_RUN = "--dry-run"
# what Hydra and a job write into a run folder before training starts
_BEFORE_TRAINING = {".hydra", "main.log", "__main__.log", "config.yaml"}
_BEFORE_TRAINING |= {runfolder.LOCK_FILE, RESERVE_FILE}


def _fail(error: object) -> None:
    print(f"ganexp: error: {error}", file=sys.stderr)


def _stopped(stop: object) -> None:
    """A stop the user asked for (a signal): not an error, and the run can continue."""
    print(f"ganexp: {stop}", file=sys.stderr)


def _remove_if_untouched(run_dir: Path) -> bool:
    """A job refused before it started leaves no run folder behind: a folder this command
    made (so that no other process holds it or put anything in it) holding nothing but what
    Hydra and the job write before training."""
    if not runfolder.made_here(run_dir):
        return False
    made = {p.name for p in run_dir.iterdir()} if run_dir.is_dir() else set()
    if made <= _BEFORE_TRAINING:
        shutil.rmtree(run_dir, ignore_errors=True)
        return True
    return False


def _raised_inside(stop: SystemExit) -> str:
    """The one line for a user's code ending the job with sys.exit: what and where."""
    frames = traceback.extract_tb(stop.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{stop!r} raised inside the job{where}"


def _save_config(resolved: dict, run_dir: Path, show: bool) -> None:
    """The resolved config as RUN/config.yaml (Hydra's .hydra/config.yaml keeps the
    interpolations), and on stdout for a single run."""
    text = OmegaConf.to_yaml(resolved)
    runfolder.write_whole(run_dir / "config.yaml", lambda f: f.write(text.encode()))
    if show:
        print(f"# ganexp: resolved config (saved as {run_dir / 'config.yaml'})\n{text}", flush=True)


def _finished(result: RunResult, run_dir: Path, wall_time_s: float, multirun: bool) -> None:
    """The run's own report on stderr; in a sweep one line per job (the sweep ends with its
    summary's path)."""
    from ganexp.session.run import report

    block = report(result, run_dir, wall_time_s)
    if multirun:
        block = block.splitlines()[0] + f" ({run_dir})"
    print(block, file=sys.stderr)


def _resumed(argv: list[str]) -> str:
    """The value of the command's ``resume=``."""
    found = next(o for o in split_argv(argv)[1] if o.lstrip("+").startswith("resume="))
    return found.split("=", 1)[1]


def _run_name(hydra_cfg: DictConfig) -> str:
    """The W&B run name: the job's own overrides (not those a fork took from its checkpoint),
    or the preset's name, or 'default'."""
    overrides = [
        o for o in hydra_cfg.overrides.task if not o.startswith("hydra") and o not in INHERITED
    ]
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


def _earlier_record(run_dir: Path) -> dict[str, Any]:
    """The job.json an earlier attempt of the job left in its folder (empty if none)."""
    try:
        return read_job_record(run_dir) or {}
    except (OSError, ValueError):
        return {}


def _steps(stop: BaseException, record: dict[str, Any]) -> int:
    """The last step completed by a run that ``stop`` ended: noted by the run, or (stopped
    before training) the earlier attempts' count."""
    step = noted_step(stop)
    return record["steps"] if step is None else step


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def _job(cfg: DictConfig) -> float | None:
    """One job. In a sweep a failing job is recorded (job.json) and the sweep goes on, whatever
    failed inside it (a user's code calling sys.exit too); the return value (the best headline
    metric) is what Hydra's sweepers optimize."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    group = _group(cfg, hydra_cfg)
    earlier = _earlier_record(run_dir)
    record: dict = {"status": "failed", "error": None, "overrides": list(hydra_cfg.overrides.task)}
    record |= {"group": group, "steps": earlier.get("steps") or 0, "wall_time_s": 0.0}
    record |= {"final": {}, "best": {}}
    start = time.monotonic()
    main_process = True
    lock = None
    try:
        plan = plan_job(cfg)
        run_cfg, resolved = plan.cfg, plan.resolved
        from ganexp.engine import distributed  # after the checks: torch takes seconds to import
        from ganexp.engine.device import resolve_device
        from ganexp.session.run import run

        # joins the other tasks of a multi-task submitit job (torchrun's joined in main())
        main_process = distributed.start(resolve_device(run_cfg.device.name).type).is_main
        if main_process:  # a single run's folder is held already (main), a sweep job's not
            lock = runfolder.hold("hydra.sweep.dir" if multirun else "hydra.run.dir", run_dir)
            reserve_room(run_dir)
            _save_config(resolved, run_dir, show=not multirun)

        if run_cfg.trainer.replicas > 1:
            return _replicas(run_cfg, resolved, run_dir, record, _run_name(hydra_cfg), multirun)
        result = run(plan, run_dir, name=_run_name(hydra_cfg), group=group)
        record |= {"status": "completed", "steps": result.steps}
        record |= {"final": result.final, "best": result.best}
        if main_process:
            _finished(result, run_dir, time.monotonic() - start, multirun)
        return result.best.get("value")
    except runfolder.FolderBusy as busy:  # the folder, its job.json included, is the holder's
        record = None
        _fail(busy)
        if not multirun:
            sys.exit(busy.exit_code)
        return None
    except Interrupted as stop:
        record |= {"status": "interrupted", "error": str(stop), "steps": _steps(stop, record)}
        _stopped(stop)
        requeue = signal.getsignal(signal.SIGUSR2)
        if stop.exit_code == 128 + signal.SIGUSR2 and callable(requeue):
            requeue(signal.SIGUSR2, None)  # submitit: checkpointed, now requeue the job
        sys.exit(stop.exit_code)
    except KeyboardInterrupt as stop:  # a second Ctrl-C (or one before the run's handler)
        step = noted_step(stop)
        where = "before training started" if step is None else f"at step {step}"
        error = (
            f"stopped at once by SIGINT (Ctrl-C) {where}; run the same command to continue "
            "from the last checkpoint saved"
        )
        record |= {"status": "interrupted", "error": error, "steps": _steps(stop, record)}
        _stopped(error)
        sys.exit(SIGINT_EXIT)
    except GanexpError as error:
        record |= {"error": str(error), "steps": _steps(error, record)}
        _fail(error)
        if isinstance(error, ConfigError) and main_process and _remove_if_untouched(run_dir):
            record = None
        if not multirun:
            sys.exit(error.exit_code)
        return None
    except SystemExit as stop:  # a user's code (a loss, a network) called sys.exit
        record |= {"error": _raised_inside(stop), "steps": _steps(stop, record)}
        _fail(record["error"])
        if not multirun:
            sys.exit(1)
        return None
    except Exception as error:  # a bug: the traceback goes to the job's log
        record |= {"error": f"{type(error).__name__}: {error}".splitlines()[0]}
        record["steps"] = _steps(error, record)
        if not multirun:
            raise
        logging.getLogger("ganexp").exception("job failed")
        _fail(error)
        return None
    finally:
        if not multirun:  # the job is over: a Ctrl-C now could only cut its record short
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        if record is not None and main_process:
            # a job started again (a resume, or a finished job re-run by its sweep) adds its
            # time to that of its earlier attempts in the folder
            record["wall_time_s"] = round(
                (earlier.get("wall_time_s") or 0.0) + time.monotonic() - start, 3
            )
            try:
                write_job_record(run_dir, record)
            except GanexpError as error:
                _fail(error)
        if lock is not None:
            lock.release()


def _replicas(
    cfg: RunConfig, resolved: dict, run_dir: Path, record: dict, name: str, multirun: bool
) -> float | None:
    """trainer.replicas=K: K runs in RUN/replica_k/, each with a job.json of its own as a job
    with seed=seed+k would write (so a sweep's cells count replicas as seeds); the job's own
    job.json lists them. Returns the mean of their best headline values (for sweepers)."""
    from ganexp.session.run import replica_dir, train_replicas

    start = time.monotonic()
    overrides = [o for o in record["overrides"] if not o.startswith("seed=")]
    names = [replica_dir(run_dir, k).name for k in range(cfg.trainer.replicas)]
    try:
        outcomes = train_replicas(cfg, resolved, run_dir, name=name, group=record["group"])
    except Interrupted as stop:  # every replica was checkpointed at the same step
        wall = round(time.monotonic() - start, 3)
        step = noted_step(stop)
        for k in range(cfg.trainer.replicas):
            own = dict(record, overrides=[*overrides, f"seed={cfg.seed + k}"], wall_time_s=wall)
            own |= {"status": "interrupted", "error": str(stop)}
            own["steps"] = step if step is not None else record["steps"]
            write_job_record(replica_dir(run_dir, k), own)
        record["replicas"] = names
        raise
    wall = round(time.monotonic() - start, 3)
    bests = []
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
    failed = sum(result is None for result, _ in outcomes)
    record |= {"status": "completed" if not failed else "failed", "replicas": names}
    record["error"] = f"{failed} of {len(outcomes)} replicas failed" if failed else None
    return sum(bests) / len(bests) if bests else None


def _pin(key: str, value: str) -> str:
    """The override setting ``key`` to exactly ``value`` (quoted: a path may hold commas)."""
    return f"{key}={quoted(value)}"


def _join_processes(argv: list[str], run_dir: Path | None) -> list[str]:
    """Under torchrun: join the other processes, and the overrides that make every one of them
    use rank 0's run folder ``run_dir`` (its time-stamped name could differ by a second
    elsewhere). Only rank 0 keeps Hydra's files there."""
    from ganexp.engine import distributed
    from ganexp.engine.device import resolve_device

    own_dir, device_name = run_settings(argv)
    world = distributed.start(resolve_device(device_name).type)
    overrides = [_pin("hydra.run.dir", world.broadcast(str(run_dir or own_dir)))]
    if not world.is_main:
        overrides += ["hydra.output_subdir=null", "hydra/job_logging=stdout"]
    return overrides


def _output_dir(argv: list[str]) -> tuple[str, Path] | None:
    """The folder the command writes into, with its key (``hydra.run.dir``, or under -m
    ``hydra.sweep.dir``); None when it runs no job, or does not compose (preflight says why)."""
    flags, overrides = split_argv(argv)
    if _NO_JOB_FLAGS & set(flags):
        return None
    key = "hydra.sweep.dir" if {"-m", "--multirun"} & set(flags) else "hydra.run.dir"
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
        # the job name a run has (hydra.job.name), for a folder named after it
        with initialize_config_module(CONFIG_MODULE, version_base="1.3", job_name="__main__"):
            cfg = compose("config", overrides=fixed, return_hydra_config=True)
        return key, Path(str(OmegaConf.select(cfg, key)))
    except (HydraException, OmegaConfBaseException):
        return None


def _prepare(argv: list[str]) -> list[str]:
    """Check the command and hold the folder it writes into, before Hydra writes there;
    returns the overrides that pin that folder (a time-stamped name is resolved once) and,
    under torchrun, share rank 0's. Only rank 0 holds the folder."""
    target = _output_dir(argv) if int(os.environ.get("RANK", "0")) == 0 else None
    ran_before = False
    if target is not None:
        runfolder.check_output_dir(*target)
        # a folder a ganexp has run in: its holder, if any, is named before anything else
        ran_before = (target[1] / runfolder.LOCK_FILE).exists()
        if ran_before:
            runfolder.hold(*target)
    preflight(argv)
    overrides = []
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        overrides += _join_processes(argv, target[1] if target else None)
    if target is not None:
        if not ran_before:
            runfolder.hold(*target, wait=False)
        overrides.append(_pin(target[0], str(target[1])))
    return overrides


def _dry_run(argv: list[str]) -> None:
    """``--dry-run``: every job of the command checked as it would be before training, and
    listed; nothing is trained or written."""
    jobs = preflight(argv)
    print(f"ganexp: dry run: {len(jobs)} job{'s' * (len(jobs) != 1)}; nothing was run or written")
    for num, overrides in enumerate(jobs):
        print(f"  {num:>3}  {' '.join(overrides) or '(the defaults)'}")


def main() -> None:
    register_schema()
    sys.argv[1:] = flags_first(sys.argv[1:])
    flags = split_argv(sys.argv[1:])[0]
    if {"-h", "--help"} & set(flags):
        from ganexp.cli.help import help_text

        print(help_text(), end="")
        return
    try:
        try:
            inherited = fork_overrides(sys.argv[1:])
            if inherited:
                print(
                    f"ganexp: note: a fork of {_resumed(sys.argv[1:])}: {len(inherited)} keys the "
                    "command line does not set are taken from its checkpoint's config (a new "
                    "folder and a new W&B run; run it in its own folder to continue it instead)",
                    file=sys.stderr,
                )
                sys.argv += inherited
            if DRY_RUN in flags:
                _dry_run([arg for arg in sys.argv[1:] if arg != DRY_RUN])
                return
            sys.argv += _prepare(sys.argv[1:])
        except GanexpError as error:
            _fail(error)
            sys.exit(error.exit_code)
        except SystemExit as stop:  # a user's code, built by the checks, called sys.exit
            _fail(f"{stop!r} raised by a user's code while checking the command")
            sys.exit(2)
        _job()
    except KeyboardInterrupt:  # one that came outside a job's own handling
        _stopped("stopped by SIGINT (Ctrl-C)")
        sys.exit(SIGINT_EXIT)
    from ganexp.session.sweep import SweepSummary

    if SweepSummary.last_failed:  # a sweep whose jobs did not all complete fails as a command
        sys.exit(1)


if __name__ == "__main__":
    main()
