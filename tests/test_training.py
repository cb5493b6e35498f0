"""Real short trainings, in-process and through the `ganexp` command, read back from disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import compose_config
from PIL import Image

from ganexp.engine.checkpoint import load_checkpoint
from ganexp.session.preflight import plan_job
from ganexp.session.run import run
from ganexp.tracking.runfile import image_keys, load_run

SCALARS = {"loss/d", "loss/g", "d/real", "d/fake", "grad_norm/g", "grad_norm/d", "lr/g", "lr/d"}
SCALARS |= {"perf/img_per_s"}


def train(run_dir: Path, *overrides: str) -> dict[str, float]:
    """An in-process run of `ganexp OVERRIDES` in run_dir."""
    cfg = compose_config("experiment=smoke", "logger.mode=offline", *overrides)
    return run(plan_job(cfg, run_dir), run_dir, name="test", group="tests")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def scalar_rows(path: Path) -> list[dict]:
    """The training-statistics lines of a metrics.jsonl (not the evaluation ones)."""
    return [row for row in read_jsonl(path) if "loss/d" in row]


@pytest.fixture(scope="module")
def fashion_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("fashion")
    train(run_dir)
    return run_dir


@pytest.mark.slow
def test_run_folder_holds_grids_checkpoint_and_metrics(fashion_run: Path) -> None:
    assert sorted(p.name for p in (fashion_run / "samples").iterdir()) == [
        "real.png",  # the real images the grids are read against, once
        "step_000003.png",
        "step_000006.png",
    ]
    grid = Image.open(fashion_run / "samples" / "step_000006.png")
    assert grid.size == (8 * 34 + 2, 8 * 34 + 2)  # 64 fixed samples, 32 px + 2 px padding
    state = load_checkpoint(fashion_run / "checkpoints" / "last.pt")
    assert state["step"] == 6
    assert state["wandb_id"]
    rows = scalar_rows(fashion_run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [2, 4, 6]
    evals = [r for r in read_jsonl(fashion_run / "metrics.jsonl") if "loss/d" not in r]
    assert [r["step"] for r in evals] == [6] and "eval/fd_classifier" in evals[0]
    for row in rows:
        assert set(row) == SCALARS | {"step"}
        assert all(isinstance(v, float | int) for v in row.values())
    assert 0 < rows[-1]["d/real"] < 1 and 0 < rows[-1]["d/fake"] < 1  # BCE: probabilities
    assert rows[-1]["lr/g"] == pytest.approx(2e-4)


@pytest.mark.slow
def test_wandb_run_file_holds_keys_config_and_grids(fashion_run: Path) -> None:
    wb = load_run(fashion_run)
    assert wb.run.run_group == "tests" and wb.run.display_name == "test"
    assert {"norm.g=batch", "norm.d=batch", "loss=bce", "G=dcgan", "data=fashion_mnist"} <= set(
        wb.run.tags
    )
    assert wb.config["loss"]["name"] == "bce"
    assert wb.config["data"]["limit"] == 256
    assert wb.config["trainer"]["max_steps"] == 6
    logged_rows = [r for r in wb.history if "loss/d" in r]
    jsonl = scalar_rows(fashion_run / "metrics.jsonl")
    assert [r["step"] for r in logged_rows] == [r["step"] for r in jsonl]
    for logged, written in zip(logged_rows, jsonl, strict=True):
        for key in SCALARS:
            assert logged[key] == pytest.approx(written[key])
    image_rows = [r for r in wb.history if "samples" in image_keys([r])]
    assert [r["step"] for r in image_rows] == [3, 6]
    for row in image_rows:
        assert (wb.files_dir / row["samples"]["path"]).is_file()
    assert {m.glob_name for m in wb.metrics if m.glob_name} >= {"loss/*", "lr/*"}
    assert {m.name for m in wb.metrics if m.name.startswith("eval/")} >= {"eval/fd_classifier"}
    final_eval = read_jsonl(fashion_run / "metrics.jsonl")[-1]
    assert wb.summary["eval/fd_classifier"]["min"] == pytest.approx(
        final_eval["eval/fd_classifier"]
    )
    assert wb.config["eval"]["features"] == "classifier"
    assert wb.exit_code == 0


def test_fixed_noise_makes_identical_grids_for_an_untrained_generator(tmp_path: Path) -> None:
    """Same noise every grid: with learning rates ~0 two grids of a run are the same picture."""
    train(tmp_path, "optim.lr_g=1e-12", "optim.lr_d=1e-12", "norm=none", "logger=none")
    first, last = (tmp_path / "samples" / f"step_00000{s}.png" for s in (3, 6))
    assert first.read_bytes() == last.read_bytes()


@pytest.mark.slow
def test_wgan_gp_on_a_toy_mixture_logs_penalty_wasserstein_and_modes(tmp_path: Path) -> None:
    train(
        tmp_path,
        "data=ring8",
        "generator=mlp",
        "discriminator=mlp",
        "norm=layer",
        "loss=wgan_gp",
        "logger=none",
    )
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    scalars = [r for r in rows if "loss/d" in r]
    assert {"loss/gp", "wasserstein"} <= set(scalars[-1])
    assert scalars[-1]["wasserstein"] == pytest.approx(-scalars[-1]["loss/d"])
    assert scalars[-1]["loss/gp"] >= 0
    evals = [r for r in rows if "eval/modes_covered" in r]
    assert [r["step"] for r in evals] == [6]
    assert 0 <= evals[0]["eval/modes_covered"] <= 8
    assert (tmp_path / "samples" / "step_000006.png").is_file()
    assert not (tmp_path / "wandb").exists()


@pytest.mark.slow
def test_weight_clipping_run_keeps_critic_weights_clipped(tmp_path: Path) -> None:
    train(tmp_path, "loss=wgan_clip", "norm=none", "logger=none")
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    weights = torch.cat([v.flatten() for v in state["discriminator"].values()])
    assert weights.abs().max() <= 0.01 + 1e-7


@pytest.mark.slow
def test_conditional_grid_has_one_row_per_class(tmp_path: Path) -> None:
    train(tmp_path, "conditional=true", "logger=none")
    grid = Image.open(tmp_path / "samples" / "step_000006.png")
    per_class = 64 // 10
    assert grid.size == (per_class * 34 + 2, 10 * 34 + 2)
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["fixed"]["labels"].tolist() == [c for c in range(10) for _ in range(per_class)]


@pytest.mark.slow
def test_same_command_in_the_same_folder_resumes(tmp_path: Path) -> None:
    train(tmp_path, "logger=none")
    train(tmp_path, "logger=none", "trainer.max_steps=8")
    steps = [r["step"] for r in scalar_rows(tmp_path / "metrics.jsonl")]
    assert steps == [2, 4, 6, 8]
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 8


def _ganexp(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    ganexp = Path(sys.executable).with_name("ganexp")
    return subprocess.run(
        [str(ganexp), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_ganexp_command_runs_the_smoke_preset(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = _ganexp(
        "experiment=smoke",
        "loss=wgan_gp",
        f"hydra.run.dir={out}",
        "logger.mode=offline",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == f"ganexp: device=auto -> cpu ({torch.get_num_threads()} threads)"
    assert any("warning: batch norm in a WGAN-GP critic" in line for line in lines)
    offline = next((out / "wandb").glob("offline-run-*"))
    assert lines[-1] == f"  W&B          offline; upload with: wandb sync {offline}"
    assert (out / ".hydra" / "config.yaml").is_file()
    assert (out / "checkpoints" / "last.pt").is_file()
    assert (out / "samples" / "step_000006.png").is_file()
    wb = load_run(out)
    assert "bn-critic-gp" in wb.run.tags
    assert wb.run.display_name == "experiment=smoke,loss=wgan_gp,logger.mode=offline"
    assert "loss/gp" in wb.history[-1] or any("loss/gp" in r for r in wb.history)


def test_python_dash_m_refuses_bad_input_with_one_line_and_no_run_folder(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ganexp", "norm=batchy", "trainer.max_steps=1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "ganexp: error: norm='batchy': allowed: batch, group, instance, layer, none, spectral, "
        "virtual_batch"
    )
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []
