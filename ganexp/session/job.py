"""``job.json``: how one job ended, written into its run folder for people and sweep summaries.

Fields: ``status`` (completed | failed | interrupted), ``error`` (the one-line message or null),
``overrides`` (the job's command-line overrides), ``group`` (its W&B group), ``steps``
(generator steps done: for a job that did not finish, the last step it completed),
``wall_time_s`` (summed over the job's attempts in its folder: a resume adds to it), ``final``
(the last ``eval/...`` metrics) and ``best`` (``key``, ``value``, ``step`` of the best headline
metric, or empty).

It is written atomically, even on a disk the run has filled: the job sets room aside for it
when it starts (:func:`reserve_room`), which writing it frees first.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from ganexp.engine.runfolder import write_whole, writing

JOB_FILE = "job.json"
RESERVE_FILE = ".job.json.reserve"
_RESERVE_BYTES = 64 * 1024
_STEP_ATTRIBUTE = "ganexp_step"


def reserve_room(run_dir: Path) -> None:
    """Set disk space aside in ``run_dir`` for its job.json (nothing if the disk is full
    already: writing the config then fails first)."""
    with contextlib.suppress(OSError):
        (run_dir / RESERVE_FILE).write_bytes(bytes(_RESERVE_BYTES))


def write_job_record(run_dir: Path, record: dict[str, Any]) -> None:
    """Write ``run_dir/job.json`` whole, in the room set aside for it if there is some;
    RunFailed if it cannot be written."""
    path = run_dir / JOB_FILE
    with writing(path):
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / RESERVE_FILE).unlink(missing_ok=True)
    text = json.dumps(record, indent=2) + "\n"
    write_whole(path, lambda f: f.write(text.encode()))


def read_job_record(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / JOB_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def note_step(stop: BaseException, step: int) -> None:
    """Remember on ``stop`` (whatever ended a run early) the last step the run completed."""
    setattr(stop, _STEP_ATTRIBUTE, step)


def noted_step(stop: BaseException) -> int | None:
    """The step :func:`note_step` left on ``stop``, or None (the run had not started)."""
    return getattr(stop, _STEP_ATTRIBUTE, None)
