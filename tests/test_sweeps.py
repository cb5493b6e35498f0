"""Sweeps end to end: presets, the sweep summary, launchers (basic, joblib, submitit), requeue,
Optuna and the SLURM preset, all on the CPU with W&B offline."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from itertools import product
from pathlib import Path

import pytest
import yaml
from commands import run_command
from helpers import compose_config
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

import ganexp
from ganexp.cli.help import presets
from ganexp.config import validate
from ganexp.keys import maximize
from ganexp.session.preflight import flags_first, job_overrides
from ganexp.session.sweep import MISSING_RECORD, SweepSummary, read_curve, summarize
from ganexp.tasks import check as check_task
from ganexp.tracking.runfile import image_keys, load_run

GANEXP = str(Path(sys.executable).with_name("ganexp"))
EXPERIMENTS = Path(ganexp.__file__).parent / "conf" / "experiment"
SWEEP_PRESETS = {
    "norm_study": 24,
    "mode_collapse": 15,
    "pacgan_ring": 4,  # x 10 replicas
    "pacgan_grid": 4,
    "pacgan_ring_short": 15,
    "pacgan_grid_short": 15,
    "ssl_fashion_mnist": 5,
    "pix2pix_fashion_edges": 10,
    "cyclegan_fashion_sneaker_boot": 5,
    "dirac_gan": 120,
    "unrolled_ring": 10,
    "wgan_toy": 27,
    "wgan_toy_short": 27,
}
TINY = ("debug=smoke", "trainer.max_steps=2", "trainer.log_every=1")
TOY = ("data=ring8", "generator=mlp", "discriminator=mlp", "norm=none")


def ganexp_cmd(*args: str, cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess[str]:
    """The command `ganexp ARGS` (tests/commands.py: forked from a process that did its imports);
    one torch thread per process (the machine is shared)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    return run_command("ganexp", *args, cwd=cwd, env=env, timeout=timeout)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def markdown_rows(path: Path, first: str = "job") -> list[dict[str, str]]:
    """The table of summary.md whose first column is ``first`` (jobs, or cells with "metric")
    as dicts, in file order."""
    text = path.read_text()
    start = text.index(f"| {first} |")
    lines = [line for line in text[start:].split("\n\n")[0].splitlines() if line.startswith("|")]

    def cells(line: str) -> list[str]:
        return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]

    header = cells(lines[0])
    return [dict(zip(header, cells(line), strict=True)) for line in lines[2:]]


def job(sweep: Path, num: int) -> dict:
    return json.loads((sweep / str(num) / "job.json").read_text())


def assert_png(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 100


@pytest.mark.slow
def test_norm_by_loss_sweep_gives_twelve_runs_one_group_and_a_summary(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = ganexp_cmd(
        "-m",
        "norm=batch,layer,instance,group",
        "loss=bce,wgan_clip,wgan_gp",
        *TINY,
        "logger.mode=offline",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.splitlines()[-1] == f"ganexp: sweep summary: {sweep}/summary.md (12 jobs)"
    done = [line for line in result.stderr.splitlines() if line.startswith("ganexp: done: ")]
    assert [line.rsplit(" (", 1)[1] for line in done] == [f"{sweep}/{i})" for i in range(12)]

    runs = [load_run(sweep / str(i)) for i in range(12)]
    assert {r.run.run_group for r in runs} == {f"sweep-{sweep.name}"}
    assert {r.run.job_type for r in runs} == {"train"}
    assert len({r.run.run_id for r in runs}) == 12
    assert len({r.run.display_name for r in runs}) == 12

    summary_run = load_run(sweep)  # sweep/wandb/offline-run-*: the summary's own run
    assert summary_run.run.job_type == "summary"
    assert summary_run.run.run_group == f"sweep-{sweep.name}"
    logged = summary_run.history[0]
    assert logged["summary"]["_type"] == "table-file" and logged["summary"]["nrows"] == 12
    assert {"curves", "heatmap"} <= image_keys(summary_run.history)

    key = job(sweep, 0)["best"]["key"]
    rows = read_csv(sweep / "summary.csv")
    assert [r["job"] for r in rows] == [str(i) for i in range(12)]
    assert {r["status"] for r in rows} == {"completed"}
    assert [(r["norm"], r["loss"]) for r in rows] == list(
        product(["batch", "layer", "instance", "group"], ["bce", "wgan_clip", "wgan_gp"])
    )
    for i, row in enumerate(rows):
        record = job(sweep, i)
        assert row["metric"] == key
        assert float(row["best"]) == pytest.approx(record["best"]["value"])
        assert float(row["final"]) == pytest.approx(record["final"][key])
        assert row["steps"] == "2"
        assert set(record["final"]) - {key} <= set(row)  # the other eval metrics are columns

    table = markdown_rows(sweep / "summary.md")
    assert len(table) == 12
    best = [float(r["best"]) for r in table]
    assert best == sorted(best, reverse=key.startswith(("eval/modes", "eval/high_quality")))
    assert_png(sweep / "curves.png")
    assert_png(sweep / "heatmap.png")

    cells = read_csv(sweep / "cells.csv")  # no seeds: one job per cell, ranked by final value
    assert len(cells) == 12 and {c["metric"] for c in cells} == {key}
    assert {(c["n"], c["sd"], c["ci_low"], c["vs_best_p"]) for c in cells} == {("1", "", "", "")}
    finals = [float(c["mean"]) for c in cells]
    assert finals == sorted(finals, reverse=maximize(key))
    assert {(c["norm"], c["loss"]) for c in cells} == {(r["norm"], r["loss"]) for r in rows}
    assert logged["cells"]["_type"] == "table-file" and logged["cells"]["nrows"] == 12
    assert summary_run.summary["verdict"].startswith("No verdict: the sweep ran with debug=smoke")


def preset_names() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS.glob("*.yaml"))


@pytest.mark.slow
def test_every_preset_composes_and_says_what_it_shows() -> None:
    names = preset_names()
    assert {"dcgan_fashion_mnist", "smoke", "wgan_gp_fashion_mnist", "cgan_fashion_mnist"} <= set(
        names
    )
    assert set(SWEEP_PRESETS) <= set(names)
    listed = presets()
    assert set(listed) == set(names)
    with initialize_config_module("ganexp.conf", version_base="1.3"):
        for name in names:
            lines = (EXPERIMENTS / f"{name}.yaml").read_text().splitlines()
            assert lines[0] == "# @package _global_", name
            assert lines[1].startswith("# ") and len(lines[1]) > 20, name
            cfg = compose("config", overrides=[f"experiment={name}"], return_hydra_config=True)
            params = cfg.hydra.sweeper.get("params") or {}
            jobs = job_overrides(
                [f"experiment={name}"], True, {k: str(v) for k, v in params.items()}
            )
            assert len(jobs) == SWEEP_PRESETS.get(name, 1), name
            assert listed[name][1] == len(jobs), name  # what ganexp --help says it runs
            # jobs that differ only in their seed compose alike: each other job once
            unseeded = {tuple(o for o in job if not o.startswith("seed=")) for job in jobs}
            for overrides in unseeded:
                check_task(validate(compose("config", overrides=list(overrides))))


@pytest.mark.slow
def test_every_preset_runs_a_job_in_smoke_mode(tmp_path: Path) -> None:
    """All presets as one sweep over `experiment` (a sweep preset runs as one job this way;
    its own sweep runs in the joblib test below, and is expanded in the test above)."""
    names = preset_names()
    sweep = tmp_path / "presets"
    result = ganexp_cmd(
        "-m",
        f"experiment={','.join(names)}",
        *TINY,
        "logger=none",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_csv(sweep / "summary.csv")
    replicas = {"pacgan_ring": 10, "pacgan_grid": 10}  # a row per replica
    assert [r["experiment"] for r in rows] == [n for n in names for _ in range(replicas.get(n, 1))]
    assert {r["status"] for r in rows} == {"completed"}
    assert {r["steps"] for r in rows} == {"2"}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["experiment=norm_study", "-m", "norm=batch"],
            ["-m", "experiment=norm_study", "norm=batch"],
        ),
        (
            ["norm=layer", "--cfg", "job", "-p", "norm"],
            ["--cfg", "job", "-p", "norm", "norm=layer"],
        ),
        (["a=1", "--info", "defaults", "b=2"], ["--info", "defaults", "a=1", "b=2"]),
        (["a=1", "--info", "b=2"], ["--info", "a=1", "b=2"]),
        (["--multirun", "seed=0,1"], ["--multirun", "seed=0,1"]),
    ],
)
def test_hydra_flags_go_first_wherever_they_are_typed(argv: list[str], expected: list[str]) -> None:
    assert flags_first(argv) == expected


def test_command_line_axes_replace_a_preset_s_sweep_axes() -> None:
    with initialize_config_module("ganexp.conf", version_base="1.3"):
        cfg = compose("config", overrides=["experiment=norm_study"], return_hydra_config=True)
    params = {k: str(v) for k, v in cfg.hydra.sweeper.params.items()}
    jobs = job_overrides(["experiment=norm_study", "norm.discriminator=spectral"], True, params)
    axes = [[o for o in j if o.startswith(("norm.discriminator=", "loss="))] for j in jobs]
    expected = [["norm.discriminator=spectral", f"loss={loss}"] for loss in ("bce", "wgan_gp")]
    assert axes == [pair for pair in expected for _seed in range(3)]


@pytest.mark.slow
def test_mode_collapse_runs_under_joblib_with_one_wandb_run_per_job(tmp_path: Path) -> None:
    """Three jobs on two loky workers (one worker runs two jobs): each job's folder complete
    and its own offline W&B run, all in one group, then the summary run."""
    sweep = tmp_path / "mc"
    result = ganexp_cmd(
        "experiment=mode_collapse",
        "-m",  # where users type it: after the preset
        "data=grid25",
        "seed=0",
        "hydra.launcher.n_jobs=2",
        *TINY,
        "logger.mode=offline",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2,backend=loky" in result.stdout
    runs = []
    for i, pack in enumerate([1, 2, 4]):
        folder = sweep / str(i)
        record = job(sweep, i)
        assert record["status"] == "completed" and record["steps"] == 2
        assert f"discriminator.pack={pack}" in record["overrides"]
        assert record["best"]["key"] == "eval/modes_recovered"
        for made in (".hydra/config.yaml", "metrics.jsonl", "checkpoints/last.pt"):
            assert (folder / made).is_file(), made
        assert (folder / "samples" / "step_000002.png").is_file()
        runs.append(load_run(folder))
    assert len({r.run.run_id for r in runs}) == 3
    assert {r.run.run_group for r in runs} == {f"mode_collapse-{sweep.name}"}
    assert all(r.exit_code == 0 and r.history for r in runs)
    assert [r.config["discriminator"]["pack"] for r in runs] == [1, 2, 4]
    assert {r.config["data"]["name"] for r in runs} == {"grid25"}
    assert load_run(sweep).run.job_type == "summary"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_image_folders(root: Path) -> tuple[Path, Path]:
    """Two class folders of small PNGs; a copy of them where one PNG cannot be decoded though
    its header and chunk checksums are whole (what the check before training cannot tell)."""
    good, bad = root / "good", root / "bad"
    for folder in (good, bad):
        for cls in ("a", "b"):
            (folder / cls).mkdir(parents=True)
            for i in range(4):
                Image.new("L", (8, 8), 40 * i).save(folder / cls / f"{i}.png")
    header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0))
    pixels = _png_chunk(b"IDAT", b"not zlib data")
    png = b"\x89PNG\r\n\x1a\n" + header + pixels + _png_chunk(b"IEND", b"")
    (bad / "b" / "2.png").write_bytes(png)
    return good, bad


@pytest.mark.slow
def test_a_failing_job_is_summarized_last_and_the_sweep_exits_non_zero(tmp_path: Path) -> None:
    """The broken image is found only when it is decoded (after preflight): that job fails,
    the other completes, summary.md ends with the failure's one-line error, exit code 1."""
    good, bad = write_image_folders(tmp_path)
    sweep = tmp_path / "sweep"
    result = ganexp_cmd(
        "-m",
        "data=image_folder",
        f"data.root={good},{bad}",
        "data.loader=dataloader",
        "data.channels=1",
        "data.image_size=32",
        *TINY,
        "trainer.batch_size=4",
        "metrics.enabled=false",
        "logger=none",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.splitlines()[-1].startswith(
        f"ganexp: sweep summary: {sweep}/summary.md (2 jobs, 1 failed)"
    )
    rows = read_csv(sweep / "summary.csv")
    assert [r["status"] for r in rows] == ["completed", "failed"]
    assert "cannot read as an image" in rows[1]["error"] and "2.png" in rows[1]["error"]
    assert "\n" not in rows[1]["error"]
    assert rows[0]["error"] == "" and rows[0]["steps"] == "2"
    table = markdown_rows(sweep / "summary.md")
    assert [r["status"] for r in table] == ["completed", "failed"]
    assert table[-1]["error"] == rows[1]["error"]
    assert_png(sweep / "curves.png")  # no eval metric: loss/g is plotted


def descendants(pid: int) -> list[int]:
    """The processes started (directly or not) by process ``pid``."""
    found = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return found
    for child in map(int, children):
        found += [child, *descendants(child)]
    return found


def process_writing(path: Path, among: list[int]) -> int | None:
    """The process (of ``among``) that holds ``path`` open."""
    for pid in among:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if Path(os.readlink(fd)) == path:
                    return pid
            except OSError:
                continue
    return None


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="finds the job process in /proc")
@pytest.mark.slow
def test_submitit_local_requeues_a_signalled_job_into_its_folder_and_it_resumes(
    tmp_path: Path,
) -> None:
    """Two jobs under submitit's local executor. Job 0 gets USR2 (what Slurm sends before the
    time limit) after its first checkpoint: submitit's handler asks the launcher to checkpoint,
    which resubmits the same job; it reruns in the same folder (the sweep dir, made with
    ${now:...} down to microseconds, is not recomputed) and continues from checkpoints/last.pt."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    args = [
        GANEXP,
        "-m",
        "hydra/launcher=submitit_local",
        *TOY,
        "generator.width=32",
        "discriminator.width=32",
        "seed=0,1",
        "trainer.max_steps=600",
        "trainer.checkpoint_every=10",
        "trainer.log_every=10",
        "trainer.sample_every=5000",
        "trainer.progress_bar=false",
        "logger.mode=offline",
        f"hydra.sweep.dir={tmp_path}/sweep-${{now:%H%M%S%f}}",
    ]
    with subprocess.Popen(
        args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        try:
            deadline = time.monotonic() + 120
            target = None
            while target is None and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
                ckpts = list(tmp_path.glob("sweep-*/0/checkpoints/last.pt"))
                if ckpts:
                    jsonl = ckpts[0].parent.parent / "metrics.jsonl"
                    target = process_writing(jsonl.resolve(), descendants(proc.pid))
            assert target is not None, "job 0 never checkpointed while running"
            os.kill(target, signal.SIGUSR2)
            output, _ = proc.communicate(timeout=150)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, output[-3000:]
    sweeps = list(tmp_path.glob("sweep-*"))
    assert len(sweeps) == 1, sweeps
    sweep = sweeps[0]
    assert sorted(p.name for p in sweep.iterdir() if p.name.isdigit()) == ["0", "1"]
    for i in (0, 1):
        assert job(sweep, i)["status"] == "completed" and job(sweep, i)["steps"] == 600
    logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    assert "Caught signal SIGUSR2" in logs
    assert f"resuming from {sweep}/0/checkpoints/last.pt at step" in logs
    assert f"resuming from {sweep}/1/" not in logs
    # the rerun continues job 0's W&B run (same id, a new offline folder holding the whole
    # history; the first set aside, see README "After a resume"); job 1 is apart
    segments = sorted((sweep / "0" / "wandb").glob("*offline-run-*"))
    assert [s.name.split("offline-run-")[0] for s in segments] == ["", "superseded-"]
    assert len({s.name.rsplit("-", 1)[1] for s in segments}) == 1
    other = load_run(sweep / "1")
    assert other.run.run_id != segments[0].name.rsplit("-", 1)[1]
    assert [r["status"] for r in read_csv(sweep / "summary.csv")] == ["completed", "completed"]


@pytest.mark.slow
def test_optuna_search_runs_trials_on_the_real_headline_metric(tmp_path: Path) -> None:
    sweep = tmp_path / "search"
    result = ganexp_cmd(
        "-m",
        "hparams_search=optuna_lr",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.direction=maximize",
        *TOY,
        *TINY,
        "metrics.num_samples=256",
        "logger=none",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(found["best_params"]) == {"optim.lr_g", "optim.lr_d", "trainer.n_critic"}
    values = [job(sweep, i)["best"]["value"] for i in (0, 1)]
    assert found["best_value"] == max(values)
    rows = read_csv(sweep / "summary.csv")
    assert len(rows) == 2 and {r["metric"] for r in rows} == {"eval/modes_recovered"}
    for row in rows:
        chosen = dict(o.split("=", 1) for o in row["overrides"].split())
        assert 1e-5 <= float(chosen["optim.lr_g"]) <= 1e-3
        assert 1e-5 <= float(chosen["optim.lr_d"]) <= 1e-3
        assert chosen["trainer.n_critic"] in {"1", "2", "5"}


def test_slurm_preset_becomes_a_valid_sbatch_script(tmp_path: Path, monkeypatch) -> None:
    """No cluster here: a stand-in `srun` lets submitit build its Slurm executor, and the
    array submission is caught to read the sbatch script the preset produces."""
    import submitit

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    scripts = []

    def capture(self, fn, *iterables):
        scripts.append(self._executor._make_submission_file_text("python -m job", "uid"))
        scripts.append(self._executor.max_num_timeout)
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", capture)
    with initialize_config_module("ganexp.conf", version_base="1.3"):
        cfg = compose(
            "config",
            overrides=["hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path}/sweep"],
            return_hydra_config=True,
        )
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=lambda c: None, config=cfg)
    assert launcher.launch([["seed=0"], ["seed=1"]], initial_job_idx=0) == []
    script, max_num_timeout = scripts
    for line in ("--time=120", "--gpus-per-node=1", "--cpus-per-task=8", "--mem=32GB"):
        assert f"#SBATCH {line}" in script, line
    assert "#SBATCH --signal=USR2@120" in script
    assert max_num_timeout == 3


def test_summary_of_hand_made_jobs_ranks_by_direction_and_counts_killed_jobs(
    tmp_path: Path,
) -> None:
    def make(num: int, record: dict | None, overrides: list[str]) -> None:
        folder = tmp_path / str(num)
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        if record is not None:
            (folder / "job.json").write_text(json.dumps({"overrides": overrides, **record}))

    def done(value: float) -> dict:
        best = {"key": "eval/fd_classifier", "value": value, "step": 4}
        return {"status": "completed", "steps": 4, "final": {best["key"]: value}, "best": best}

    make(0, done(30.0), ["loss=bce", "norm=batch"])
    make(1, done(10.0), ["loss=bce", "norm=layer"])
    make(2, None, ["loss=wgan_gp", "norm=batch"])  # killed before writing job.json
    make(3, {"status": "failed", "error": "boom", "steps": 1}, ["loss=wgan_gp", "norm=layer"])
    cfg = OmegaConf.create(
        {
            "hydra": {"sweep": {"dir": str(tmp_path)}, "runtime": {"choices": {}}},
            "logger": {"name": "wandb", "mode": "offline", "project": "t", "group": "g"},
        }
    )
    SweepSummary().on_multirun_end(cfg)
    assert SweepSummary.last_failed == 2
    logged = load_run(tmp_path)  # empty cells (None) next to numbers are fine for W&B
    assert logged.run.job_type == "summary" and logged.run.run_group == "g"
    assert logged.history[0]["summary"]["nrows"] == 4
    table = markdown_rows(tmp_path / "summary.md")
    assert [r["job"] for r in table] == ["1", "0", "2", "3"]  # lower FD first, failures last
    assert table[2]["error"] == MISSING_RECORD and table[2]["loss"] == "wgan_gp"
    assert table[3]["error"] == "boom" and table[3]["best"] == ""
    assert (tmp_path / "heatmap.png").is_file()  # loss x norm, the failed cells marked
    # a maximized headline ranks the other way
    for num, value in ((0, 3.0), (1, 1.0)):
        record = json.loads((tmp_path / str(num) / "job.json").read_text())
        record["best"] = {"key": "eval/modes_covered", "value": value, "step": 4}
        (tmp_path / str(num) / "job.json").write_text(json.dumps(record))
    assert [job.name for job in summarize(tmp_path).jobs] == ["0", "1", "2", "3"]
    assert [r["job"] for r in markdown_rows(tmp_path / "summary.md")][:2] == ["0", "1"]
    # a resumed job logs the steps after its last checkpoint again: the curve keeps the last
    rows = [(2, 0.5), (4, 0.7), (4, 0.6), (6, 0.9)]
    lines = [json.dumps({"step": s, "eval/modes_covered": v}) for s, v in rows]
    (tmp_path / "0" / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 8, "eval')
    assert read_curve(summarize(tmp_path).jobs[0], "eval/modes_covered") == (
        [2, 4, 6],
        [0.5, 0.6, 0.9],
    )


def test_config_registers_the_sweep_summary_callback() -> None:
    with initialize_config_module("ganexp.conf", version_base="1.3"):
        hydra_cfg = compose("config", return_hydra_config=True).hydra
    assert hydra_cfg.callbacks.sweep_summary._target_ == "ganexp.session.sweep.SweepSummary"


def test_wandb_sweep_spec_drives_ganexp_with_real_keys() -> None:
    """The agent's command line is ganexp with Hydra overrides; every swept key, at each end
    of its range, and every fixed override is a config the preflight accepts."""
    spec = yaml.safe_load(
        (Path(ganexp.__file__).parent.parent / "sweeps" / "wandb_sweep.yaml").read_text()
    )
    command = spec["command"]
    assert command[:2] == ["${env}", "ganexp"] and command[-1] == "${args_no_hyphens}"
    fixed = [arg for arg in command[2:-1] if arg != "logger.mode=online"]
    assert spec["metric"]["name"].startswith("eval/")
    for end in (0, -1):
        chosen = []
        for key, param in spec["parameters"].items():
            values = param.get("values") or [param["min"], param["max"]]
            chosen.append(f"{key}={values[end]}")
        validate(compose_config(*fixed, *chosen))
