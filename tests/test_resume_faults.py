"""A resume continues the same experiment, and only that: a checkpoint resumed onto another
experiment is refused, jobs that would be copies of one run are never counted as seeds, and a run
stopped between two logged rows logs the next row an uninterrupted run logs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import smoke_run, smoke_session

from ganexp.engine.checkpoint import load_checkpoint, save_checkpoint
from ganexp.engine.trainer import INTERVAL, Hook, Trainer
from ganexp.errors import ConfigError, Interrupted
from ganexp.session.preflight import experiment_differences, preflight
from ganexp.session.run import execute

GANEXP = str(Path(sys.executable).with_name("ganexp"))
TOY = ("data=ring8", "generator=mlp", "discriminator=mlp", "norm=none", "metrics.enabled=false")
CLI = ("experiment=smoke", "logger=none", *TOY)  # the command line of smoke_run(run_dir, *TOY)


@pytest.fixture(scope="module")
def ring8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of a few steps on ring8 (seed 0)."""
    run_dir = tmp_path_factory.mktemp("ring8")
    smoke_run(run_dir, *TOY, "trainer.max_steps=4")
    return run_dir


def files(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
    }


def refused(tmp_path: Path, run: Path, *args: str) -> str:
    """`ganexp ARGS` refused in one line, exit 2, no traceback; nothing made in tmp_path/new
    (its run or sweep folder) and nothing changed in ``run``."""
    before = files(run)
    new = tmp_path / "new"
    result = subprocess.run(
        [GANEXP, *args, f"hydra.run.dir={new}", f"hydra.sweep.dir={new}"],
        cwd=tmp_path,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ganexp: error: resume="), result.stderr
    assert not new.exists()
    assert files(run) == before
    return lines[-1].removeprefix("ganexp: error: ")


# --- another experiment ----------------------------------------------------------------------


@pytest.mark.slow  # a ganexp process
def test_a_checkpoint_resumed_onto_another_experiment_is_refused_naming_the_keys(
    tmp_path: Path, ring8: Path
) -> None:
    toy_grid = [arg.replace("ring8", "grid25") for arg in CLI]
    message = refused(tmp_path, ring8, *toy_grid, f"resume={ring8}", "trainer.max_steps=8")
    assert message.startswith(
        f"resume='{ring8}/checkpoints/last.pt': the checkpoint is another experiment: "
        "data.name is ring8 in the checkpoint, grid25 now; data.modes is 8 in the checkpoint"
    ), message
    assert "max_steps" not in message


def test_keys_a_resume_may_change_pass(ring8: Path) -> None:
    preflight(
        [
            *CLI,
            f"resume={ring8}",
            "trainer.max_steps=8",
            "trainer.log_every=1",
            "trainer.sample_every=7",
            "trainer.checkpoint_every=5",
            "trainer.keep_checkpoints=1",
            "trainer.skip_nonfinite=true",
            "optim.implementation=foreach",
            "data.num_workers=1",
            "logger.mode=offline",
            "device.name=cpu",
            "metrics.enabled=true",
            "metrics.num_samples=50",
        ]
    )


def test_every_key_outside_the_list_is_the_experiments() -> None:
    saved = {
        "data": {"name": "image_folder", "root": "/a", "cache_dir": "/c"},
        "trainer": {"max_steps": 5},
        "loss": {"_target_": "my.Loss", "beta": 1},
        "logger": {"project": "p"},
    }
    now = {
        "data": {"name": "image_folder", "root": "/b", "cache_dir": "/d"},
        "trainer": {"max_steps": 9, "ema_decay": 0.0, "new_key": 1},
        "loss": {"_target_": "my.Loss"},
        "logger": {"project": "q"},
    }
    assert experiment_differences(saved, now) == {
        # an image folder's root is its data; a named data set's root is where its files are
        "data.root": "data.root is /a in the checkpoint, /b now",
        # a key the schema lacks is the experiment's; one the checkpoint's config lacks is
        # compared with its default (ema_decay's 0.0)
        "trainer.new_key": "trainer.new_key is absent in the checkpoint, 1 now",
        "loss.beta": "loss.beta is 1 in the checkpoint, absent now",
    }
    for named in (saved, now):
        named["data"]["name"] = "fashion_mnist"
    assert "data.root" not in experiment_differences(saved, now)


# --- copies of one run counted as seeds -----------------------------------------------------


def test_a_seed_sweep_from_one_checkpoint_is_refused(tmp_path: Path, ring8: Path) -> None:
    message = refused(tmp_path, ring8, "-m", *CLI, "seed=0,1,2", f"resume={ring8}")
    assert message.startswith(
        f"resume='{ring8}': the jobs of seed=0,1,2 would all continue from this one checkpoint"
    ), message
    assert "not 3 seeds" in message


@pytest.mark.slow  # a ganexp process
def test_replicas_from_one_checkpoint_are_refused(tmp_path: Path, ring8: Path) -> None:
    message = refused(tmp_path, ring8, *CLI, "trainer.replicas=3", f"resume={ring8}")
    assert message.startswith(
        f"resume='{ring8}': trainer.replicas=3 would continue all 3 replicas from this one "
        "checkpoint: copies of one run, not 3 seeds"
    ), message


def test_a_sweep_forking_one_checkpoint_passes_and_one_listing_a_job_twice_is_refused(
    tmp_path: Path, ring8: Path
) -> None:
    """Forks differ in a key a resume may change: each is a cell of its own, with n = 1."""
    sweep = [f"hydra.sweep.dir={tmp_path / 'sweep'}", f"resume={ring8}"]
    preflight(["-m", *CLI, "trainer.max_steps=10,20", *sweep])
    with pytest.raises(ConfigError, match=r"the sweep lists this job 2 times: copies of one run"):
        preflight(["-m", *CLI, "trainer.max_steps=10,10", *sweep])
    with pytest.raises(ConfigError, match="the sweep lists this job 2 times"):
        preflight(["-m", *CLI, "seed=3,3", f"hydra.sweep.dir={tmp_path / 'sweep'}"])


def test_a_replicas_job_continuing_by_itself_checks_each_replica_as_its_seed(
    tmp_path: Path, ring8: Path
) -> None:
    """replica_k continues a run of seed ``seed + k``: a seed-0 checkpoint fits replica 0 only."""
    job = tmp_path / "job"
    shutil.copytree(ring8 / "checkpoints", job / "replica_0" / "checkpoints")
    argv = [*CLI, "trainer.replicas=2", f"hydra.run.dir={job}"]
    preflight(argv)
    shutil.copytree(ring8 / "checkpoints", job / "replica_1" / "checkpoints")
    with pytest.raises(ConfigError) as error:
        preflight(argv)
    assert str(error.value).startswith(
        f"resume='{job}/replica_1/checkpoints/last.pt': the checkpoint is another experiment: "
        "seed is 0 in the checkpoint, 1 now"
    )


# --- the interval's running sums -------------------------------------------------------------

LOGGED = (*TOY, "trainer.max_steps=10", "trainer.log_every=5", "trainer.sample_every=100")
LOGGED += ("trainer.checkpoint_every=100",)


class SigtermAfter(Hook):
    """SIGTERM after step 7: the run stops at step 8, between the rows of steps 5 and 10."""

    def after_step(self, trainer: Trainer) -> None:
        if trainer.step == 7:
            os.kill(os.getpid(), signal.SIGTERM)


def rows(run_dir: Path) -> dict[int, dict]:
    """metrics.jsonl by step, without the wall-clock throughput."""
    found = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        row.pop("perf/img_per_s")
        found[row.pop("step")] = row
    return found


@pytest.mark.slow  # four short trainings
def test_stopped_between_two_logged_rows_the_next_row_is_the_uninterrupted_runs(
    tmp_path: Path,
) -> None:
    whole = tmp_path / "whole"
    smoke_run(whole, *LOGGED)
    stopped = tmp_path / "stopped"
    session = smoke_session(stopped, *LOGGED)
    session.trainer.hooks.append(SigtermAfter())
    with pytest.raises(Interrupted, match="at step 8;"):
        execute(session)
    last = stopped / "checkpoints" / "last.pt"
    assert load_checkpoint(last)[INTERVAL]["count"] == 3  # steps 6-8, not logged yet
    old = tmp_path / "old"  # a checkpoint written before the sums were kept
    shutil.copytree(stopped, old)
    state = load_checkpoint(old / "checkpoints" / "last.pt")
    del state[INTERVAL]
    save_checkpoint(state, old / "checkpoints" / "last.pt")

    smoke_run(stopped, *LOGGED)
    assert rows(stopped) == rows(whole)  # to the last bit, the row of step 10 too
    assert sorted(rows(whole)) == [5, 10]

    smoke_run(old, *LOGGED)  # still loads; its row 10 averages steps 9-10 only
    assert rows(old).keys() == rows(whole).keys()
    assert rows(old)[10]["loss/d"] != rows(whole)[10]["loss/d"]
    assert rows(old)[10]["grad_norm/g"] == rows(whole)[10]["grad_norm/g"]


def test_a_malformed_interval_is_refused_in_one_line(tmp_path: Path, ring8: Path) -> None:
    state = load_checkpoint(ring8 / "checkpoints" / "last.pt")
    state[INTERVAL]["sums"] = state[INTERVAL]["sums"][:3]
    path = tmp_path / "doctored.pt"
    save_checkpoint(state, path)
    with pytest.raises(ConfigError, match="not a ganexp checkpoint: its 'interval' is malformed"):
        preflight([*CLI, f"resume={path}"])
