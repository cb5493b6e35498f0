"""Cells: the jobs of a sweep that differ only in ``seed``, and what their seeds say together.

A sweep over some axes and seeds has one cell per combination of the axes other than ``seed``.
For each cell and metric, :func:`build_cells` takes the final value of every completed job (its
last evaluation, ``job.final[metric]``) and gives

``n``, ``mean``, ``sd``     over seeds (sample SD, ddof=1)
``ci_low``, ``ci_high``     the 95 % Student t interval of the mean (empty when n = 1)
``vs_best_p``               Welch's t-test against the best cell, Holm-corrected over the others
``best_over_time``          the mean over seeds of each job's best value on the way
``paper_*``                 a published number the run's config holds under ``paper``, whether
                            our mean lies inside its 95 % interval, and Welch's test against it

Cells rank on the mean final value of the headline metric, best first, cells without a value
last. The best value over time is shown but never ranks: taking each seed's best evaluation
selects on the noise, which flatters every cell and most those with the noisiest curves.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import Container, DictConfig, OmegaConf
from scipy import stats

from ganexp.errors import ConfigError
from ganexp.keys import maximize

AVERAGED_AXES = ("seed",)  # not an axis of a cell: its jobs are the cell's samples
ALPHA = 0.05  # the level of the verdict and of the intervals (95 %)
MIN_SEEDS = 3  # seeds per cell a verdict needs (two leave Welch's test about one degree of freedom)
PAPER_KEYS = ("where", "metric", "mean", "pm", "pm_kind", "n", "source")
PM_KINDS = ("SE", "SD", "none")  # none: the paper prints no spread (pm: null)
_NO_KEY = object()  # OmegaConf.select's default for a key the config lacks
PAPER_COLUMNS = [
    "paper_mean",
    "paper_pm",
    "paper_pm_kind",
    "paper_n",
    "inside_paper",
    "vs_paper_p",
    "paper_source",
]
MULTIRUN_CONFIG = "multirun.yaml"  # Hydra's composed config of the sweep, in the sweep dir


# metrics summarized beside a headline: a semi-supervised run's baseline, and D's gain over it
# on the same test images (its cell interval is the paired one over seeds); a translation's
# other measures of the same held-out translations
COMPANIONS = {
    "eval/ssl_accuracy": ("eval/ssl_baseline_accuracy", "eval/ssl_gain"),
    "eval/l1": ("eval/psnr", "eval/ssim", "eval/fd_classifier"),
    "eval/transfer_accuracy": (
        "eval/transfer_accuracy_ab",
        "eval/transfer_accuracy_ba",
        "eval/cycle_l1",
        "eval/fd_classifier_ab",
        "eval/fd_classifier_ba",
    ),
}


@dataclass
class JobResult:
    """One job of a sweep, as its folder tells it."""

    name: str  # the folder, relative to the sweep dir ("0", "1", ...)
    path: Path
    status: str
    error: str | None
    overrides: list[str]
    steps: int | None = None
    wall_time_s: float | None = None
    final: dict[str, float] = field(default_factory=dict)
    best: dict[str, Any] = field(default_factory=dict)
    group: str | None = None

    @property
    def axes(self) -> dict[str, str]:
        """The job's own overrides as key -> value (Hydra's settings left out)."""
        pairs = (o.split("=", 1) for o in self.overrides if "=" in o)
        return {k.lstrip("+~"): v for k, v in pairs if not k.lstrip("+~").startswith("hydra")}

    @property
    def order(self) -> tuple[int, int, int, str]:
        """Sort key: numbered job folders by number (their replicas, ``N/replica_k``, by k),
        others by name after them."""
        number, _, replica = self.name.partition("/")
        k = replica.removeprefix("replica_")
        if number.isdigit() and (not replica or k.isdigit()):
            return (0, int(number), int(k) if replica else -1, "")
        return (1, 0, 0, self.name)


def t_interval(values: Sequence[float]) -> tuple[float, float] | None:
    """The 95 % Student t interval of the mean of ``values``; None with fewer than two.
    Equal values give [mean, mean]: ``statistics`` computes exactly, so their SD is 0.0."""
    n = len(values)
    if n < 2:
        return None
    mean, sd = statistics.mean(values), statistics.stdev(values)
    half = float(stats.t.ppf(1 - ALPHA / 2, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


def welch_p(mean1: float, sd1: float, n1: int, mean2: float, sd2: float, n2: int) -> float | None:
    """Two-sided p of Welch's t-test (unequal variances) from two samples' mean, SD and size.

    None when either side has n < 2 (no variance to test with). When both SDs are 0 the test
    is undefined (0/0); the samples then either agree exactly (p = 1.0) or differ with no
    noise at all (p = 0.0).
    """
    if n1 < 2 or n2 < 2:
        return None
    if sd1 == 0 and sd2 == 0:
        return 1.0 if mean1 == mean2 else 0.0
    result = stats.ttest_ind_from_stats(mean1, sd1, n1, mean2, sd2, n2, equal_var=False)
    return float(result.pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of p-values for testing them together (family-wise error).

    Written out because scipy has none (``scipy.stats.false_discovery_control`` is
    Benjamini-Hochberg, which bounds the false discovery rate instead) and statsmodels is not
    worth a dependency for six lines: the i-th smallest of m p-values is multiplied by
    m - i + 1, capped at 1, and kept at least as large as the ones before it.
    """
    m = len(pvalues)
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def _override_text(value: Any) -> str:
    """A YAML scalar as it is typed in an override (``true``, not ``True``)."""
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else str(value)


@dataclass(frozen=True)
class PaperRow:
    """A published result: ``mean`` ± ``pm`` (an SE or an SD) over ``n`` runs of ``metric``,
    for the cells whose swept axes have the values in ``where``; ``pm`` None where the paper
    prints no spread (no interval and no test against it then)."""

    where: dict[str, str]
    metric: str
    mean: float
    pm: float | None
    pm_kind: str
    n: int
    source: str

    @property
    def se(self) -> float | None:
        if self.pm is None:
            return None
        return self.pm if self.pm_kind == "SE" else self.pm / math.sqrt(self.n)

    def interval(self) -> tuple[float, float] | None:
        """The 95 % t interval of the published mean; None for a single run or no spread."""
        if self.n < 2 or self.se is None:
            return None
        half = float(stats.t.ppf(1 - ALPHA / 2, self.n - 1)) * self.se
        return self.mean - half, self.mean + half

    def matches(self, axes: Mapping[str, str]) -> bool:
        return all(axes.get(key) == value for key, value in self.where.items())


def _plain(rows: Any) -> list[Any]:
    if isinstance(rows, Container):
        rows = OmegaConf.to_container(rows, resolve=True)
    return list(rows or [])


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_paper_rows(rows: Any, cfg: DictConfig | None = None) -> None:
    """Refuse a bad ``paper`` list (as the config holds it) with a :class:`ConfigError` naming
    the row and key, e.g. ``paper[2].pm_kind``; with the run's ``cfg``, also a ``where`` key
    that is no config key (it could never match a cell). Cheap: the entrypoint calls it before
    training."""
    for i, row in enumerate(_plain(rows)):
        at = f"paper[{i}]"
        if not isinstance(row, Mapping):
            raise ConfigError(at, row, f"a mapping with keys {', '.join(PAPER_KEYS)}")
        for key in PAPER_KEYS:
            if key not in row:
                raise ConfigError(
                    f"{at}.{key}", None, f"missing; a row has {', '.join(PAPER_KEYS)}"
                )
        for key in row:
            if key not in PAPER_KEYS:
                raise ConfigError(f"{at}.{key}", row[key], f"no such key; {', '.join(PAPER_KEYS)}")
        where = row["where"]
        scalar = (str, int, float, bool, type(None))
        if not isinstance(where, Mapping) or not all(
            isinstance(k, str) and isinstance(v, scalar) for k, v in where.items()
        ):
            raise ConfigError(f"{at}.where", where, "a mapping of swept axis -> value")
        for key, value in where.items():
            if cfg is not None and OmegaConf.select(cfg, key, default=_NO_KEY) is _NO_KEY:
                allowed = "a config key or group that a sweep varies, e.g. discriminator.pack"
                raise ConfigError(f"{at}.where.{key}", value, f"no such config key; {allowed}")
        if not isinstance(row["metric"], str) or not row["metric"]:
            raise ConfigError(f"{at}.metric", row["metric"], "a logged key, e.g. eval/fid")
        if not _is_number(row["mean"]):
            raise ConfigError(f"{at}.mean", row["mean"], "must be a finite number")
        if row["pm_kind"] not in PM_KINDS:
            allowed = "SE or SD (what the ± is), or none (the paper prints no spread)"
            raise ConfigError(f"{at}.pm_kind", row["pm_kind"], allowed)
        if row["pm_kind"] == "none":
            if row["pm"] is not None:
                raise ConfigError(f"{at}.pm", row["pm"], "null where pm_kind is none")
        elif not _is_number(row["pm"]) or row["pm"] < 0:
            raise ConfigError(f"{at}.pm", row["pm"], "must be a finite number >= 0")
        n = row["n"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"{at}.n", n, "must be an integer >= 1 (runs behind the mean)")
        if not isinstance(row["source"], str):
            raise ConfigError(f"{at}.source", row["source"], "text: where the number is from")


def parse_paper_rows(rows: Any) -> list[PaperRow]:
    """The ``paper`` list as :class:`PaperRow` s, after :func:`check_paper_rows`."""
    check_paper_rows(rows)
    return [
        PaperRow(
            where={str(k): _override_text(v) for k, v in row["where"].items()},
            metric=row["metric"],
            mean=float(row["mean"]),
            pm=None if row["pm"] is None else float(row["pm"]),
            pm_kind=row["pm_kind"],
            n=row["n"],
            source=row["source"],
        )
        for row in _plain(rows)
    ]


def read_sweep_config(sweep_dir: Path) -> DictConfig | None:
    """The config Hydra saved in the sweep dir at the sweep's start (None: there is none)."""
    path = sweep_dir / MULTIRUN_CONFIG
    config = OmegaConf.load(path) if path.is_file() else None
    return config if isinstance(config, DictConfig) else None


def read_paper_rows(sweep_dir: Path) -> list[PaperRow]:
    """The ``paper`` rows of the sweep's config."""
    config = read_sweep_config(sweep_dir)
    return parse_paper_rows(config.get("paper") if config is not None else None)


def sweep_identity(sweep_dir: Path) -> tuple[str, bool]:
    """The sweep's name for what is shared (``ganexp -m`` and its command line's overrides, never
    a machine's folder; the folder's own name if the config is gone) and whether it ran under
    debug=smoke."""
    config = read_sweep_config(sweep_dir)
    overrides = OmegaConf.select(config, "hydra.overrides.task") if config is not None else None
    choices = OmegaConf.select(config, "hydra.runtime.choices") if config is not None else None
    smoke = bool(choices) and choices.get("debug") == "smoke"
    if overrides is None:
        return sweep_dir.name, smoke
    return " ".join(["ganexp -m", *map(str, overrides)]), smoke


def _finite(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if _is_number(v)]


@dataclass
class Cell:
    """The jobs that share a value of every swept axis but ``seed``."""

    axes: dict[str, str]
    jobs: list[JobResult]

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.axes.items())

    def finals(self, metric: str | None) -> list[float]:
        """The final values of the completed jobs (a diverged job's NaN is not a value)."""
        done = [job for job in self.jobs if job.status == "completed"]
        return _finite(job.final.get(metric) for job in done) if metric else []

    def bests(self, metric: str | None) -> list[float]:
        done = [job for job in self.jobs if job.status == "completed"]
        return _finite(job.best.get("value") for job in done if job.best.get("key") == metric)


def group_cells(jobs: Sequence[JobResult], axes: Sequence[str]) -> list[Cell]:
    """One cell per combination of ``axes`` (seed left out), in the order jobs first have it."""
    shown = [axis for axis in axes if axis not in AVERAGED_AXES]
    cells: dict[tuple[str | None, ...], Cell] = {}
    for job in jobs:
        where = tuple(job.axes.get(axis) for axis in shown)
        if where not in cells:
            named = zip(shown, where, strict=True)
            cells[where] = Cell({a: v for a, v in named if v is not None}, [])
        cells[where].jobs.append(job)
    return list(cells.values())


@dataclass
class CellStats:
    """One row of cells.csv: a cell's seeds summarized for one metric."""

    metric: str | None
    cell: Cell
    values: list[float]
    best_over_time: float | None
    vs_best_p: float | None = None
    is_best: bool = False
    paper: PaperRow | None = None
    inside_paper: bool | None = None
    vs_paper_p: float | None = None

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.mean(self.values) if self.values else None

    @property
    def sd(self) -> float | None:
        return statistics.stdev(self.values) if self.n >= 2 else None

    @property
    def ci(self) -> tuple[float, float] | None:
        return t_interval(self.values)


def _stats(cells: Sequence[Cell], metric: str | None) -> list[CellStats]:
    rows = []
    for cell in cells:
        bests = cell.bests(metric)
        best_over_time = statistics.mean(bests) if bests else None
        rows.append(CellStats(metric, cell, cell.finals(metric), best_over_time))
    return rows


def _rank_key(row: CellStats, index: int) -> tuple[bool, float, int]:
    sign = -1.0 if row.metric and maximize(row.metric) else 1.0
    return (row.mean is None, 0.0 if row.mean is None else sign * row.mean, index)


def _compare_with_best(rows: list[CellStats]) -> None:
    """Mark the best row and set every other row's Welch p against it, Holm-corrected over
    the rows that could be tested."""
    valued = [i for i, row in enumerate(rows) if row.mean is not None]
    if not valued:
        return
    best = rows[min(valued, key=lambda i: _rank_key(rows[i], i))]
    best.is_best = True
    tested: list[CellStats] = []
    raw: list[float] = []
    for row in rows:
        if row is best or row.mean is None:
            continue
        p = welch_p(row.mean, row.sd or 0.0, row.n, best.mean, best.sd or 0.0, best.n)
        if p is not None:
            tested.append(row)
            raw.append(p)
    for row, p in zip(tested, holm(raw), strict=True):
        row.vs_best_p = p


def _compare_with_paper(rows: list[CellStats], paper: Sequence[PaperRow]) -> None:
    for row in rows:
        # the cell's axes and the overrides all its jobs share (a preset's fixed values)
        axes = row.cell.jobs[0].axes
        found = next((p for p in paper if p.metric == row.metric and p.matches(axes)), None)
        if found is None:
            continue
        row.paper = found
        interval = found.interval()
        if row.mean is not None and interval is not None:
            row.inside_paper = interval[0] <= row.mean <= interval[1]
        if row.mean is not None and found.se is not None:
            paper_sd = found.se * math.sqrt(found.n)
            sd = row.sd or 0.0
            row.vs_paper_p = welch_p(row.mean, sd, row.n, found.mean, paper_sd, found.n)


def _join(cells: Sequence[CellStats]) -> str:
    return "; ".join(row.cell.label for row in cells)


def _overlapping(rows: Sequence[CellStats], best: CellStats) -> list[CellStats]:
    """Rows the test tells apart from the best whose 95 % interval still overlaps the best's."""
    if best.ci is None:
        return []
    low, high = best.ci
    return [r for r in rows if r.ci is not None and r.ci[0] <= high and low <= r.ci[1]]


def verdict(rows: Sequence[CellStats], key: str | None, smoke: bool = False) -> str:
    """One sentence on which cells the seeds cannot tell apart from the best one; none for a
    smoke sweep or with fewer than :data:`MIN_SEEDS` seeds in the best cell (said why)."""
    if key is None:
        return "No job reported an eval metric: there is nothing to compare."
    if smoke:
        return (
            "No verdict: the sweep ran with debug=smoke (a few steps of small networks), so its "
            "numbers test the pipeline, not the methods."
        )
    best = next((row for row in rows if row.is_best), None)
    if best is None:
        return f"No cell has a final {key}: there is nothing to compare."
    if len(rows) == 1:
        return f"One cell (n={best.n}): there is nothing to compare it with."
    if best.n < MIN_SEEDS:
        return (
            f"No verdict: the best cell ({best.cell.label}) has n={best.n}; a verdict needs at "
            f"least {MIN_SEEDS} seeds per cell (e.g. seed=0,1,2): with fewer, Welch's test has "
            "too few degrees of freedom to tell an effect from the seeds' noise."
        )
    others = [row for row in rows if row is not best]
    untested = [row for row in others if row.vs_best_p is None or row.n < MIN_SEEDS]
    tested = [row for row in others if row not in untested]
    same = [row for row in tested if row.vs_best_p >= ALPHA]
    differ = [row for row in tested if row.vs_best_p < ALPHA]
    test = "(Welch, Holm)"
    if same:
        if not differ:
            tail = "no tested cell differs" if untested else "no cell differs"
        else:
            tail = "the other tested cells differ" if untested else "all other cells differ"
        text = (
            f"Indistinguishable from the best ({best.cell.label}) at p >= {ALPHA} {test}: "
            f"{_join(same)}; {tail}."
        )
    elif differ:
        every = "Every other tested cell" if untested else "Every other cell"
        text = f"{every} differs from the best ({best.cell.label}) at p < {ALPHA} {test}."
    else:
        return (
            f"Cannot test against the best ({best.cell.label}): no other cell has n >= {MIN_SEEDS}."
        )
    overlap = _overlapping(differ, best)
    if overlap:
        text += (
            f" The 95 % intervals of {_join(overlap)} overlap the best's, yet the test tells them "
            "apart: both can be true, since the test is on the difference of the means, whose "
            "interval is narrower than the two intervals side by side."
        )
    if untested:
        text += f" Not tested (n < {MIN_SEEDS}): {_join(untested)}."
    return text


@dataclass
class CellTable:
    """cells.csv: one row per (cell, metric), the headline metric's first, best cell first."""

    key: str | None
    axes: list[str]  # the cells' axes, under their override names
    cells: list[Cell]  # best first
    rows: list[CellStats]
    verdict: str
    has_paper: bool = False

    @property
    def headline(self) -> list[CellStats]:
        """The headline metric's rows, one per cell, best first."""
        return self.rows[: len(self.cells)]

    @property
    def columns(self) -> list[str]:
        columns = ["metric", *self.axes, "n", "mean", "sd", "ci_low", "ci_high", "vs_best_p"]
        return [*columns, "best_over_time", *(PAPER_COLUMNS if self.has_paper else [])]

    def values(self) -> list[list[Any]]:
        """The rows as plain values; None for an empty cell (never NaN)."""
        out = []
        for row in self.rows:
            ci = row.ci or (None, None)
            line = [row.metric, *(row.cell.axes.get(axis) for axis in self.axes), row.n]
            line += [row.mean, row.sd, *ci, row.vs_best_p, row.best_over_time]
            if self.has_paper:
                paper = row.paper
                line += (
                    [paper.mean, paper.pm, paper.pm_kind, paper.n]
                    if paper
                    else [None, None, None, None]
                )
                line += [row.inside_paper, row.vs_paper_p, paper.source if paper else None]
            out.append(line)
        return out

    def display(self) -> tuple[list[str], list[list[str]]]:
        """Columns and rows as text for summary.md: the interval as ``[lo, hi]``."""
        columns = ["metric", *self.axes, "n", "mean", "sd", "95% CI", "vs_best_p"]
        columns += ["best_over_time"]
        if self.has_paper:
            columns += ["paper", "inside_paper", "vs_paper_p", "source"]
        lines = []
        for row in self.rows:
            if row.ci:
                ci = f"[{_num(row.ci[0])}, {_num(row.ci[1])}]"
            else:
                ci = "n=1: no interval" if row.n == 1 else ""
            p = "best" if row.is_best else _num(row.vs_best_p)
            line = [row.metric or "", *(row.cell.axes.get(axis, "") for axis in self.axes)]
            line += [str(row.n), _num(row.mean), _num(row.sd), ci, p, _num(row.best_over_time)]
            if self.has_paper:
                paper = row.paper
                published = _published(paper) if paper else ""
                inside = "" if row.inside_paper is None else ("yes" if row.inside_paper else "no")
                source = paper.source if paper else ""
                line += [published, inside, _num(row.vs_paper_p), source]
            lines.append(line)
        return columns, lines


def _published(paper: PaperRow) -> str:
    if paper.pm is None:
        return f"{_num(paper.mean)} (no spread printed, n={paper.n})"
    return f"{_num(paper.mean)} ± {_num(paper.pm)} ({paper.pm_kind}, n={paper.n})"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def build_cells(
    jobs: Sequence[JobResult],
    key: str | None,
    axes: Sequence[str],
    paper: Sequence[PaperRow] = (),
    smoke: bool = False,
) -> CellTable:
    """The cells of ``jobs`` over the swept ``axes``: the headline ``key``'s rows ranked best
    first, then, in the same cell order, the rows of the cells whose jobs have another headline
    (a sweep over data sets of different kinds: the swiss roll beside the Gaussian mixtures),
    then the rows of the headline's :data:`COMPANIONS` and of every other metric ``paper``
    mentions."""
    cells = group_cells(jobs, axes)
    headline = _stats(cells, key)
    order = sorted(range(len(cells)), key=lambda i: _rank_key(headline[i], i))
    cells = [cells[i] for i in order]
    headline = [headline[i] for i in order]
    blocks = [headline]
    for metric in dict.fromkeys(job.best.get("key") for job in jobs):
        if metric and metric != key:
            blocks.append([row for row in _stats(cells, metric) if row.n])
    companions = [m for job in jobs for m in COMPANIONS.get(job.best.get("key"), ())]
    for metric in dict.fromkeys([*companions, *(row.metric for row in paper)]):
        if metric != key:
            blocks.append(_stats(cells, metric))
    for block in blocks:
        _compare_with_best(block)
        _compare_with_paper(block, paper)
    return CellTable(
        key=key,
        axes=[axis for axis in axes if axis not in AVERAGED_AXES],
        cells=cells,
        rows=[row for block in blocks for row in block],
        verdict=verdict(headline, key, smoke),
        has_paper=bool(paper),
    )


@dataclass
class Band:
    """A cell's curve: the mean over seeds at each step, and its 95 % t interval where at
    least two seeds have the step (NaN elsewhere, which a plot leaves blank)."""

    steps: list[int]
    mean: list[float]
    low: list[float]
    high: list[float]


def mean_curve(curves: Iterable[tuple[Sequence[int], Sequence[float]]]) -> Band:
    """Seeds' curves (steps, values) averaged step by step, over the seeds that have the step
    (a job stopped early, or one that evaluates at other steps, counts where it has values)."""
    at: dict[int, list[float]] = {}
    for steps, values in curves:
        for step, value in zip(steps, values, strict=True):
            if _is_number(value):
                at.setdefault(step, []).append(float(value))
    band = Band([], [], [], [])
    for step in sorted(at):
        values = at[step]
        low, high = t_interval(values) or (math.nan, math.nan)
        band.steps.append(step)
        band.mean.append(statistics.mean(values))
        band.low.append(low)
        band.high.append(high)
    return band
