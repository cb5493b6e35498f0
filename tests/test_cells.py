"""Cells of a sweep (ganexp/cells.py): seeds summarized per combination of the other axes, the
comparison with the best cell and with published numbers, and what the sweep summary makes of
them (cells.csv, summary.md, the figures, the W&B summary run). Sweeps are job folders written
here with job.json and metrics.jsonl, as real jobs leave them."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from scipy import stats
from test_sweeps import markdown_rows

from ganexp.analysis.cells import (
    build_cells,
    check_paper_rows,
    holm,
    mean_curve,
    parse_paper_rows,
    t_interval,
    welch_p,
)
from ganexp.errors import ConfigError
from ganexp.session.job import write_job_record
from ganexp.session.sweep import (
    JobResult,
    SweepSummary,
    collect_jobs,
    draw_curves,
    read_curve,
    summarize,
)
from ganexp.tracking.runfile import load_run

FD = "eval/fd_classifier"  # lower is better
MODES = "eval/modes_covered"  # higher is better
T975_2 = 4.302652729911275  # t(0.975, df=2), from a printed table


def write_job(
    sweep: Path,
    num: int,
    overrides: list[str],
    final: dict[str, float],
    best: float | None = None,
    curve: list[tuple[int, float]] = (),
    status: str = "completed",
) -> None:
    """A job folder as a real job leaves it: job.json and, if given, metrics.jsonl."""
    folder = sweep / str(num)
    key = next(iter(final), FD)
    value = final.get(key) if best is None else best
    record = {
        "status": status,
        "error": None if status == "completed" else "boom",
        "overrides": overrides,
        "group": "g",
        "steps": 10,
        "wall_time_s": 1.0,
        "final": final,
        "best": {"key": key, "value": value, "step": 10} if value is not None else {},
    }
    write_job_record(folder, record)
    if curve:
        lines = [json.dumps({"step": step, key: v}) for step, v in curve]
        (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def write_arms(sweep: Path, arms: dict[str, list[float]], key: str = FD) -> None:
    """One job per (arm, seed): ``loss=ARM seed=I`` with the given final values."""
    num = 0
    for arm, values in arms.items():
        for seed, value in enumerate(values):
            write_job(sweep, num, [f"loss={arm}", f"seed={seed}"], {key: value})
            num += 1


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def job_result(name: str, overrides: list[str], final: float, best: float) -> JobResult:
    return JobResult(
        name,
        Path(name),
        "completed",
        None,
        overrides,
        final={FD: final},
        best={"key": FD, "value": best, "step": 1},
    )


def test_interval_of_one_two_three_is_two_plus_minus_t_sd_over_root_n() -> None:
    low, high = t_interval([1.0, 2.0, 3.0])
    half = T975_2 * 1.0 / math.sqrt(3)  # sd of 1, 2, 3 is 1
    assert (low, high) == pytest.approx((2 - half, 2 + half), rel=1e-9)
    values = [0.3, 1.7, 2.2, 0.9, 1.1]
    mean, sem = np.mean(values), stats.sem(values)
    expected = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=sem)
    assert t_interval(values) == pytest.approx(expected, rel=1e-9)


def test_one_seed_has_no_interval_and_equal_seeds_a_zero_width_one() -> None:
    assert t_interval([4.0]) is None
    assert t_interval([0.1, 0.1, 0.1]) == (0.1, 0.1)  # exact: no rounding noise, never NaN


def test_welch_p_edge_cases() -> None:
    assert welch_p(1.0, 0.0, 3, 1.0, 0.0, 3) == 1.0  # both exact and equal
    assert welch_p(1.0, 0.0, 3, 1.5, 0.0, 3) == 0.0  # both exact and different
    assert welch_p(1.0, 0.5, 1, 1.5, 0.5, 3) is None  # one seed: no variance
    a, b = [1.0, 1.3, 0.8, 1.1], [1.6, 1.9, 1.4]
    expected = stats.ttest_ind(a, b, equal_var=False).pvalue
    got = welch_p(np.mean(a), np.std(a, ddof=1), 4, np.mean(b), np.std(b, ddof=1), 3)
    assert got == pytest.approx(expected, rel=1e-9)


def test_holm_against_a_hand_worked_example() -> None:
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> kept at 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1
    assert holm([0.2]) == [0.2]
    assert holm([]) == []


def test_seeds_tell_a_worse_arm_apart_and_not_two_arms_of_one_distribution(
    tmp_path: Path,
) -> None:
    """Seeds 0, 1, 2 over three arms: `a` and `b` spread alike around 1.0, `c` around 3.0.
    c differs from the best (p < 0.05), the other of a and b does not; Holm over both tests."""
    arms = {"a": [0.9, 1.0, 1.1], "b": [0.95, 1.12, 0.98], "c": [2.9, 3.0, 3.15]}
    write_arms(tmp_path, arms)
    summary = summarize(tmp_path)
    rows = read_csv(tmp_path / "cells.csv")
    columns = ["metric", "loss", "n", "mean", "sd", "ci_low", "ci_high", "vs_best_p"]
    assert list(rows[0]) == [*columns, "best_over_time"]  # no paper rows: no paper columns
    best = min(("a", "b"), key=lambda arm: np.mean(arms[arm]))
    other = "b" if best == "a" else "a"
    assert [r["loss"] for r in rows] == [best, other, "c"]
    assert {r["metric"] for r in rows} == {FD} and {r["n"] for r in rows} == {"3"}
    assert rows[0]["vs_best_p"] == ""
    raw = [stats.ttest_ind(arms[arm], arms[best], equal_var=False).pvalue for arm in (other, "c")]
    assert [float(r["vs_best_p"]) for r in rows[1:]] == pytest.approx(holm(raw), rel=1e-9)
    assert float(rows[1]["vs_best_p"]) >= 0.05
    assert float(rows[2]["vs_best_p"]) < 0.05
    for row in rows:
        values = arms[row["loss"]]
        assert float(row["mean"]) == pytest.approx(np.mean(values))
        assert float(row["sd"]) == pytest.approx(np.std(values, ddof=1))
        assert (float(row["ci_low"]), float(row["ci_high"])) == pytest.approx(t_interval(values))
    assert summary.cells.verdict == (
        f"Indistinguishable from the best (loss={best}) at p >= 0.05 (Welch, Holm): "
        f"loss={other}; all other cells differ."
    )
    text = (tmp_path / "summary.md").read_text()
    assert text.index("## Cells") < text.index(f"**Verdict:** {summary.cells.verdict}")
    assert text.index("**Verdict:**") < text.index("## Jobs")
    table = markdown_rows(tmp_path / "summary.md", first="metric")
    assert [r["loss"] for r in table] == [best, other, "c"] and table[0]["vs_best_p"] == "best"
    low, high = t_interval(arms[best])
    assert table[0]["95% CI"] == f"[{low:.4g}, {high:.4g}]"
    assert len(markdown_rows(tmp_path / "summary.md")) == 9  # the jobs table is still there


def test_cells_rank_on_the_final_value_not_the_best_over_time() -> None:
    """Arm x reached 1.0 on the way but ended at 5.0; arm y ended at 3.0: y ranks first."""
    jobs = [
        job_result("0", ["loss=x", "seed=0"], final=5.0, best=1.0),
        job_result("1", ["loss=x", "seed=1"], final=5.2, best=1.2),
        job_result("2", ["loss=y", "seed=0"], final=3.0, best=3.0),
        job_result("3", ["loss=y", "seed=1"], final=3.1, best=2.9),
    ]
    table = build_cells(jobs, FD, ["loss", "seed"])
    assert [row.cell.label for row in table.headline] == ["loss=y", "loss=x"]
    assert [row.best_over_time for row in table.headline] == pytest.approx([2.95, 1.1])
    assert table.headline[0].is_best and table.headline[1].vs_best_p is not None
    # a maximized metric ranks the other way
    for job in jobs:
        job.final = {MODES: job.final[FD]}
        job.best = {**job.best, "key": MODES}
    assert [r.cell.label for r in build_cells(jobs, MODES, ["loss", "seed"]).headline] == [
        "loss=x",
        "loss=y",
    ]


def test_a_semi_supervised_sweep_ranks_high_accuracy_first_beside_its_baseline_and_gain() -> None:
    ssl, baseline, gain = "eval/ssl_accuracy", "eval/ssl_baseline_accuracy", "eval/ssl_gain"

    def job(name: str, overrides: list[str], accuracy: float, alone: float) -> JobResult:
        final = {ssl: accuracy, baseline: alone, gain: accuracy - alone}
        best = {"key": ssl, "value": accuracy, "step": 1}
        return JobResult(name, Path(name), "completed", None, overrides, 1, 1.0, final, best)

    jobs = [
        job("0", ["data.labels_per_class=10", "seed=0"], 0.60, 0.55),
        job("1", ["data.labels_per_class=10", "seed=1"], 0.64, 0.56),
        job("2", ["data.labels_per_class=50", "seed=0"], 0.80, 0.79),
        job("3", ["data.labels_per_class=50", "seed=1"], 0.82, 0.80),
    ]
    table = build_cells(jobs, ssl, ["data.labels_per_class", "seed"])
    rows = [(r.metric, r.cell.label) for r in table.rows]
    assert rows == [
        (metric, f"data.labels_per_class={n}") for metric in (ssl, baseline, gain) for n in (50, 10)
    ]
    gains = [r for r in table.rows if r.metric == gain]
    assert [r.mean for r in gains] == pytest.approx([0.015, 0.065])
    # the gain's interval is the paired one: t over the per-seed differences
    assert gains[1].ci == pytest.approx(t_interval([0.05, 0.08]))


def test_cells_of_another_headline_get_their_own_rows() -> None:
    """wgan_toy sweeps the swiss roll (headline eval/sliced_wasserstein) beside Gaussian
    mixtures (eval/modes_recovered): each cell is summarized on its own jobs' headline."""
    swd, recovered = "eval/sliced_wasserstein", "eval/modes_recovered"

    def job(name: str, data: str, key: str, value: float) -> JobResult:
        best = {"key": key, "value": value, "step": 1}
        return JobResult(
            name, Path(name), "completed", None, [f"data={data}"], 1, 1.0, {key: value}, best
        )

    jobs = [job("0", "ring8", recovered, 8), job("1", "grid25", recovered, 20)]
    jobs += [job("2", "swissroll", swd, 0.1), job("3", "swissroll", swd, 0.3)]
    table = build_cells(jobs, recovered, ["data"])
    assert [(r.metric, r.cell.label, r.n) for r in table.rows] == [
        (recovered, "data=grid25", 1),
        (recovered, "data=ring8", 1),
        (recovered, "data=swissroll", 0),
        (swd, "data=swissroll", 2),
    ]
    assert table.rows[-1].mean == pytest.approx(0.2)


def test_identical_seeds_give_zero_sd_and_no_nan_anywhere(tmp_path: Path) -> None:
    write_arms(tmp_path, {"a": [0.1, 0.1, 0.1], "b": [0.3, 0.3, 0.3], "c": [0.1, 0.1, 0.1]})
    write_job(tmp_path, 9, ["loss=d", "seed=0"], {FD: math.nan})  # a NaN is not a value
    summary = summarize(tmp_path)
    text = (tmp_path / "cells.csv").read_text()
    assert "nan" not in text.lower()
    rows = {r["loss"]: r for r in read_csv(tmp_path / "cells.csv")}
    assert (rows["a"]["sd"], rows["a"]["ci_low"], rows["a"]["ci_high"]) == ("0.0", "0.1", "0.1")
    assert rows["c"]["vs_best_p"] == "1.0"  # both exact and equal
    assert rows["b"]["vs_best_p"] == "0.0"  # both exact and different
    assert rows["d"]["n"] == "0" and rows["d"]["mean"] == "" and rows["d"]["vs_best_p"] == ""
    assert list(rows) == ["a", "c", "b", "d"]  # cells without a value last
    assert summary.cells.verdict.endswith("Not tested (n < 3): loss=d.")


def test_one_seed_per_cell_gives_an_empty_interval_and_says_it_cannot_test(
    tmp_path: Path,
) -> None:
    write_arms(tmp_path, {"a": [2.0], "b": [1.0]})
    summary = summarize(tmp_path)
    rows = read_csv(tmp_path / "cells.csv")
    assert [(r["loss"], r["n"], r["sd"], r["ci_low"], r["vs_best_p"]) for r in rows] == [
        ("b", "1", "", "", ""),
        ("a", "1", "", "", ""),
    ]
    table = markdown_rows(tmp_path / "summary.md", first="metric")
    assert {r["95% CI"] for r in table} == {"n=1: no interval"}
    assert summary.cells.verdict.startswith("No verdict: the best cell (loss=b) has n=1; a verdict")


PAPER = [
    {  # our pack=2 mean 7.0 lies inside 7.2 ± t(0.975, 9) x 0.3 = [6.52, 7.88]
        "where": {"discriminator.pack": 2},
        "metric": MODES,
        "mean": 7.2,
        "pm": 0.3,
        "pm_kind": "SE",
        "n": 10,
        "source": "PacGAN Table 1",
    },
    {  # pack=1: 5.0 is outside 7.0 ± t(0.975, 3) x 0.4 / 2 = [6.36, 7.64] (an SD of 0.4, n=4)
        "where": {"discriminator.pack": 1},
        "metric": MODES,
        "mean": 7.0,
        "pm": 0.4,
        "pm_kind": "SD",
        "n": 4,
        "source": "PacGAN Table 1",
    },
    {
        "where": {"discriminator.pack": 1},
        "metric": "eval/high_quality",
        "mean": 0.9,
        "pm": 0.02,
        "pm_kind": "SD",
        "n": 10,
        "source": "PacGAN Table 1",
    },
]


def test_paper_columns_say_whether_our_mean_lies_inside_the_published_interval(
    tmp_path: Path,
) -> None:
    """The rows come from multirun.yaml (as Hydra writes it at the sweep's start); `where`
    matches the jobs' override text (2 == "2"); other metrics with paper rows follow."""
    ours = {"1": [4.9, 5.0, 5.1], "2": [6.9, 7.0, 7.1]}
    quality = {"1": [0.80, 0.82, 0.84], "2": [0.95, 0.97, 0.99]}
    num = 0
    for pack, values in ours.items():
        for seed, value in enumerate(values):
            final = {MODES: value, "eval/high_quality": quality[pack][seed]}
            write_job(tmp_path, num, [f"discriminator.pack={pack}", f"seed={seed}"], final)
            num += 1
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"seed": 0, "paper": PAPER}))
    summarize(tmp_path)
    rows = read_csv(tmp_path / "cells.csv")
    paper_columns = ["paper_mean", "paper_pm", "paper_pm_kind", "paper_n", "inside_paper"]
    assert list(rows[0])[-7:] == [*paper_columns, "vs_paper_p", "paper_source"]
    assert [(r["metric"], r["discriminator.pack"]) for r in rows] == [
        (MODES, "2"),  # higher is better: pack=2 first
        (MODES, "1"),
        ("eval/high_quality", "2"),  # the same cell order, its own best cell
        ("eval/high_quality", "1"),
    ]
    assert [r["inside_paper"] for r in rows] == ["True", "False", "", "False"]
    assert (rows[0]["paper_mean"], rows[0]["paper_pm_kind"], rows[0]["paper_n"]) == (
        "7.2",
        "SE",
        "10",
    )
    assert rows[0]["paper_source"] == "PacGAN Table 1" and rows[2]["paper_source"] == ""
    expected = stats.ttest_ind_from_stats(
        7.0, 0.1, 3, 7.2, 0.3 * math.sqrt(10), 10, equal_var=False
    ).pvalue
    assert float(rows[0]["vs_paper_p"]) == pytest.approx(expected)
    expected = stats.ttest_ind_from_stats(5.0, 0.1, 3, 7.0, 0.4, 4, equal_var=False).pvalue
    assert float(rows[1]["vs_paper_p"]) == pytest.approx(expected)
    assert rows[2]["vs_best_p"] == "" and float(rows[3]["vs_best_p"]) < 0.05
    table = markdown_rows(tmp_path / "summary.md", first="metric")
    assert table[0]["paper"] == "7.2 ± 0.3 (SE, n=10)" and table[0]["inside_paper"] == "yes"
    assert table[1]["inside_paper"] == "no"


def test_a_paper_mean_without_a_spread_is_shown_untested(tmp_path: Path) -> None:
    """VEEGAN prints means only: `pm_kind: none` shows the mean, no interval, no test (a spread
    of 0 would make any other mean 'outside' at p = 0)."""
    for seed, value in enumerate([7.0, 8.0, 8.0]):
        write_job(tmp_path, seed, ["discriminator.pack=2", f"seed={seed}"], {MODES: value})
    row = {**PAPER[0], "mean": 7.6, "pm": None, "pm_kind": "none", "n": 5, "source": "VEEGAN"}
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"seed": 0, "paper": [row]}))
    summarize(tmp_path)
    rows = read_csv(tmp_path / "cells.csv")
    assert (rows[0]["paper_mean"], rows[0]["paper_pm"], rows[0]["paper_pm_kind"]) == (
        "7.6",
        "",
        "none",
    )
    assert rows[0]["inside_paper"] == "" and rows[0]["vs_paper_p"] == ""
    table = markdown_rows(tmp_path / "summary.md", first="metric")
    assert table[0]["paper"] == "7.6 (no spread printed, n=5)"
    assert table[0]["inside_paper"] == "" and table[0]["vs_paper_p"] == ""


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"pm_kind": "CI"}, "paper[1].pm_kind"),
        ({"pm": None}, "paper[1].pm"),
        ({"pm_kind": "none"}, "paper[1].pm"),
        ({"n": 0}, "paper[1].n"),
        ({"source": None}, "paper[1].source"),
        ({"pm": -0.1}, "paper[1].pm"),
        ({"mean": "high"}, "paper[1].mean"),
        ({"where": ["discriminator.pack", 2]}, "paper[1].where"),
        ({"pm_knd": "SE"}, "paper[1].pm_knd"),
    ],
)
def test_a_bad_paper_row_is_refused_naming_its_key(change: dict, key: str) -> None:
    rows = [dict(PAPER[0]), {**PAPER[1], **change}]
    with pytest.raises(ConfigError) as raised:
        check_paper_rows(OmegaConf.create(rows))  # as the config holds them
    assert raised.value.key == key
    assert str(raised.value).startswith(f"{key}=")


def test_a_paper_row_missing_a_key_is_refused_and_good_rows_pass() -> None:
    row = {k: v for k, v in PAPER[0].items() if k != "pm_kind"}
    with pytest.raises(ConfigError, match=r"^paper\[0\]\.pm_kind="):
        check_paper_rows([row])
    check_paper_rows(OmegaConf.create(PAPER))
    check_paper_rows([])
    assert parse_paper_rows(PAPER)[0].where == {"discriminator.pack": "2"}


def test_mean_curve_uses_the_seeds_that_have_each_step() -> None:
    band = mean_curve([([0, 10, 20], [1.0, 2.0, 3.0]), ([0, 10], [3.0, 4.0]), ([0], [math.nan])])
    assert band.steps == [0, 10, 20]
    assert band.mean == [2.0, 3.0, 3.0]
    half = 12.706204736174698 * math.sqrt(2) / math.sqrt(2)  # t(0.975, 1) x sd / sqrt(n)
    assert (band.low[0], band.high[0]) == pytest.approx((2.0 - half, 2.0 + half))
    assert math.isnan(band.low[2]) and math.isnan(band.high[2])  # one seed: no band


def test_figures_show_the_cells(tmp_path: Path) -> None:
    """Two axes and two seeds: a heatmap of the cells and one band per cell in curves.png."""
    num = 0
    for loss in ("bce", "wgan_gp"):
        for norm in ("batch", "layer"):
            for seed in (0, 1):
                final = 1.0 + 0.1 * seed + (loss == "bce") + 0.5 * (norm == "layer")
                curve = [(step, final + 1 / (1 + step)) for step in (0, 5, 10)]
                overrides = [f"loss={loss}", f"norm={norm}", f"seed={seed}"]
                write_job(tmp_path, num, overrides, {FD: final}, curve=curve)
                num += 1
    summary = summarize(tmp_path)
    for name in ("curves", "heatmap"):
        assert summary.files[name].stat().st_size > 1000, name
    assert len(read_csv(tmp_path / "cells.csv")) == 4
    assert "![heatmap](heatmap.png)" in (tmp_path / "summary.md").read_text()


def offline_sweep_config(sweep: Path) -> DictConfig:
    """What the summary callback is given at a sweep's end, W&B offline."""
    return OmegaConf.create(
        {
            "hydra": {"sweep": {"dir": str(sweep)}, "runtime": {"choices": {}}},
            "logger": {"name": "wandb", "mode": "offline", "project": "t", "group": "g"},
        }
    )


def test_the_wandb_summary_run_holds_the_cells_table_and_the_verdict(tmp_path: Path) -> None:
    write_arms(tmp_path, {"a": [1.0, 1.1, 0.9], "b": [2.0, 2.1, 1.9]})
    SweepSummary().on_multirun_end(offline_sweep_config(tmp_path))
    logged = load_run(tmp_path)
    cells = logged.history[0]["cells"]
    assert cells["_type"] == "table-file" and cells["nrows"] == 2
    saved = json.loads((logged.files_dir / cells["path"]).read_text())
    assert saved["columns"] == [
        *("metric", "loss", "n", "mean", "sd", "ci_low", "ci_high", "vs_best_p"),
        "best_over_time",
    ]
    assert [row[:3] for row in saved["data"]] == [[FD, "a", 3], [FD, "b", 3]]
    assert saved["data"][0][7] is None and saved["data"][1][7] < 0.05
    assert logged.summary["verdict"] == (
        "Every other cell differs from the best (loss=a) at p < 0.05 (Welch, Holm)."
    )


def test_a_paper_row_on_a_key_the_config_lacks_is_refused_before_training() -> None:
    """A typo in ``where`` could never match a cell: the preset is refused, naming the key."""
    from test_bad_input import preflight, refusal

    row = "{where: {discriminator.%s: 2}, metric: m, mean: 1, pm: 0, pm_kind: SD, n: 1, source: s}"
    message = refusal("experiment=pacgan_ring", f"paper=[{row % 'pak'}]")
    assert message.startswith("paper[0].where.discriminator.pak=2: no such config key"), message
    preflight(["experiment=pacgan_ring", f"paper=[{row % 'pack'}]"])


def test_a_job_record_without_final_values_takes_them_from_its_log(tmp_path: Path) -> None:
    """A finished job that an earlier ganexp started again kept no results in job.json: its
    final values are its last evaluation in metrics.jsonl (a cut last line skipped)."""
    from ganexp.session.sweep import read_job

    folder = tmp_path / "0"
    write_job_record(folder, {"status": "completed", "overrides": ["seed=0"], "final": {}})
    rows = [
        {"step": 1, "loss/d": 1.0},
        {"step": 2, "eval/fd": 9.0, "eval/is": 1.0},
        {"step": 3, "loss/d": 0.5},
        {"step": 4, "eval/fd": 7.0, "eval/is": 2.0},
    ]
    text = "".join(json.dumps(row) + "\n" for row in rows) + '{"step": 5, "eval/f'
    (folder / "metrics.jsonl").write_text(text)
    assert read_job(tmp_path, folder).final == {"eval/fd": 7.0, "eval/is": 2.0}
    write_job_record(folder, {"status": "completed", "final": {"eval/fd": 1.0}})
    assert read_job(tmp_path, folder).final == {"eval/fd": 1.0}  # the record wins


def test_a_paired_translation_sweep_summarizes_every_measure_of_its_translations() -> None:
    """Headed by eval/l1 (lower is better), with PSNR and SSIM ranked higher-is-better."""
    measures = ("eval/l1", "eval/psnr", "eval/ssim", "eval/fd_classifier")

    def job(name: str, overrides: list[str], values: tuple[float, ...]) -> JobResult:
        best = {"key": "eval/l1", "value": values[0], "step": 1}
        final = dict(zip(measures, values, strict=True))
        return JobResult(name, Path(name), "completed", None, overrides, 1, 1.0, final, best)

    jobs = [
        job("0", ["task.l1_weight=100", "seed=0"], (0.04, 23.0, 0.85, 4.0)),
        job("1", ["task.l1_weight=100", "seed=1"], (0.05, 22.0, 0.84, 3.0)),
        job("2", ["task.l1_weight=0", "seed=0"], (0.06, 21.0, 0.80, 6.0)),
        job("3", ["task.l1_weight=0", "seed=1"], (0.05, 20.0, 0.82, 5.0)),
    ]
    table = build_cells(jobs, "eval/l1", ["task.l1_weight", "seed"])
    assert [r.metric for r in table.rows] == [m for m in measures for _ in range(2)]
    psnr = [r for r in table.rows if r.metric == "eval/psnr"]
    assert [r.mean for r in psnr] == pytest.approx([22.5, 20.5])
    assert psnr[0].is_best and not psnr[1].is_best  # the higher PSNR is the better one


def test_two_seeds_a_cell_give_no_verdict_and_say_why(tmp_path: Path) -> None:
    write_arms(tmp_path, {"a": [1.0, 1.1], "b": [5.0, 5.2]})
    summary = summarize(tmp_path)
    assert summary.cells.verdict == (
        "No verdict: the best cell (loss=a) has n=2; a verdict needs at least 3 seeds per cell "
        "(e.g. seed=0,1,2): with fewer, Welch's test has too few degrees of freedom to tell an "
        "effect from the seeds' noise."
    )
    rows = read_csv(tmp_path / "cells.csv")  # the numbers are still there to read
    assert rows[1]["vs_best_p"] != ""


def test_a_smoke_sweep_gives_no_verdict_and_its_summary_names_the_command(tmp_path: Path) -> None:
    write_arms(tmp_path, {"a": [0.9, 1.0, 1.1], "b": [2.9, 3.0, 3.1]})
    saved = {
        "hydra": {
            "overrides": {"task": ["experiment=norm_study", "debug=smoke", "loss=a,b"]},
            "runtime": {"choices": {"debug": "smoke", "experiment": "norm_study"}},
        }
    }
    (tmp_path / "multirun.yaml").write_text(OmegaConf.to_yaml(saved))
    summary = summarize(tmp_path)
    assert summary.cells.verdict.startswith("No verdict: the sweep ran with debug=smoke")
    text = (tmp_path / "summary.md").read_text()
    assert text.startswith("# Sweep: `ganexp -m experiment=norm_study debug=smoke loss=a,b`\n")
    assert str(tmp_path) not in text  # nothing of this machine's folders in what is shared
    assert "## Cells, best first by the final value" in text
    assert "## Jobs, best first by the best value over time" in text


def test_a_summary_without_its_config_is_named_by_its_folder_not_its_path(tmp_path: Path) -> None:
    write_arms(tmp_path, {"a": [1.0, 1.1, 0.9]})
    summarize(tmp_path)
    text = (tmp_path / "summary.md").read_text()
    assert text.startswith(f"# Sweep: `{tmp_path.name}`\n") and str(tmp_path) not in text


def test_overlapping_intervals_beside_a_significant_test_are_explained(tmp_path: Path) -> None:
    """Two arms whose 95 % intervals overlap while Welch's test separates them (p < 0.05)."""
    arms = {"a": [1.0, 1.1, 1.2, 1.05, 1.15], "b": [1.2, 1.3, 1.25, 1.35, 1.15]}
    write_arms(tmp_path, arms)
    summary = summarize(tmp_path)
    a, b = (t_interval(arms[k]) for k in "ab")
    assert a[1] >= b[0]  # the intervals overlap ...
    assert stats.ttest_ind(arms["a"], arms["b"], equal_var=False).pvalue < 0.05  # ... yet differ
    assert summary.cells.verdict == (
        "Every other cell differs from the best (loss=a) at p < 0.05 (Welch, Holm). The 95 % "
        "intervals of loss=b overlap the best's, yet the test tells them apart: both can be true, "
        "since the test is on the difference of the means, whose interval is narrower than the "
        "two intervals side by side."
    )


def test_one_evaluation_is_an_error_bar_and_a_count_interval_stops_at_zero(tmp_path: Path) -> None:
    """Three seeds per arm, each evaluated once: a band over one step would draw nothing, and
    the t interval of (0, 0, 1) modes reaches below 0, which no count can."""
    arms = {"a": [0.0, 0.0, 1.0], "b": [3.0, 4.0, 5.0]}
    num = 0
    for arm, values in arms.items():
        for seed, value in enumerate(values):
            write_job(
                tmp_path, num, [f"loss={arm}", f"seed={seed}"], {MODES: value}, curve=[(6, value)]
            )
            num += 1
    assert t_interval(arms["a"])[0] < 0
    jobs = collect_jobs(tmp_path)
    cells = build_cells(jobs, MODES, ["loss", "seed"]).cells
    fig = draw_curves(cells, MODES, {job.name: read_curve(job, MODES) for job in jobs})
    ax = fig.axes[0]
    assert len(ax.containers) == 2  # one error bar per cell, no band
    assert not [c for c in ax.collections if type(c).__name__ == "FillBetweenPolyCollection"]
    for container, arm in zip(ax.containers, ["b", "a"], strict=True):  # best cell first
        (segment,) = container.lines[2][0].get_segments()
        low, high = sorted(segment[:, 1])
        expected = t_interval(arms[arm])
        assert low == pytest.approx(max(expected[0], 0.0)) and high == pytest.approx(expected[1])
    assert all(text.get_fontsize() >= 9 for text in ax.get_legend().get_texts())


def test_each_cell_shows_its_first_seeds_last_samples(tmp_path: Path) -> None:
    write_arms(tmp_path, {"a": [1.0, 1.1, 0.9], "b": [2.0, 2.1, 1.9]})  # jobs 0-2: a, 3-5: b
    for num in range(6):
        samples = tmp_path / str(num) / "samples"
        samples.mkdir()
        for step in (3, 10):  # by step number, not by name: step 10 is the last
            Image.new("L", (8, 8), color=num).save(samples / f"step_{step}.png")
    summary = summarize(tmp_path)
    assert summary.samples == [
        ("loss=a", tmp_path / "0" / "samples" / "step_10.png"),
        ("loss=b", tmp_path / "3" / "samples" / "step_10.png"),
    ]
    table = markdown_rows(tmp_path / "summary.md", first="cell")
    assert table == [
        {"cell": "loss=a", "samples": "![loss=a](0/samples/step_10.png)"},
        {"cell": "loss=b", "samples": "![loss=b](3/samples/step_10.png)"},
    ]
    SweepSummary().on_multirun_end(offline_sweep_config(tmp_path))
    logged = load_run(tmp_path)
    looks = logged.history[0]["cell_samples"]
    assert looks["_type"] == "table-file" and looks["nrows"] == 2
    assert logged.config["sweep"] == tmp_path.name  # no machine folder in what is shared
