"""What a W&B server would show for a run, read back from its offline run file: each chart's
x-axis and each column of the runs table (the metric definitions and the summary), and the
same through ``ganexp-inspect``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from commands import run_command
from helpers import smoke_run

from ganexp.cli.inspect import describe
from ganexp.cli.inspect import main as inspect_main
from ganexp.engine.checkpoint import load_checkpoint
from ganexp.keys import maximize
from ganexp.session.run import RunResult, report
from ganexp.tracking.runfile import RunFile, load_run

TOY = ("data=ring8", "generator=mlp", "discriminator=mlp", "norm=none")


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunResult, RunFile]:
    """A toy smoke run, W&B offline, evaluated at steps 2, 4, 6: modes recovered (higher is
    better, its headline) and the reverse KL divergence (lower is better)."""
    run_dir = tmp_path_factory.mktemp("toy")
    result = smoke_run(
        run_dir,
        *TOY,
        "logger=wandb",
        "logger.mode=offline",
        "trainer.eval_every=2",
        "metrics.num_samples=200",
    )
    return run_dir, result, load_run(run_dir)


def definition(run: RunFile, key: str):
    """The define_metric that governs ``key``: its own, else the first glob that matches."""
    own = [m for m in run.metrics if m.name == key]
    globs = [m for m in run.metrics if m.glob_name and key.startswith(m.glob_name.rstrip("*"))]
    found = own or globs
    return found[0] if found else None


def test_every_chart_has_step_as_its_x_axis(toy_run) -> None:
    _, _, run = toy_run
    logged = {k for row in run.history for k in row if not k.startswith("_") and k != "step"}
    assert {"loss/d", "eval/modes_recovered", "lr/g", "lr/d"} <= logged
    for key in logged:
        found = definition(run, key)
        assert found is not None and found.step_metric == "step", key


def test_each_eval_summary_follows_its_direction(toy_run) -> None:
    _, _, run = toy_run
    evals = {k for row in run.history for k in row if k.startswith("eval/")}
    assert "eval/modes_recovered" in evals and "eval/reverse_kl" in evals
    for key in evals:
        summary = definition(run, key).summary
        assert summary.last, key
        assert (summary.max, summary.min) == ((True, False) if maximize(key) else (False, True))
    assert maximize("eval/modes_recovered") and not maximize("eval/reverse_kl")


def test_the_summary_holds_the_best_headline_and_its_step(toy_run) -> None:
    run_dir, result, run = toy_run
    best = load_checkpoint(run_dir / "checkpoints" / "last.pt")["best"]
    assert best == result.best and best["key"] == "eval/modes_recovered"
    assert run.summary["best/modes_recovered"] == best["value"]
    assert run.summary["best/step"] == best["step"]
    # the runs table's columns, as W&B computed them from the definitions: the best each way
    assert run.summary["eval/modes_recovered"]["max"] == best["value"]
    kl = [row["eval/reverse_kl"] for row in run.history if "eval/reverse_kl" in row]
    assert run.summary["eval/reverse_kl"]["min"] == pytest.approx(min(kl))
    assert "min" not in run.summary["eval/modes_recovered"]
    values = [row["eval/modes_recovered"] for row in run.history if "eval/modes_recovered" in row]
    assert best["value"] == max(values)


def test_inspect_shows_what_the_run_file_holds(toy_run, capsys: pytest.CaptureFixture) -> None:
    run_dir, _, run = toy_run
    inspect_main([str(run_dir), "json=true"])
    data = json.loads(capsys.readouterr().out)
    assert data == json.loads(json.dumps(describe(run), default=str))
    assert data["keys"]["eval/modes_recovered"]["rows"] == 3
    assert (data["keys"]["eval/modes_recovered"]["first_step"], data["keys"]["loss/d"]["rows"]) == (
        2,
        len([row for row in run.history if "loss/d" in row]),
    )
    assert data["metrics"]["eval/modes_recovered"] == {
        "step_metric": "step",
        "summary": ["max", "last"],
    }
    assert data["keys"]["samples"]["media"] == "image-file"
    assert data["exit_code"] == 0
    inspect_main([str(run_dir)])
    text = capsys.readouterr().out
    line = next(x for x in text.splitlines() if x.startswith("eval/modes_recovered "))
    assert line.split()[1:] == ["3", "2..6", "step", "/", "max,last"]
    assert "best/modes_recovered" in text


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "RUN=None: name one run folder or run file"),
        (["nowhere"], "RUN='nowhere': no such file or folder"),
        (["."], "RUN='.': holds no W&B run file"),
        (["x", "depth=2"], "depth='2': not a ganexp-inspect key; allowed: json"),
    ],
)
@pytest.mark.slow  # ganexp-inspect commands
def test_inspect_refuses_in_one_line(args: list[str], expected: str, tmp_path: Path) -> None:
    result = run_command("ganexp-inspect", *args, cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"ganexp-inspect: error: {expected}")


def test_the_report_calls_a_higher_is_better_reference_a_ceiling(toy_run) -> None:
    run_dir, result, _ = toy_run
    line = next(x for x in report(result, run_dir, 1.0).splitlines() if "eval/modes" in x)
    ceiling = result.final["eval/modes_recovered_floor"]
    assert line.endswith(f", ceiling {ceiling:.4g} (real data, scored as the samples are)")
    assert "floor" not in line
