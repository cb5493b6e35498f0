"""``ganexp-inspect RUN``: what a run logged to W&B, read from its run file, without a server.

ganexp-inspect RUN_DIR              # a run folder (its wandb/offline-run-*/run-*.wandb)
ganexp-inspect RUN_DIR/wandb/offline-run-20261202_101500-abc123
ganexp-inspect RUN_DIR json=true    # the same as JSON

It shows the run (id, name, group, tags, exit code), each logged key with how many rows hold it
and its first and last step, the media keys with their type, each metric definition (the chart's
x-axis and the summary the runs table shows) and the summary. An online run's file is read the
same way (``wandb/run-*``), before or after ``wandb sync``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ganexp.cli.restore import report_errors
from ganexp.errors import ConfigError
from ganexp.tracking.logger import STEP_KEY
from ganexp.tracking.runfile import NoRunFile, RunFile, RunFileError, load_run

SUMMARY_KINDS = ("min", "max", "mean", "best", "last", "first", "copy", "none")


def _run_file(target: Path) -> Path:
    """The run file of ``target``: a .wandb file, a run's folder, its wandb/ folder, or one
    ``offline-run-*`` / ``run-*`` folder."""
    if target.is_file():
        return target
    for pattern in ("run-*.wandb", "*run-*/run-*.wandb", "wandb/*run-*/run-*.wandb"):
        found = [p for p in sorted(target.glob(pattern)) if "superseded-" not in str(p)]
        if found:
            if len(found) > 1:
                names = ", ".join(str(p.parent.name) for p in found)
                raise ConfigError(
                    "RUN", str(target), f"holds {len(found)} W&B runs ({names}): name one"
                )
            return found[0]
    raise ConfigError("RUN", str(target), "holds no W&B run file (wandb/*run-*/run-*.wandb)")


def metric_definitions(run: RunFile) -> dict[str, dict[str, Any]]:
    """Each define_metric by name or glob: its x-axis and its summaries."""
    defined: dict[str, dict[str, Any]] = {}
    for metric in run.metrics:
        name = metric.name or metric.glob_name
        entry = defined.setdefault(name, {})
        if metric.step_metric:
            entry["step_metric"] = metric.step_metric
        kinds = [k for k in SUMMARY_KINDS if getattr(metric.summary, k)]
        if kinds:
            entry["summary"] = kinds
    return defined


def describe(run: RunFile) -> dict[str, Any]:
    """What ``ganexp-inspect`` shows, as plain data."""
    keys: dict[str, dict[str, Any]] = {}
    for row in run.history:
        step = row.get(STEP_KEY, row.get("_step"))
        for key, value in row.items():
            if key.startswith("_") or key == STEP_KEY:
                continue
            entry = keys.setdefault(key, {"rows": 0, "first_step": step})
            entry["rows"] += 1
            entry["last_step"] = step
            if isinstance(value, dict) and "_type" in value:
                entry["media"] = value["_type"]
    info = run.run
    return {
        "file": str(run.path),
        "run": {
            "id": info.run_id if info else None,
            "name": info.display_name if info else None,
            "group": info.run_group if info else None,
            "job_type": info.job_type if info else None,
            "tags": list(info.tags) if info else [],
        },
        "exit_code": run.exit_code,
        "keys": keys,
        "metrics": metric_definitions(run),
        "summary": {k: v for k, v in run.summary.items() if not k.startswith("_")},
    }


def _text(shown: dict[str, Any]) -> str:
    run, code = shown["run"], shown["exit_code"]
    lines = [
        f"run      {run['id']}  {run['name']}",
        f"file     {shown['file']}",
        f"group    {run['group'] or '-'}   job type {run['job_type'] or '-'}   exit code "
        + (str(code) if code is not None else "none (still running, or killed)"),
        f"tags     {', '.join(run['tags']) or '-'}",
        "",
        f"{'key':<34} {'rows':>5} {'steps':>15}  x-axis / summary",
    ]
    defined = shown["metrics"]
    for key, entry in sorted(shown["keys"].items()):
        definition = defined.get(key) or next(
            (d for glob, d in defined.items() if glob.endswith("*") and key.startswith(glob[:-1])),
            {},
        )
        how = entry.get("media") or ""
        if definition:
            how = f"{how} {definition.get('step_metric', '-')}".strip()
            how += f" / {','.join(definition['summary'])}" if "summary" in definition else ""
        steps = f"{entry['first_step']}..{entry['last_step']}"
        lines.append(f"{key:<34} {entry['rows']:>5} {steps:>15}  {how}")
    lines += ["", "summary"]
    for key, value in sorted(shown["summary"].items()):
        if isinstance(value, dict):
            value = value.get("_type", "{...}")
        lines.append(f"  {key:<32} {value}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    options = {k: v for k, _, v in (a.partition("=") for a in args if "=" in a)}
    targets = [a for a in args if "=" not in a]
    unknown = set(options) - {"json"}
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(key, options[key], "not a ganexp-inspect key; allowed: json")
    if options.get("json", "false") not in ("true", "false"):
        raise ConfigError("json", options["json"], "allowed: true, false")
    if len(targets) != 1:
        raise ConfigError("RUN", " ".join(targets) or None, "name one run folder or run file")
    target = Path(targets[0]).expanduser()
    if not target.exists():
        raise ConfigError("RUN", str(target), "no such file or folder")
    try:
        run = load_run(_run_file(target), wait=0)
    except (NoRunFile, RunFileError, OSError) as error:
        raise ConfigError("RUN", str(target), f"cannot be read ({error})") from None
    shown = describe(run)
    print(
        json.dumps(shown, indent=2, default=str) if options.get("json") == "true" else _text(shown)
    )


def cli() -> None:
    report_errors("ganexp-inspect", main, __doc__)


if __name__ == "__main__":
    cli()
