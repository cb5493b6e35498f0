"""Stop signals under trainer.replicas, and sweeps that stop or fill the disk: every replica
stops at one step as a separate run stops (checkpointed, one line, exit 128 + signal) and the
same command continues each exactly; a stopped sweep still summarizes what ran and names what
did not; a full disk leaves every summary file whole or as it was."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from commands import run_command
from helpers import assert_same_weights, compose_config, smoke_config, torch_threads
from omegaconf import OmegaConf

from ganexp.config import validate
from ganexp.engine.checkpoint import load_checkpoint
from ganexp.engine.hooks import PENDING_EVAL, Evaluate
from ganexp.engine.trainer import Hook, Trainer
from ganexp.errors import Interrupted
from ganexp.session.run import build_replicas, execute_sessions, train_replicas
from ganexp.session.sweep import NOT_RUN, SweepSummary

# WGAN-GP's five critic iterations a step, two replicas, a checkpoint every step
GP = (
    "data=ring8",
    "generator=mlp",
    "discriminator=mlp",
    "norm=batch",
    "loss=wgan_gp",
    "trainer.replicas=2",
    "trainer.max_steps=4",
    "trainer.checkpoint_every=1",
    "trainer.sample_every=100",
    "metrics.enabled=false",
)
STRATEGIES = ("stacked", "in-turn")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread, as the commands below get (the machine is shared: two threads of tiny
    networks contend, and the runs here are compared with the commands' bit for bit)."""
    with torch_threads(1):
        yield


@contextlib.contextmanager
def strategy(name: str) -> Iterator[None]:
    """Replicas of MLPs take one stacked step; "in-turn" makes them take their own in turn, as
    conv networks do on the CPU."""
    with pytest.MonkeyPatch.context() as patch:
        if name == "in-turn":
            patch.setattr("ganexp.session.run.vectorize", lambda networks, device: False)
        yield


def last(run_dir: Path, k: int, name: str = "last.pt") -> Path:
    return run_dir / f"replica_{k}" / "checkpoints" / name


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    runs = {}
    for name in STRATEGIES:
        runs[name] = tmp_path_factory.mktemp(name)
        with strategy(name):
            cfg, resolved = smoke_config(*GP)
            train_replicas(cfg, resolved, runs[name], name="r", group=None)
    return runs


def signal_at_draw(trainer: Trainer, draw: int) -> None:
    """SIGTERM to this process as the replica of ``trainer`` draws its ``draw``-th batch."""
    drawn = []
    next_batch = trainer.data.next_batch

    def counting() -> tuple[torch.Tensor, torch.Tensor | None]:
        drawn.append(1)
        if len(drawn) == draw:
            os.kill(os.getpid(), signal.SIGTERM)
        return next_batch()

    trainer.data.next_batch = counting


@pytest.mark.parametrize(
    ("name", "replica", "stops_at"),
    [
        ("stacked", 1, 2),  # between critic iterations of the stacked step: abandoned
        ("in-turn", 0, 2),  # in the first replica's turn: abandoned before any replica moved
        ("in-turn", 1, 3),  # in the second's turn: it finishes the step, then all stop
    ],
)
def test_a_signal_inside_a_critic_step_stops_every_replica_at_one_step_and_resumes_exactly(
    tmp_path: Path, uninterrupted: dict[str, Path], name: str, replica: int, stops_at: int
) -> None:
    with strategy(name):
        cfg, resolved = smoke_config(*GP)
        sessions, group = build_replicas(cfg, resolved, tmp_path, name="r", group=None)
        signal_at_draw(group.trainers[replica], 13)  # step 3, third of its five critic draws
        with pytest.raises(Interrupted, match=f"stopped by SIGTERM at step {stops_at};") as stop:
            execute_sessions(sessions)
        assert stop.value.exit_code == 128 + signal.SIGTERM
        whole = uninterrupted[name]
        for k in range(2):
            assert load_checkpoint(last(tmp_path, k))["step"] == stops_at
            assert_same_weights(last(tmp_path, k), last(whole, k, f"step_{stops_at:06d}.pt"))
        train_replicas(cfg, resolved, tmp_path, name="r", group=None)  # the same command
    for k in range(2):
        assert_same_weights(last(tmp_path, k), last(whole, k))


class SignalBeforeEvaluation(Hook):
    """SIGTERM to this process from the hooks before the evaluation: after step ``step``, or
    (None) before training, where a resumed run evaluates a pending step."""

    def __init__(self, step: int | None) -> None:
        self.step = step

    def before_train(self, trainer: Trainer) -> None:
        if self.step is None:
            os.kill(os.getpid(), signal.SIGTERM)

    def after_step(self, trainer: Trainer) -> None:
        if trainer.step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


EVALUATED = (
    "trainer.replicas=2",
    "trainer.sample_every=100",
    "trainer.max_steps=2",
    "trainer.eval_every=2",
    "trainer.checkpoint_every=100",
    "trainer.log_every=1",
)


def eval_steps(run_dir: Path) -> list[int]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["step"] for row in rows if any(key.startswith("eval/") for key in row)]


def stop_in_first_evaluation(run_dir: Path, step: int | None) -> None:
    """The replicas of EVALUATED in ``run_dir``, signalled as replica 0 is to evaluate."""
    cfg, resolved = smoke_config(*EVALUATED)
    sessions, group = build_replicas(cfg, resolved, run_dir, name="r", group=None)
    hooks = group.trainers[0].hooks
    evaluate = next(i for i, hook in enumerate(hooks) if isinstance(hook, Evaluate))
    hooks.insert(evaluate, SignalBeforeEvaluation(step))
    with pytest.raises(Interrupted, match="stopped by SIGTERM at step 2;"):
        execute_sessions(sessions)
    for k in range(2):
        state = load_checkpoint(last(run_dir, k))
        assert state["step"] == 2 and state[PENDING_EVAL] == 2, k
        assert eval_steps(run_dir / f"replica_{k}") == []


def test_a_signal_in_the_first_replica_s_evaluation_leaves_every_replica_s_pending(
    tmp_path: Path,
) -> None:
    """DCGAN on the CPU: replicas in turn. Replica 0's evaluation of step 2 is abandoned, and
    replica 1 stops at the same step without evaluating; continued, the pending evaluation is
    abandoned again; continued again, both evaluate step 2 first and end as uninterrupted."""
    stopped = tmp_path / "stopped"
    stop_in_first_evaluation(stopped, 2)
    stop_in_first_evaluation(stopped, None)
    cfg, resolved = smoke_config(*EVALUATED)
    resumed = train_replicas(cfg, resolved, stopped, name="r", group=None)
    whole = train_replicas(cfg, resolved, tmp_path / "whole", name="r", group=None)
    for k in range(2):
        assert resumed[k][0].final == whole[k][0].final != {}
        assert eval_steps(stopped / f"replica_{k}") == [2]
        assert PENDING_EVAL not in load_checkpoint(last(stopped, k))
        assert_same_weights(last(stopped, k), last(tmp_path / "whole", k))


def ganexp(*args: str) -> list[str]:
    return [sys.executable, "-m", "ganexp", *args]


def quiet_env() -> dict[str, str]:
    """One torch thread, as the in-process runs here."""
    return dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")


def signalled(
    args: list[str], ready: Path, signum: int, cwd: Path
) -> subprocess.CompletedProcess[str]:
    """``args`` run until ``ready`` exists (the run is mid-training), then sent ``signum``."""
    with subprocess.Popen(
        args, cwd=cwd, env=quiet_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            deadline = time.monotonic() + 300
            while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert proc.poll() is None, "the run ended before it was signalled"
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


DCGAN_GP = (
    "trainer.replicas=2",
    "loss=wgan_gp",
    "norm=layer",
    "data.limit=256",
    "generator.width=8",
    "discriminator.width=8",
    "trainer.batch_size=16",
    "trainer.max_steps=6",
    "trainer.checkpoint_every=2",
    "trainer.log_every=2",
    "trainer.sample_every=100",
    "trainer.progress_bar=false",
    "metrics.enabled=false",
    "logger=none",
)


@pytest.mark.slow
def test_sigterm_to_dcgan_replicas_from_the_command_line_and_the_same_command_continues(
    tmp_path: Path,
) -> None:
    """The case measured in issue 23: conv replicas in turn, WGAN-GP's five critic steps."""
    run_dir = tmp_path / "run"
    command = ganexp(*DCGAN_GP, f"hydra.run.dir={run_dir}")
    stopped = signalled(command, last(run_dir, 1, "step_000002.pt"), signal.SIGTERM, tmp_path)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    line = stopped.stderr.strip().splitlines()[-1]
    found = re.search(r"stopped by SIGTERM at step (\d+); checkpoint saved, run the same", line)
    assert found, line
    step = int(found[1])
    assert 2 <= step < 6
    assert json.loads((run_dir / "job.json").read_text())["status"] == "interrupted"
    for k in range(2):  # each replica's own record, as a separate run's: what a sweep counts
        own = json.loads((run_dir / f"replica_{k}" / "job.json").read_text())
        assert own["status"] == "interrupted" and own["steps"] == step
        assert own["error"].startswith(f"stopped by SIGTERM at step {step}")
    for k in range(2):
        assert load_checkpoint(last(run_dir, k))["step"] == step

    continued = run_command("ganexp", *command[3:], cwd=tmp_path, env=quiet_env(), timeout=300)
    assert continued.returncode == 0, continued.stderr[-3000:]
    cfg = compose_config(*DCGAN_GP)
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    train_replicas(validate(cfg), resolved, tmp_path / "whole", name="r", group=None)
    for k in range(2):
        assert load_checkpoint(last(run_dir, k))["step"] == 6
        assert_same_weights(last(run_dir, k), last(tmp_path / "whole", k))


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_ctrl_c_in_a_sweep_summarizes_the_jobs_that_ran_and_names_those_that_did_not(
    tmp_path: Path,
) -> None:
    sweep = tmp_path / "sweep"
    command = ganexp(
        "-m",
        "debug=smoke",
        "data=ring8",
        "generator=mlp",
        "discriminator=mlp",
        "seed=0,1,2",
        "trainer.max_steps=200",
        "trainer.checkpoint_every=10",
        "trainer.log_every=10",
        "trainer.sample_every=1000",
        "metrics.num_samples=256",
        "logger=none",
        f"hydra.sweep.dir={sweep}",
    )
    result = signalled(command, sweep / "1" / "checkpoints" / "last.pt", signal.SIGINT, tmp_path)
    assert result.returncode == 128 + signal.SIGINT, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"ganexp: sweep stopped: {sweep}/summary.md summarizes the 2 jobs that ran; not run: 2"
    )
    rows = read_csv(sweep / "summary.csv")
    assert [(r["job"], r["status"], r["seed"]) for r in rows] == [
        ("0", "completed", "0"),
        ("1", "interrupted", "1"),
        ("2", NOT_RUN, "2"),
    ]
    assert rows[0]["steps"] == "200" and "stopped by SIGINT" in rows[1]["error"]
    assert "The sweep stopped before it started job(s) 2" in (sweep / "summary.md").read_text()
    assert [r["n"] for r in read_csv(sweep / "cells.csv")] == ["1"]  # the completed seed's


@contextlib.contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``folder`` (root only: skips otherwise), unmounted after."""
    folder.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]
    mounted = subprocess.run(mount, capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def make_sweep(folder: Path) -> None:
    """Four finished jobs over one axis, with their curves."""
    for num in range(4):
        job = folder / str(num)
        job.mkdir()
        value = 10.0 + num
        best = {"key": "eval/fd_classifier", "value": value, "step": 4}
        record = {"status": "completed", "overrides": [f"norm.generator=n{num % 2}", f"seed={num}"]}
        record |= {"steps": 4, "final": {best["key"]: value}, "best": best}
        (job / "job.json").write_text(json.dumps(record))
        rows = [{"step": s, best["key"]: value + 4 - s, "loss/g": 1.0} for s in (2, 4)]
        (job / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


SUMMARY_FILES = ("summary.csv", "cells.csv", "curves.png", "summary.md")  # in writing order
PAGE = 4096


def fill_to(disk: Path, room: int) -> None:
    """Leave exactly ``room`` bytes free on ``disk``."""
    stat = os.statvfs(disk)
    (disk / "filler").write_bytes(bytes(stat.f_bavail * stat.f_frsize - room))
    stat = os.statvfs(disk)
    assert stat.f_bavail * stat.f_frsize == room


def test_a_full_disk_while_summarizing_leaves_each_file_whole_or_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The disk fills at each file in turn, then before the first of them replaces an earlier
    summary: one line, no traceback, no temporary file left, and every file is the complete
    new one, the earlier one, or absent."""
    config = OmegaConf.create(
        {"hydra": {"sweep": {"dir": ""}, "runtime": {"choices": {}}}, "logger": {"name": "none"}}
    )
    with tmpfs(tmp_path / "disk", "1m") as disk:
        make_sweep(disk)
        config.hydra.sweep.dir = str(disk)
        SweepSummary().on_multirun_end(config)
        complete = {name: (disk / name).read_bytes() for name in SUMMARY_FILES}
        earlier = {name: b"an earlier summary\n" for name in SUMMARY_FILES}
        capsys.readouterr()
        pages = [-(-len(data) // PAGE) for data in complete.values()]
        # room for the first i files (the disk fills at file i), then for none over earlier ones
        for i in [0, 1, 2, 3, None]:
            for name in SUMMARY_FILES:
                (disk / name).unlink(missing_ok=True)
                if i is None:
                    (disk / name).write_bytes(earlier[name])
            fill_to(disk, 0 if i is None else sum(pages[:i]) * PAGE)
            SweepSummary().on_multirun_end(config)
            err = capsys.readouterr().err
            assert err.splitlines() == [
                f"ganexp: could not summarize {disk} (No space left on device); each job's "
                "folder keeps its results"
            ], (i, err)
            assert not list(disk.glob(".*tmp")), i
            expected = earlier if i is None else dict(list(complete.items())[:i])
            assert {name: (disk / name).read_bytes() for name in expected} == expected, i
            assert all((disk / name).exists() == (name in expected) for name in SUMMARY_FILES), i
            (disk / "filler").unlink()
