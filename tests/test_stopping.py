"""Stopping promptly and continuing exactly: a signal inside a long step or an evaluation, and
the history (metrics.jsonl, W&B) of a run killed after its last checkpoint and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import assert_same_weights, smoke_run, smoke_session

from ganexp.engine.checkpoint import load_checkpoint
from ganexp.engine.hooks import PENDING_EVAL
from ganexp.errors import Interrupted
from ganexp.session.run import execute
from ganexp.tracking.runfile import RunFile, load_run

pytestmark = pytest.mark.slow  # real trainings, each several seconds

TESTS = Path(__file__).parent
# a step of 40 critic iterations: a signal arrives in the middle of one
LONG_STEPS = (
    "loss=wgan_clip",
    "trainer.n_critic=40",
    "trainer.max_steps=3",
    "trainer.checkpoint_every=1",
    "trainer.log_every=1",
    "trainer.sample_every=100",
    "metrics.enabled=false",
)


def history(run_dir: Path) -> dict[tuple[int, str], float]:
    """(step, key) -> value of metrics.jsonl, failing on a (step, key) logged twice."""
    seen: dict[tuple[int, str], float] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        step = row.pop("step")
        for key, value in row.items():
            assert (step, key) not in seen, f"{key} logged twice at step {step}"
            seen[step, key] = value
    return seen


def assert_same_history(a: Path, b: Path) -> None:
    ha, hb = history(a), history(b)
    assert ha.keys() == hb.keys()
    timed = {k for k in ha if k[1] == "perf/img_per_s"}  # wall-clock, not a result
    assert {k: ha[k] for k in ha.keys() - timed} == {k: hb[k] for k in hb.keys() - timed}


@pytest.fixture(scope="module")
def long_uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("long")
    smoke_run(run_dir, *LONG_STEPS)
    return run_dir


def test_sigterm_inside_a_long_step_stops_at_the_last_completed_step_and_resumes_exactly(
    tmp_path: Path, long_uninterrupted: Path
) -> None:
    session = smoke_session(tmp_path, *LONG_STEPS)
    trainer = session.trainer
    calls_in_step_2 = []

    def signal_mid_step(module: torch.nn.Module, inputs: tuple) -> None:
        if trainer.step == 1:  # step 2 is running
            calls_in_step_2.append(1)
            if len(calls_in_step_2) == 10:  # 5 critic iterations into it
                os.kill(os.getpid(), signal.SIGTERM)

    trainer.discriminator.register_forward_pre_hook(signal_mid_step)
    with pytest.raises(Interrupted, match="stopped by SIGTERM at step 1;") as stop:
        execute(session)
    assert stop.value.exit_code == 128 + signal.SIGTERM
    # the step was abandoned right after the signal, not finished (80 D passes)
    assert 10 <= len(calls_in_step_2) <= 12
    last = tmp_path / "checkpoints" / "last.pt"
    assert load_checkpoint(last)["step"] == 1
    # the checkpoint holds the state after step 1, not step 2's partly trained critic
    assert_same_weights(last, long_uninterrupted / "checkpoints" / "step_000001.pt")

    smoke_run(tmp_path, *LONG_STEPS)
    assert_same_weights(last, long_uninterrupted / "checkpoints" / "last.pt")
    assert_same_history(tmp_path, long_uninterrupted)


EVALUATED = (
    "trainer.max_steps=4",
    "trainer.eval_every=2",
    "trainer.log_every=1",
    "trainer.sample_every=100",
    "trainer.checkpoint_every=100",
    "metrics.num_samples=1500",  # three batches of 500
    "data.limit=1500",
)


def test_sigterm_inside_an_evaluation_abandons_it_and_the_resumed_run_evaluates_that_step(
    tmp_path: Path,
) -> None:
    whole = tmp_path / "whole"
    smoke_run(whole, *EVALUATED)
    run_dir = tmp_path / "stopped"
    session = smoke_session(run_dir, *EVALUATED)
    generated = []

    def signal_mid_evaluation(module: torch.nn.Module, inputs: tuple) -> None:
        if not module.training:  # an evaluation batch (no sample grid is due)
            generated.append(1)
            if len(generated) == 1:
                os.kill(os.getpid(), signal.SIGTERM)

    hook = session.trainer.generator.register_forward_pre_hook(signal_mid_evaluation)
    with pytest.raises(Interrupted, match="at step 2;"):
        execute(session)
    hook.remove()
    assert len(generated) == 1  # one batch of three, then it stopped
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert state["step"] == 2 and state[PENDING_EVAL] == 2
    assert not any("eval/" in line for line in (run_dir / "metrics.jsonl").read_text().splitlines())

    smoke_run(run_dir, *EVALUATED)
    assert_same_history(run_dir, whole)
    assert PENDING_EVAL not in load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert_same_weights(run_dir / "checkpoints" / "best.pt", whole / "checkpoints" / "best.pt")


KILLED_AFTER_LOGGING = """
import os, signal, sys
from pathlib import Path
from helpers import smoke_session
from ganexp.config import register_schema
from ganexp.session.run import execute
from ganexp.engine.trainer import Hook

class KillAt(Hook):  # kill -9 once step 7 is logged: after the checkpoint of step 4
    def after_step(self, trainer):
        if trainer.step == 7:
            os.kill(os.getpid(), signal.SIGKILL)

register_schema()
session = smoke_session(Path(sys.argv[1]), *sys.argv[2:])
session.trainer.hooks.append(KillAt())
execute(session)
"""

HISTORY = (
    "logger=wandb",
    "logger.mode=offline",
    "trainer.max_steps=10",
    "trainer.log_every=1",
    "trainer.checkpoint_every=4",
    "trainer.sample_every=5",
    "metrics.enabled=false",
)


def test_killed_after_its_checkpoint_and_resumed_the_history_equals_an_uninterrupted_run(
    tmp_path: Path,
) -> None:
    whole = tmp_path / "whole"
    smoke_run(whole, *HISTORY)
    run_dir = tmp_path / "killed"
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_LOGGING, str(run_dir), *HISTORY],
        # its own W&B service, as a separate command would have (not this process's)
        env={k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
        | {"PYTHONPATH": str(TESTS)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == 4
    logged = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").open()]
    assert max(logged) == 7  # steps 5-7 were logged after the checkpoint

    smoke_run(run_dir, *HISTORY)
    assert_same_history(run_dir, whole)

    # W&B: a killed process's offline file loses its unflushed tail (here all of it); the
    # resumed process replayed the history up to its checkpoint into a new offline folder and
    # set the old one aside, so that folder alone holds every step, each once, with our `step`
    wandb_dir = run_dir / "wandb"
    assert len(list(wandb_dir.glob("superseded-offline-run-*"))) == 1
    resumed, whole_run = load_run(wandb_dir), load_run(whole)
    assert resumed.run.run_id == load_checkpoint(run_dir / "checkpoints" / "last.pt")["wandb_id"]

    def scalars(run: RunFile) -> dict[int, dict]:
        rows = [r for r in run.history if "loss/d" in r]
        assert len(rows) == len({r["step"] for r in rows})  # each step once
        timed = ("perf/img_per_s", "_step", "_runtime", "_timestamp")
        return {r["step"]: {k: v for k, v in r.items() if k not in timed} for r in rows}

    assert scalars(resumed) == scalars(whole_run)
    assert set(scalars(resumed)) == set(range(1, 11))
    grids = sorted(r["step"] for r in resumed.history if "samples" in r)
    assert grids == [5, 10]  # each grid once
    assert {m.step_metric for m in resumed.metrics if m.glob_name == "loss/*"} == {"step"}


def test_hooks_in_the_wrong_order_are_refused_before_training(tmp_path: Path) -> None:
    """The checkpoint hook saves what the evaluation hook knows of a step, so it must come after
    it: the loop checks the order the hooks declare before the first step."""
    session = smoke_session(tmp_path, "trainer.max_steps=2")
    trainer = session.trainer
    names = [type(hook).__name__ for hook in trainer.hooks]
    assert names.index("CheckFinite") < names.index("Evaluate") < names.index("Checkpoint")
    trainer.hooks.reverse()
    with pytest.raises(ValueError, match="hook Checkpoint must come after Evaluate"):
        trainer.train()
    assert trainer.step == 0


def test_the_checkpoint_holds_each_hooks_own_state(tmp_path: Path) -> None:
    """Evaluate keeps its state itself; the checkpoint asks every hook for what it keeps."""
    session = smoke_session(tmp_path, "trainer.max_steps=3", "trainer.eval_every=3")
    execute(session)
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    own = session.evaluate.state_dict()
    assert {"best", "latest_eval", "eval_setup"} <= own.keys()
    for key, value in own.items():
        assert state[key] == value, key
