"""Evaluation in a run, best.pt, and the ganexp-eval / ganexp-sample commands on real files."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from commands import run_command
from helpers import smoke_run
from PIL import Image

from ganexp.cli.evaluate import main as evaluate_main
from ganexp.cli.restore import restore
from ganexp.cli.sample import main as sample_main
from ganexp.engine.checkpoint import load_checkpoint
from ganexp.errors import ConfigError
from ganexp.metrics.evaluator import ImageEvaluator

BIN = Path(sys.executable).parent
IMAGE_KEYS = {
    "eval/fd_classifier",
    "eval/is_classifier",
    "eval/kid_classifier",
    "eval/precision_classifier",
    "eval/recall_classifier",
    "eval/density_classifier",
    "eval/coverage_classifier",
    "eval/class_kl",
    "eval/classes_covered",
    "eval/fd_classifier_floor",
    "eval/kid_classifier_floor",
}


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("evaluated")
    smoke_run(run_dir, "trainer.eval_every=3", "metrics.num_samples=100")
    return run_dir


@pytest.mark.slow
def test_run_logs_every_metric_on_its_interval_and_never_fid_on_cpu(evaluated_run: Path) -> None:
    rows = [json.loads(line) for line in (evaluated_run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
    assert [r["step"] for r in evals] == [3, 6]
    for row in evals:
        assert set(row) == IMAGE_KEYS | {"step"}
        assert row["eval/fd_classifier"] > row["eval/fd_classifier_floor"] > 0
        assert 0 <= row["eval/coverage_classifier"] <= 1
        assert 1 <= row["eval/classes_covered"] <= 10
    assert not any("eval/fid" in r for r in rows)


@pytest.mark.slow
def test_best_checkpoint_holds_the_best_headline_value(evaluated_run: Path) -> None:
    rows = [json.loads(line) for line in (evaluated_run / "metrics.jsonl").read_text().splitlines()]
    values = {r["step"]: r["eval/fd_classifier"] for r in rows if "eval/fd_classifier" in r}
    best_step = min(values, key=values.get)
    best = load_checkpoint(evaluated_run / "checkpoints" / "best.pt")
    assert best["step"] == best_step
    assert best["best"] == {
        "key": "eval/fd_classifier",
        "value": values[best_step],
        "step": best_step,
    }
    assert best["eval_setup"]["features"] == "classifier"
    assert len(best["eval_setup"]["features_sha256"]) == 64
    last = load_checkpoint(evaluated_run / "checkpoints" / "last.pt")
    assert last["best"]["value"] == values[best_step]


@pytest.mark.slow
def test_ganexp_eval_prints_and_writes_all_metrics(evaluated_run: Path) -> None:
    checkpoint = evaluated_run / "checkpoints" / "last.pt"
    result = run_command(
        "ganexp-eval", f"checkpoint={evaluated_run}", "metrics.num_samples=100", timeout=300
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report["metrics"]) == IMAGE_KEYS
    assert report["step"] == 6
    assert json.loads(checkpoint.with_suffix(".metrics.json").read_text()) == report
    rows = [json.loads(line) for line in (evaluated_run / "metrics.jsonl").read_text().splitlines()]
    final = next(r for r in reversed(rows) if "eval/fd_classifier" in r)
    # same generator, same fixed evaluation noise, same cached reference: the same number
    assert report["metrics"]["eval/fd_classifier"] == pytest.approx(final["eval/fd_classifier"])


@pytest.mark.slow
def test_ganexp_eval_of_every_checkpoint_gives_the_curve_the_run_logged(
    evaluated_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    evaluate_main(
        [f"checkpoint={evaluated_run}", "all=true", "metrics.num_samples=100", f"out={tmp_path}"]
    )
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    logged = [
        json.loads(line) for line in (evaluated_run / "metrics.jsonl").read_text().splitlines()
    ]
    logged = {row["step"]: row for row in logged if "eval/fd_classifier" in row}
    assert [row["step"] for row in printed] == sorted(logged) == [3, 6]  # best.pt is one of them
    for row in printed:
        assert set(row) == IMAGE_KEYS | {"checkpoint", "step"}
        # the same generator, fixed evaluation noise and cached reference as during training
        assert row["eval/fd_classifier"] == pytest.approx(logged[row["step"]]["eval/fd_classifier"])
    with open(tmp_path / "eval_all.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [int(r["step"]) for r in table] == [3, 6]
    assert [float(r["eval/fd_classifier"]) for r in table] == [
        r["eval/fd_classifier"] for r in printed
    ]
    assert Image.open(tmp_path / "eval_all.png").size == (900, 500)


@pytest.mark.slow
def test_ganexp_eval_all_of_a_sweep_gives_a_curve_per_run(
    evaluated_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    sweep = tmp_path / "sweep"
    for job in ("0", "1"):  # two jobs of a sweep, as Hydra leaves them (copies of one run)
        shutil.copytree(evaluated_run, sweep / job)
        (sweep / job / ".hydra").mkdir()
    evaluate_main([f"checkpoint={sweep}", "all=true", "metrics.num_samples=100"])
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(row["run"], row["step"]) for row in printed] == [
        ("0", 3),
        ("0", 6),
        ("1", 3),
        ("1", 6),
    ]
    assert printed[0]["eval/fd_classifier"] == pytest.approx(printed[2]["eval/fd_classifier"])
    with open(sweep / "eval_all.csv", newline="") as f:
        assert [r["run"] for r in csv.DictReader(f)] == ["0", "0", "1", "1"]
    assert (sweep / "eval_all.png").is_file()


@pytest.mark.slow
def test_a_folder_of_a_checkpoints_images_scores_as_the_checkpoint_does(
    evaluated_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The images the checkpoint's evaluation scores, written as PNGs (lossless), then scored
    as a folder against the same data: every metric and floor equal."""
    restored = restore(evaluated_run, ["metrics.num_samples=100"])
    cfg = replace(restored.cfg, metrics=replace(restored.cfg.metrics, enabled=True))
    evaluator = ImageEvaluator(cfg, restored.spec, restored.device)
    batches = list(evaluator._generated(restored.generator))
    expected = {f"eval/{k}": v for k, v in evaluator.score(batches).items()}
    folder = tmp_path / "generated"
    folder.mkdir()
    for i, image in enumerate(torch.cat(batches)):
        Image.fromarray(image.squeeze(0).numpy()).save(folder / f"{i:05d}.png")
    evaluate_main([f"fake={folder}", "real=fashion_mnist", "data.limit=256"])  # smoke's data
    report = json.loads(capsys.readouterr().out)
    assert report["metrics"].keys() == expected.keys() == IMAGE_KEYS
    assert report["metrics"] == pytest.approx(expected, rel=1e-6)
    assert report["setup"]["num_fake"] == 100
    assert json.loads((tmp_path / "generated.metrics.json").read_text()) == report


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["real=fashion_mnist"], "fake=None: required: fake=DIR (images) and real=NAME|DIR"),
        (["fake=nowhere", "real=fashion_mnist"], "fake='nowhere': must be a folder of images"),
        (["fake=empty", "real=fashion_mnist"], "fake='empty': holds no image files (.png, .jpg"),
        (["fake=.", "real=ring8"], "real='ring8': must be images"),
        (["fake=few", "real=fashion_mnist"], "fake='few': holds 2 images; the metrics need"),
        (["fake=.", "real=fashion_mnist", "checkpoint=x"], "fake='.': evaluates a folder"),
    ],
)
def test_a_folder_evaluation_refuses_in_one_line(
    args: list[str], expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "few").mkdir()
    (tmp_path / "empty").mkdir()
    for i in range(2):
        Image.new("L", (32, 32)).save(tmp_path / "few" / f"{i}.png")
    with pytest.raises(ConfigError) as error:
        evaluate_main(args)
    assert str(error.value).startswith(expected)


def test_ganexp_eval_all_needs_a_run_folder_and_a_boolean(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="all=true needs a run folder with checkpoints"):
        evaluate_main([f"checkpoint={tmp_path}", "all=true"])
    with pytest.raises(ConfigError, match="all='yes': allowed: true, false"):
        evaluate_main([f"checkpoint={tmp_path}", "all=yes"])


@pytest.mark.slow
def test_ganexp_eval_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    for args, expected in [
        ([], "ganexp-eval: error: checkpoint=None: required"),
        ([f"checkpoint={tmp_path}/none.pt"], "no such checkpoint file"),
    ]:
        result = run_command("ganexp-eval", *args, timeout=120)
        assert result.returncode == 2
        assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_ganexp_sample_grid_images_and_interpolation(evaluated_run: Path, tmp_path: Path) -> None:
    """The command once for each of its outcomes (a grid; a refusal); the other modes through
    its main() in this process (the same code, less a Python start each)."""
    common = [f"checkpoint={evaluated_run}", f"out={tmp_path}"]
    made = run_command("ganexp-sample", *common, "n=16", timeout=120)
    assert made.returncode == 0, made.stderr
    grid = Image.open(tmp_path / "grid_seed0.png")
    assert grid.size == (4 * 34 + 2, 4 * 34 + 2)
    sample_main([*common, "mode=images", "n=3"])
    singles = sorted(tmp_path.glob("seed0_*.png"))
    assert [Image.open(p).size for p in singles] == [(32, 32)] * 3
    sample_main([*common, "mode=interpolate", "n=5"])
    strip = Image.open(tmp_path / "interpolate_0_1.png")
    assert strip.size == (5 * 34 + 2, 34 + 2)
    bad = run_command("ganexp-sample", *common, "label=2", timeout=120)
    assert bad.returncode == 2 and "not conditional" in bad.stderr


def test_toy_run_keeps_best_by_modes_recovered(tmp_path: Path) -> None:
    result = smoke_run(
        tmp_path,
        "data=ring8",
        "generator=mlp",
        "discriminator=mlp",
        "trainer.eval_every=2",
        "metrics.num_samples=500",
    )
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [row for row in rows if "eval/modes_recovered" in row]
    assert [row["step"] for row in evals] == [2, 4, 6]
    assert result.best["key"] == "eval/modes_recovered"
    assert result.best["value"] == max(row["eval/modes_recovered"] for row in evals)
    for key in ("modes_covered", "high_quality", "reverse_kl"):  # PacGAN's, still logged
        assert f"eval/{key}" in evals[0]
    assert evals[0]["eval/modes_recovered_floor"] == evals[0]["eval/modes_covered_floor"] == 8
