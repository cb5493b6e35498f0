"""``job.json``: how one job ended, written into its run folder for people and sweep summaries.

Fields: ``status`` (completed | failed | interrupted), ``error`` (the one-line message or null),
``overrides`` (the job's command-line overrides), ``group`` (its W&B group), ``steps``
(generator steps done), ``wall_time_s`` (summed over the job's attempts in its folder:
a resume adds to it), ``final`` (the last ``eval/...`` metrics) and ``best``
(``key``, ``value``, ``step`` of the best headline metric, or empty).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

JOB_FILE = "job.json"


def write_job_record(run_dir: Path, record: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{JOB_FILE}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(run_dir / JOB_FILE)


def read_job_record(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / JOB_FILE
    return json.loads(path.read_text()) if path.is_file() else None
