"""The summary of a sweep: tables and figures in the sweep dir, and one W&B run of the group.

:class:`SweepSummary` is a Hydra callback (``hydra.callbacks.sweep_summary`` in config.yaml). When
a multirun ends, whatever its launcher or sweeper, it reads the ``job.json`` of every job folder
under the sweep dir and writes there:

``cells.csv``    one row per cell (the jobs alike in every swept axis but ``seed``) and metric:
                 mean, SD and 95 % t interval over the seeds' final values, Welch's test against
                 the best cell, published numbers when the config has ``paper`` rows
                 (:mod:`ganexp.analysis.cells`); a sweep without seeds has one job per cell
``summary.csv``  one row per job, in job order: status, the swept axes, the headline metric
                 (best, its step, final), the other final ``eval/`` metrics, steps, wall time,
                 error and overrides
``summary.md``   the cells table with its verdict (which cells the seeds cannot tell apart from
                 the best), then the jobs table, best job first and failed jobs last with their
                 error line
``curves.png``   the headline metric against step, one line per cell (the mean over its seeds,
                 with a 95 % band where two or more seeds have the step; ``loss/g`` when no job
                 has the headline)
``heatmap.png``  the mean final headline value ± the interval's half-width per cell, when
                 exactly two axes besides ``seed`` vary

and logs the tables, the verdict and figures to W&B in one more run of the sweep's group
(``job_type=summary``). ``SweepSummary.last_failed`` counts the jobs that did not complete, for
the exit code.

Each file is written whole or not at all (a temporary file, fsynced, renamed: the checkpoints'
writer), so a full disk leaves the files as they were, with one line. A sweep stopped before its
end (Ctrl-C, a stop signal) is summarized as the process exits: the jobs that ran, and those the
basic sweeper would have launched after them, listed last as ``not run``.
"""

from __future__ import annotations

import atexit
import csv
import io
import json
import math
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ganexp.analysis.cells import (
    Cell,
    CellStats,
    CellTable,
    JobResult,
    build_cells,
    mean_curve,
    read_paper_rows,
    sweep_identity,
)
from ganexp.engine.runfolder import write_atomic
from ganexp.keys import lower_bound, maximize
from ganexp.session.job import JOB_FILE, read_job_record
from ganexp.session.preflight import job_overrides

MISSING_RECORD = "no job.json (killed?)"
NOT_RUN = "not run"  # the status of a job a stopped sweep never started
FALLBACK_KEY = "loss/g"  # plotted when no job logged an eval metric
_STATUS_ORDER = {"completed": 0, "interrupted": 1, "failed": 2, NOT_RUN: 3}
_NOT_JOB_DIRS = {"wandb", "samples", "checkpoints", ".submitit", ".hydra"}
_FILES = {"cells": "cells.csv", "csv": "summary.csv", "md": "summary.md"}
_CELLS_NOTE = (
    "A cell is the jobs alike in every swept axis but `seed`. n, mean, sd and the 95% t "
    "interval are over its seeds' final {key} (the last evaluation, not the best one); "
    "`vs_best_p` is Welch's t-test against the best cell, Holm-corrected over the others."
)


def find_job_dirs(sweep_dir: Path) -> list[Path]:
    """Folders under ``sweep_dir`` holding ``job.json`` or ``.hydra/`` (not looking inside them)."""
    found = []
    for root, dirs, files in os.walk(sweep_dir):
        here = Path(root)
        if here != sweep_dir and (JOB_FILE in files or ".hydra" in dirs):
            found.append(here)
            dirs.clear()
            continue
        dirs[:] = sorted(d for d in dirs if d not in _NOT_JOB_DIRS)
    return found


def read_job(sweep_dir: Path, path: Path) -> JobResult:
    """A job from its ``job.json``; a job folder without one is a job that was killed."""
    name = path.relative_to(sweep_dir).as_posix()
    try:
        record = read_job_record(path)
    except (OSError, ValueError) as ex:
        return JobResult(name, path, "failed", f"unreadable {JOB_FILE}: {ex}", [])
    if record is None:
        overrides_file = path / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
        return JobResult(name, path, "failed", MISSING_RECORD, list(overrides or []))
    return JobResult(
        name=name,
        path=path,
        status=record.get("status", "failed"),
        error=record.get("error"),
        overrides=list(record.get("overrides") or []),
        steps=record.get("steps"),
        wall_time_s=record.get("wall_time_s"),
        final=dict(record.get("final") or {}) or last_evaluation(path),
        best=dict(record.get("best") or {}),
        group=record.get("group"),
    )


def metrics_rows(job_dir: Path) -> Iterator[dict[str, Any]]:
    """The rows of a job's metrics.jsonl; a cut last line is skipped."""
    path = job_dir / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def last_evaluation(job_dir: Path) -> dict[str, float]:
    """The ``eval/`` metrics of the last evaluation in a job's metrics.jsonl: its final values
    where its record has none (a finished job started again by an earlier ganexp, whose
    checkpoints kept no results to report)."""
    latest: dict[str, float] = {}
    for row in metrics_rows(job_dir):
        latest = {k: v for k, v in row.items() if k.startswith("eval/")} or latest
    return latest


def collect_jobs(sweep_dir: Path) -> list[JobResult]:
    """Every job of the sweep, in job order; a job of replicas (trainer.replicas) is its
    replicas, each a job with its own seed."""
    jobs = []
    for path in find_job_dirs(sweep_dir):
        record = _record_or_none(path)
        replicas = (record or {}).get("replicas") or []
        jobs += [read_job(sweep_dir, path / name) for name in replicas] or [
            read_job(sweep_dir, path)
        ]
    return sorted(jobs, key=lambda job: job.order)


def planned_jobs(config: DictConfig) -> list[list[str]] | None:
    """Every job's overrides in job order, as the basic sweeper launches them; None for a
    sweeper that chooses its jobs as it goes (Optuna)."""
    sweeper = config.hydra.sweeper
    if "BasicSweeper" not in str(sweeper.get("_target_", "")):
        return None
    params = {str(k): str(v) for k, v in (sweeper.get("params") or {}).items()}
    return job_overrides(list(config.hydra.overrides.task), True, params)


def jobs_not_run(sweep_dir: Path, planned: list[list[str]]) -> list[JobResult]:
    """The planned jobs that no folder of the sweep holds, named by their job number."""
    started = Counter(_override_key(_started_overrides(path)) for path in find_job_dirs(sweep_dir))
    missing = []
    for num, overrides in enumerate(planned):
        key = _override_key(overrides)
        if started[key]:
            started[key] -= 1
        else:
            missing.append(JobResult(str(num), sweep_dir / str(num), NOT_RUN, None, overrides))
    return missing


def _override_key(overrides: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted(overrides))


def _started_overrides(path: Path) -> list[str]:
    """A started job's overrides: its job.json's, or Hydra's record of them."""
    record = _record_or_none(path) or {}
    if record.get("overrides") is not None:
        return list(record["overrides"])
    overrides_file = path / ".hydra" / "overrides.yaml"
    return (
        list(yaml.safe_load(overrides_file.read_text()) or []) if overrides_file.is_file() else []
    )


def _record_or_none(path: Path) -> dict[str, Any] | None:
    try:
        return read_job_record(path)
    except (OSError, ValueError):
        return None


def headline_key(jobs: list[JobResult]) -> str | None:
    """The sweep's headline metric: the key most jobs report as their best."""
    keys = Counter(job.best["key"] for job in jobs if job.best.get("key"))
    return keys.most_common(1)[0][0] if keys else None


def swept_axes(jobs: list[JobResult]) -> list[str]:
    """The override keys whose value differs between jobs, in command-line order."""
    keys: dict[str, None] = {}
    for job in jobs:
        keys.update(dict.fromkeys(job.axes))
    return [k for k in keys if len({job.axes.get(k) for job in jobs}) > 1]


def best_value(job: JobResult, key: str | None) -> float | None:
    return job.best.get("value") if key and job.best.get("key") == key else None


def _by_status(item: tuple[str, int]) -> int:
    return _STATUS_ORDER.get(item[0], len(_STATUS_ORDER))


def ranked(jobs: list[JobResult], key: str | None) -> list[JobResult]:
    """Best first (by the headline's direction); jobs without a value, then failures, last."""
    sign = -1.0 if key and maximize(key) else 1.0

    def rank(job: JobResult) -> tuple:
        value = best_value(job, key)
        missing = value is None or math.isnan(value)
        score = 0.0 if missing else sign * value
        return (_STATUS_ORDER.get(job.status, len(_STATUS_ORDER)), missing, score, job.order)

    return sorted(jobs, key=rank)


@dataclass
class Table:
    """The summary as columns and rows of plain values (None for an empty cell)."""

    columns: list[str]
    rows: list[list[Any]]


def summary_table(jobs: list[JobResult], key: str | None, axes: list[str]) -> Table:
    """One row per job: what it varied, how it ended and its metrics."""
    other_evals = sorted({k for job in jobs for k in job.final if k != key})
    columns = ["job", "status", *axes, "metric", "best", "best_step", "final", *other_evals]
    columns += ["steps", "wall_time_s", "error", "overrides"]
    rows = []
    for job in jobs:
        value = best_value(job, key)
        row = [job.name, job.status, *(job.axes.get(axis) for axis in axes)]
        row += [key if value is not None else None, value]
        row += [job.best.get("step") if value is not None else None, job.final.get(key or "")]
        row += [job.final.get(k) for k in other_evals]
        row += [job.steps, job.wall_time_s, job.error, " ".join(job.overrides)]
        rows.append(row)
    return Table(columns, rows)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _write_text(text: str, path: Path) -> None:
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def write_csv(table: Table, path: Path) -> None:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(table.columns)
    writer.writerows([["" if v is None else v for v in row] for row in table.rows])
    _write_text(text.getvalue(), path)


def markdown_table(columns: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [text.replace("|", "\\|").replace("\n", " ") for text in row]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def jobs_markdown(table: Table, order: list[int]) -> list[str]:
    """The jobs table as Markdown, rows in ``order`` (indices into ``table.rows``)."""
    columns = [c for c in table.columns if c != "overrides"]
    keep = [table.columns.index(c) for c in columns]
    return markdown_table(columns, [[_cell(table.rows[i][j]) for j in keep] for i in order])


def read_curve(job: JobResult, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of ``key`` from the job's metrics.jsonl. A step logged twice (a job
    killed after its last checkpoint logs those steps again when it resumes) keeps its last
    value; a cut last line is skipped."""
    points: dict[int, float] = {}
    for row in metrics_rows(job.path):
        if key in row and "step" in row:
            points[row["step"]] = row[key]
    steps = sorted(points)
    return steps, [points[step] for step in steps]


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(cells: list[Cell], key: str | None, path: Path) -> bool:
    """The headline metric against step, one line per cell (:func:`draw_curves`), as ``path``;
    ``loss/g`` if no job has the metric; False when nothing is to plot."""
    jobs = [job for cell in cells for job in cell.jobs]
    curves = {job.name: read_curve(job, key) for job in jobs} if key else {}
    if not any(steps for steps, _ in curves.values()):
        key = FALLBACK_KEY
        curves = {job.name: read_curve(job, key) for job in jobs}
    if not any(steps for steps, _ in curves.values()):
        return False
    save_figure(draw_curves(cells, key, curves), path)
    return True


def draw_curves(cells: list[Cell], key: str, curves: dict[str, tuple[list, list]]) -> Any:
    """Each cell's mean over its seeds against step, with its 95 % t interval where two or more
    seeds have the step: a band along a curve of several evaluations, an error bar where a cell
    has one or two (a band over one step draws nothing); the interval cut at the metric's least
    value (a count's never below 0); dotted where a job of the cell did not complete."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 5.5), dpi=100)
    colors = plt.get_cmap("tab10" if len(cells) <= 10 else "tab20").colors
    least = lower_bound(key)
    for i, cell in enumerate(cells):
        seeds = [curves[job.name] for job in cell.jobs if curves[job.name][0]]
        if not seeds:
            continue
        band = mean_curve(seeds)
        low = [v if least is None or math.isnan(v) else max(v, least) for v in band.low]
        color = colors[i % len(colors)]
        style = "-" if all(job.status == "completed" for job in cell.jobs) else ":"
        label = f"{cell.label or 'all jobs'} (n={len(seeds)})"
        if len(band.steps) < 3:
            below = [m - lo for m, lo in zip(band.mean, low, strict=True)]
            above = [hi - m for m, hi in zip(band.mean, band.high, strict=True)]
            ax.errorbar(
                band.steps, band.mean, yerr=[below, above], fmt="o", linestyle=style,
                color=color, capsize=5, label=label,
            )  # fmt: skip
        else:
            ax.plot(band.steps, band.mean, style, color=color, marker=".", label=label)
            ax.fill_between(band.steps, low, band.high, color=color, alpha=0.2, linewidth=0)
    better = "" if key == FALLBACK_KEY else f" ({_better(key)} is better)"
    ax.set_title(f"{key}{better}: mean over seeds, 95% t interval", fontsize=12)
    ax.set_xlabel("generator step", fontsize=11)
    ax.set_ylabel(key, fontsize=11)
    ax.tick_params(labelsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=1 + len(cells) // 20)
    return fig


def save_figure(fig: Any, path: Path) -> None:
    """``fig`` as a PNG at ``path``, written whole or not at all; closed either way."""
    try:
        fig.tight_layout()
        write_atomic(path, lambda f: fig.savefig(f, format="png"))
    finally:
        pyplot().close(fig)


def _heatmap_text(row: CellStats) -> str:
    """``mean ± half-width (n)``; just the value with one seed."""
    if row.mean is None:
        done = all(job.status == "completed" for job in row.cell.jobs)
        return "no value" if done else "failed"
    if row.ci is None:
        return f"{row.mean:.3g}\n(n={row.n})"
    return f"{row.mean:.3g} ± {(row.ci[1] - row.ci[0]) / 2:.2g}\n(n={row.n})"


def plot_heatmap(jobs: list[JobResult], cells: CellTable, path: Path) -> None:
    """The cells over their two axes, coloured by the mean final headline value."""
    key = cells.key or ""
    row_axis, col_axis = cells.axes
    row_values = list(dict.fromkeys(job.axes.get(row_axis, "") for job in jobs))
    col_values = list(dict.fromkeys(job.axes.get(col_axis, "") for job in jobs))
    grid = [[math.nan] * len(col_values) for _ in row_values]
    texts = [[""] * len(col_values) for _ in row_values]
    for row in cells.headline:
        i = row_values.index(row.cell.axes.get(row_axis, ""))
        j = col_values.index(row.cell.axes.get(col_axis, ""))
        grid[i][j] = math.nan if row.mean is None else row.mean
        texts[i][j] = _heatmap_text(row)
    plt = pyplot()
    width, height = 2.4 + 1.9 * len(col_values), 1.8 + 0.9 * len(row_values)
    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    image = ax.imshow(grid, cmap="viridis" if maximize(key) else "viridis_r", aspect="auto")
    for i in range(len(row_values)):
        for j in range(len(col_values)):
            ax.text(
                j,
                i,
                texts[i][j],
                ha="center",
                va="center",
                fontsize=10,
                color="white",
                **_outline(),
            )
    ax.set_xticks(range(len(col_values)), col_values, fontsize=10)
    ax.set_yticks(range(len(row_values)), row_values, fontsize=10)
    ax.set_xlabel(col_axis, fontsize=11)
    ax.set_ylabel(row_axis, fontsize=11)
    title = f"final {key}, mean ± 95% CI half-width (n)\n({_better(key)} is better)"
    ax.set_title(title, fontsize=11)
    fig.colorbar(image, ax=ax)
    save_figure(fig, path)


def _better(key: str) -> str:
    return "higher" if maximize(key) else "lower"


def _outline() -> dict[str, Any]:
    """Text readable on any cell colour: white with a black outline."""
    from matplotlib import patheffects

    return {"path_effects": [patheffects.withStroke(linewidth=2, foreground="black")]}


@dataclass
class Summary:
    """What :func:`summarize` wrote."""

    sweep_dir: Path
    jobs: list[JobResult]
    key: str | None
    table: Table
    cells: CellTable
    files: dict[str, Path]
    not_run: list[JobResult] | None = None  # a stopped sweep's jobs never started (None: unknown)
    name: str = ""  # the sweep's command line (sweep_identity)
    samples: list[tuple[str, Path]] = field(default_factory=list)  # cell_samples

    @property
    def failed(self) -> int:
        return sum(job.status != "completed" for job in self.jobs)


def cell_samples(cells: list[Cell]) -> list[tuple[str, Path]]:
    """What each cell's samples look like: the last sample grid (images) or scatter (toy data)
    of its first seed's job, best cell first; a cell whose job saved none is left out."""
    found = []
    for cell in cells:
        job = min(cell.jobs, key=lambda job: job.order)
        grids = [p for p in (job.path / "samples").glob("step_*.png") if p.stem[5:].isdigit()]
        if grids:
            found.append((cell.label or "all jobs", max(grids, key=lambda p: int(p.stem[5:]))))
    return found


def summarize(
    sweep_dir: Path, jobs: list[JobResult] | None = None, not_run: list[JobResult] | None = None
) -> Summary:
    """Write cells.csv, summary.csv, summary.md and the figures into ``sweep_dir``; published
    numbers come from the ``paper`` rows of the sweep's config (its ``multirun.yaml``).
    ``not_run``: the jobs a stopped sweep never started, listed last in the jobs' tables."""
    ran = collect_jobs(sweep_dir) if jobs is None else jobs
    jobs = [*ran, *(not_run or [])]
    key = headline_key(ran)
    axes = swept_axes(jobs)
    table = summary_table(jobs, key, axes)
    files = {name: sweep_dir / filename for name, filename in _FILES.items()}
    write_csv(table, files["csv"])
    name, smoke = sweep_identity(sweep_dir)
    cells = build_cells(ran, key, axes, read_paper_rows(sweep_dir), smoke)
    write_csv(Table(cells.columns, cells.values()), files["cells"])
    figures = {}
    if plot_curves(cells.cells, key, sweep_dir / "curves.png"):
        figures["curves"] = sweep_dir / "curves.png"
    if key and len(cells.axes) == 2:
        plot_heatmap(ran, cells, sweep_dir / "heatmap.png")
        figures["heatmap"] = sweep_dir / "heatmap.png"
    statuses = Counter(job.status for job in jobs)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items(), key=_by_status))
    lines = [f"# Sweep: `{name}`", "", f"{len(jobs)} jobs: {counts}."]
    if not_run:
        names = ", ".join(job.name for job in not_run)
        lines.append(f"The sweep stopped before it started job(s) {names}: `{NOT_RUN}` below.")
    if key:
        lines.append(f"Headline metric: `{key}` ({_better(key)} is better).")
    lines += ["", "## Cells, best first by the final value", ""]
    lines += [_CELLS_NOTE.format(key=f"`{key}`" if key else "values"), ""]
    lines += [*markdown_table(*cells.display()), "", f"**Verdict:** {cells.verdict}", ""]
    lines += [*(f"![{figure}]({p.name})" for figure, p in figures.items()), ""]
    samples = cell_samples(cells.cells)
    if samples:
        lines += ["## What each cell's samples look like", ""]
        lines += ["The last samples of each cell's first seed, best cell first.", ""]
        rows = [
            [label, f"![{label}]({Path(os.path.relpath(path, sweep_dir)).as_posix()})"]
            for label, path in samples
        ]
        lines += [*markdown_table(["cell", "samples"], rows), ""]
    lines += ["## Jobs, best first by the best value over time", ""]
    if key:
        lines.append("Best job first, by its best value over time; failed jobs last.")
    else:
        lines.append("No job reported an eval metric; rows by status, then job.")
    lines += ["", *jobs_markdown(table, [jobs.index(job) for job in ranked(jobs, key)])]
    _write_text("\n".join(lines) + "\n", files["md"])
    return Summary(sweep_dir, jobs, key, table, cells, files | figures, not_run, name, samples)


def log_summary_to_wandb(summary: Summary, logger: DictConfig, group: str | None) -> None:
    """The table and figures as one W&B run of the sweep's group, ``job_type=summary``.
    W&B failing here never fails the sweep: one line on stderr, and the files stay."""
    from ganexp.tracking.logger import resolve_mode

    if logger.get("name") == "none":
        return
    mode = resolve_mode(logger.get("mode", "auto"))
    if mode == "disabled":
        return
    import wandb

    run = None
    try:
        run = wandb.init(
            project=logger.get("project"),
            entity=logger.get("entity"),
            group=group,
            job_type="summary",
            name="summary",
            dir=str(summary.sweep_dir),
            mode=mode,
            config={"sweep": summary.name, "headline": summary.key},
            reinit="create_new",
            settings=wandb.Settings(console="off", silent=True),
        )
        # None stays None: W&B types each column, and "" would clash with numbers
        table = wandb.Table(columns=summary.table.columns, data=summary.table.rows)
        cells = wandb.Table(columns=summary.cells.columns, data=summary.cells.values())
        data: dict[str, Any] = {"summary": table, "cells": cells}
        for name in ("curves", "heatmap"):
            if name in summary.files:
                data[name] = wandb.Image(str(summary.files[name]))
        if summary.samples:
            looks = [
                [label, wandb.Image(str(path), caption=label)] for label, path in summary.samples
            ]
            data["cell_samples"] = wandb.Table(columns=["cell", "samples"], data=looks)
        run.log(data)
        run.summary.update({"jobs": len(summary.jobs), "failed": summary.failed})
        run.summary["verdict"] = summary.cells.verdict
    except Exception as ex:
        print(f"W&B: could not log the sweep summary ({ex}); the files have it", file=sys.stderr)
    finally:
        if run is not None:
            try:
                run.finish()
            except Exception as ex:
                print(f"W&B: finishing the summary run failed ({ex})", file=sys.stderr)


def sweep_group(config: DictConfig, jobs: list[JobResult]) -> str | None:
    """The W&B group the jobs logged to (as ``ganexp.cli.train._group`` names it)."""
    for job in jobs:
        if job.group:
            return job.group
    if OmegaConf.select(config, "logger.group"):
        return config.logger.group
    experiment = OmegaConf.select(config, "hydra.runtime.choices.experiment", default=None)
    return f"{experiment or 'sweep'}-{Path(config.hydra.sweep.dir).name}"


Made = TypeVar("Made")


def _summary_or_none(sweep_dir: Path, make: Callable[[], Made]) -> Made | None:
    """``make()`` (a :func:`summarize`, the Dirac-GAN report), or None after one line on
    stderr: a summary that cannot be written (a full disk, a second Ctrl-C) must not hide the
    jobs' own results."""
    try:
        return make()
    except OSError as ex:
        reason = ex.strerror or str(ex)
        print(
            f"ganexp: could not summarize {sweep_dir} ({reason}); each job's folder keeps its "
            "results",
            file=sys.stderr,
        )
    except KeyboardInterrupt:
        print(f"ganexp: the summary of {sweep_dir} was interrupted", file=sys.stderr)
    except Exception as ex:
        print(f"ganexp: could not summarize {sweep_dir}: {ex!r}", file=sys.stderr)
    return None


class SweepSummary(Callback):
    """Hydra callback: summarize the sweep dir when a multirun ends, or when the process exits
    before it does (Ctrl-C, a stop signal)."""

    #: jobs of the last summarized sweep that did not complete (the entrypoint's exit code)
    last_failed: int = 0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        SweepSummary.last_failed = 0
        atexit.register(self.summarize_stopped, config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        atexit.unregister(self.summarize_stopped)
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        jobs = collect_jobs(sweep_dir)
        SweepSummary.last_failed = sum(job.status != "completed" for job in jobs)
        summary = _summary_or_none(sweep_dir, lambda: summarize(sweep_dir, jobs))
        if summary is None:
            return
        log_summary_to_wandb(summary, config.logger, sweep_group(config, summary.jobs))
        if OmegaConf.select(config, "data.name") == "dirac":  # the Dirac-GAN study's report
            from ganexp.session.dirac import write_report  # torch: only for this study

            report = _summary_or_none(
                sweep_dir, lambda: write_report(sweep_dir, jobs, metrics_rows)
            )
            if report is not None:
                print(f"ganexp: Dirac-GAN report: {report}", file=sys.stderr)
        failed = f", {summary.failed} failed" if summary.failed else ""
        print(
            f"ganexp: sweep summary: {summary.files['md']} ({len(summary.jobs)} jobs{failed})",
            file=sys.stderr,
        )

    def summarize_stopped(self, config: DictConfig) -> None:
        """At exit, the summary of a sweep that stopped before its end: of the jobs that ran,
        and of those the basic sweeper had still to launch (other sweepers choose theirs as
        they go). No W&B summary run: the process is on its way out."""
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return

        def stopped() -> Summary:
            planned = planned_jobs(config)
            not_run = None if planned is None else jobs_not_run(sweep_dir, planned)
            return summarize(sweep_dir, not_run=not_run)

        summary = _summary_or_none(sweep_dir, stopped)
        if summary is None:
            return
        ran = len(summary.jobs) - len(summary.not_run or [])
        line = f"ganexp: sweep stopped: {summary.files['md']} summarizes the {ran} jobs that ran"
        if summary.not_run is not None:
            line += f"; not run: {', '.join(job.name for job in summary.not_run) or 'none'}"
        print(line, file=sys.stderr)
