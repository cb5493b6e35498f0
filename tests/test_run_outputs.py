"""What a run gives its user besides the weights: the W&B pieces a GAN researcher reads
(histograms of D's outputs, sample tables, checkpoint artifacts, gradients), the report a run
ends with, the resolved config, and the debug presets overfit and profile."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import smoke_config, smoke_run
from PIL import Image

from ganexp.tracking.runfile import RunFile, load_run

pytestmark = pytest.mark.slow  # real trainings, each several seconds

GANEXP = str(Path(sys.executable).with_name("ganexp"))
OFFLINE = ("logger=wandb", "logger.mode=offline")


def artifacts(run: RunFile) -> list:
    return [r.artifact for r in run.records if r.WhichOneof("record_type") == "artifact"]


@pytest.fixture(scope="module")
def cgan_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cGAN smoke run with every W&B extra switched on, logging offline."""
    run_dir = tmp_path_factory.mktemp("cgan")
    smoke_run(
        run_dir,
        *OFFLINE,
        "conditional=true",
        "logger.watch=true",
        "logger.log_checkpoints=always",
        "trainer.log_every=1",
    )
    return run_dir


def test_histograms_of_d_outputs_on_real_and_fake_at_every_logging_step(cgan_run: Path) -> None:
    run = load_run(cgan_run)
    batch = smoke_config("conditional=true")[0].trainer.batch_size
    rows = [r for r in run.history if "hist/d_real" in r]
    assert [r["step"] for r in rows] == list(range(1, 7))
    for row in rows:
        for key in ("hist/d_real", "hist/d_fake"):
            histogram = row[key]
            assert histogram["_type"] == "histogram"
            # BCE: probabilities, one per example of the batch, binned between 0 and 1
            assert sum(histogram["values"]) == batch
            assert histogram["bins"][0] >= 0 and histogram["bins"][-1] <= 1


def test_a_table_of_samples_per_class_at_each_evaluation(cgan_run: Path) -> None:
    run = load_run(cgan_run)
    tables = [r for r in run.history if "samples_table" in r]
    assert [r["step"] for r in tables] == [6]  # eval_every=0: the last step
    table = tables[0]["samples_table"]
    assert table["_type"] == "table-file"
    assert table["ncols"] == 3 and table["nrows"] == 60  # 64 rounded to 6 per class x 10
    content = json.loads((run.files_dir / table["path"]).read_text())
    assert content["columns"] == ["step", "class", "sample"]
    names = [row[1] for row in content["data"]]
    assert names[:6] == ["T-shirt/top"] * 6 and names[-1] == "Ankle boot"
    # the images travel in the table's run_table artifact, one file each
    stored = [a for a in artifacts(run) if a.type == "run_table"]
    assert len(stored) == 1
    images = [e.path for e in stored[0].manifest.contents if e.path.endswith(".png")]
    assert len(images) == 60


def test_real_images_are_shown_once_beside_the_fake_grids(cgan_run: Path) -> None:
    run = load_run(cgan_run)
    real = [r for r in run.history if "samples_real" in r]
    fake = [r for r in run.history if "samples" in r]
    assert [r["step"] for r in real] == [fake[0]["step"]] == [3]  # once, with the first grid
    assert real[0]["samples_real"]["_type"] == "image-file"
    assert [m.step_metric for m in run.metrics if "samples_real" in (m.name, m.glob_name)] == [
        "step"
    ]
    grid = Image.open(cgan_run / "samples" / "real.png")
    assert grid.size == Image.open(cgan_run / "samples" / "step_000003.png").size
    assert len(set(np.asarray(grid).ravel().tolist())) > 2  # images, not a blank grid


def test_checkpoints_become_model_artifacts_with_latest_and_best(cgan_run: Path) -> None:
    run = load_run(cgan_run)
    logged = artifacts(run)
    assert {a.type for a in logged} >= {"model"}
    models = [a for a in logged if a.type == "model"]
    assert {a.name for a in models} == {f"model-{run.run.run_id}"}
    aliases = [set(a.aliases) for a in models]
    assert {"latest", "step-3"} in aliases and {"latest", "step-6"} in aliases
    assert any({"best", "step-6"} <= versions for versions in aliases)
    files = {e.path for a in models for e in a.manifest.contents}
    assert files == {"last.pt", "best.pt"}


def test_watch_logs_both_networks_gradients(cgan_run: Path) -> None:
    keys = {k for row in load_run(cgan_run).history for k in row}
    assert any(k.startswith("gradients/") and "fc" not in k for k in keys)
    assert {k.split("/")[1].split(".")[0] for k in keys if k.startswith("gradients/")} >= {"net"}


def test_an_offline_run_keeps_checkpoints_as_files_only_by_default(tmp_path: Path) -> None:
    smoke_run(tmp_path, *OFFLINE, "metrics.enabled=false")
    run = load_run(tmp_path)
    assert not [a for a in artifacts(run) if a.type == "model"]
    assert not any(k.startswith("gradients/") for row in run.history for k in row)
    assert (tmp_path / "checkpoints" / "last.pt").is_file()


def test_a_run_ends_with_its_report_and_starts_with_its_resolved_config(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [GANEXP, "experiment=smoke", *OFFLINE, f"hydra.run.dir={run_dir}"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = result.stderr[result.stderr.index("ganexp: done:") :].splitlines()
    assert report[0].startswith("ganexp: done: 6 steps in ")
    assert report[1] == f"  samples      {run_dir}/samples/ (last: step_000006.png)"
    assert report[2] == (
        f"  checkpoints  {run_dir}/checkpoints/ (best.pt, last.pt, step_000003.pt, step_000006.pt)"
    )
    assert report[3] == f"  metrics      {run_dir}/metrics.jsonl"
    record = json.loads((run_dir / "job.json").read_text())
    final = record["final"]
    assert report[4] == (
        f"  eval/fd_classifier  final {final['eval/fd_classifier']:.4g}, "
        f"best {record['best']['value']:.4g} at step 6, "
        f"floor {final['eval/fd_classifier_floor']:.4g} (real data, scored as the samples are)"
    )
    offline = next((run_dir / "wandb").glob("offline-run-*"))
    assert report[5] == f"  W&B          offline; upload with: wandb sync {offline}"
    assert len(report) == 6

    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["trainer"]["max_steps"] == 6 and saved["data"]["cache_dir"] != "${oc.env:"
    assert "${" not in (run_dir / "config.yaml").read_text()  # resolved
    printed = result.stdout[result.stdout.index("# ganexp: resolved config") :]
    assert yaml.safe_load(printed) == saved
    assert result.stdout.count("# ganexp: resolved config") == 1


def test_debug_overfit_drives_d_loss_down_on_one_fixed_batch(tmp_path: Path) -> None:
    smoke_run(tmp_path, "debug=overfit", "trainer.max_steps=60", "trainer.log_every=10")
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    d_losses = [r["loss/d"] for r in rows if "loss/d" in r]
    assert len(d_losses) == 6
    assert d_losses[-1] < 0.5 * d_losses[0]


def test_debug_profile_writes_a_chrome_trace_of_the_recorded_steps(tmp_path: Path) -> None:
    smoke_run(tmp_path, "debug=profile")
    traces = list((tmp_path / "profile").glob("*.pt.trace.json"))
    assert len(traces) == 1
    events = json.loads(traces[0].read_text())["traceEvents"]
    steps = {e["name"] for e in events if e.get("name", "").startswith("ProfilerStep#")}
    assert steps == {"ProfilerStep#2", "ProfilerStep#3", "ProfilerStep#4"}
    assert any("convolution" in e.get("name", "") for e in events)


def test_histograms_of_d_outputs_that_barely_differ_are_logged(tmp_path: Path) -> None:
    """float32 outputs a few ulps apart (a D right after initialization can give them) cannot
    be split into 64 float32 bins; the histogram is still logged, with every value in it."""
    import torch

    from ganexp.config import LoggerConfig
    from ganexp.tracking.logger import Tracker

    close = torch.full((24,), 0.3) + torch.arange(24) * 3e-8  # a range of a few float32 ulps
    logger = LoggerConfig(mode="offline")
    tracker = Tracker(tmp_path, logger, {}, name="hist", group=None, tags=[])
    tracker.log_histograms(1, {"hist/d_real": close})
    tracker.finish()
    (row,) = [r for r in load_run(tmp_path).history if "hist/d_real" in r]
    assert sum(row["hist/d_real"]["values"]) == 24
