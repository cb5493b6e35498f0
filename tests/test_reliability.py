"""Nothing lost: kills, corrupt checkpoints, pickles, NaNs, W&B failures, full disks, seeds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from commands import run_command
from helpers import assert_same_weights, smoke_session

from ganexp.engine.checkpoint import CheckpointStore, load_checkpoint, save_checkpoint
from ganexp.engine.trainer import Hook, Trainer
from ganexp.errors import ConfigError, RunFailed
from ganexp.session.run import execute

GANEXP = str(Path(sys.executable).with_name("ganexp"))
# a run long enough to kill at several points: 24 steps, a checkpoint every 4
KILLABLE = (
    "experiment=smoke",
    "logger=none",
    "trainer.max_steps=24",
    "trainer.checkpoint_every=4",
    "trainer.log_every=4",
    "trainer.sample_every=100",
    "trainer.keep_checkpoints=2",
)


def losses(run_dir: Path) -> list[tuple[float, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["loss/d"], r["loss/g"]) for r in rows if "loss/d" in r]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """KILLABLE's run without a stop: trained in this process (what is compared is its
    weights, not the command)."""
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    execute(smoke_session(run_dir, *KILLABLE[2:]))  # less experiment=smoke logger=none: its own
    return run_dir


def _wait_for_checkpoint(run_dir: Path, proc: subprocess.Popen, step: int) -> None:
    target = run_dir / "checkpoints" / f"step_{step:06d}.pt"
    deadline = time.monotonic() + 240
    while not target.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.mark.slow
def test_sigkill_then_same_command_ends_with_the_uninterrupted_weights(
    tmp_path: Path, uninterrupted: Path
) -> None:
    cmd = [GANEXP, *KILLABLE, f"hydra.run.dir={tmp_path}"]
    for kill_after in (4, 12):  # kill -9 right after two different checkpoints
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        _wait_for_checkpoint(tmp_path, proc, kill_after)
        proc.kill()
        proc.wait()
    result = run_command("ganexp", *cmd[1:], timeout=300)  # the same command, forked
    assert result.returncode == 0, result.stderr
    assert "resuming from" in result.stderr
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 24
    assert_same_weights(tmp_path / "checkpoints" / "last.pt", uninterrupted / "checkpoints/last.pt")


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path: Path) -> None:
    cmd = [GANEXP, *KILLABLE, "trainer.checkpoint_every=1000", f"hydra.run.dir={tmp_path}"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not (metrics.exists() and metrics.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1].startswith("ganexp: stopped by SIGTERM at step")  # no "error"
    step = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"]
    assert 4 <= step < 24


def test_corrupt_last_checkpoint_falls_back_to_the_previous_one(tmp_path: Path, capsys) -> None:
    store = CheckpointStore(tmp_path, keep=2)
    for step in (1, 2):
        store.save({"generator": {"w": torch.full((3,), float(step))}, "step": step}, step)
    assert sorted(p.name for p in tmp_path.glob("step_*.pt")) == [
        "step_000001.pt",
        "step_000002.pt",
    ]
    with open(tmp_path / "last.pt", "r+b") as f:  # flip bytes in place: last.pt and step 2
        f.seek(100)
        f.write(b"\x00garbage\x00")
    state, path = store.load_latest()
    assert state["step"] == 1 and path.name == "step_000001.pt"
    assert "skipping last.pt: corrupt checkpoint" in capsys.readouterr().err


def test_truncated_checkpoint_without_digest_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "foreign.pt"
    torch.save({"generator": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(ConfigError, match="unreadable checkpoint"):
        load_checkpoint(path)


def test_keeps_only_the_last_k_step_checkpoints(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=2)
    for step in range(1, 6):
        store.save({"generator": {}, "step": step}, step)
    assert [p.name for p in store.steps()] == ["step_000005.pt", "step_000004.pt"]
    assert load_checkpoint(store.last)["step"] == 5


class Payload:
    """Pickles into a call that would create a file if it ever ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


@pytest.mark.slow
def test_pickle_payload_checkpoint_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    torch.save({"generator": {}, "surprise": Payload(marker)}, path, pickle_protocol=2)
    with pytest.raises(ConfigError) as error:
        load_checkpoint(path)
    assert "refused" in str(error.value) and "\n" not in str(error.value)
    assert not marker.exists()
    assert b"mkdir" in path.read_bytes()  # the file really carries the payload
    result = run_command("ganexp", "experiment=smoke", f"resume={path}", cwd=tmp_path, timeout=300)
    assert result.returncode == 2
    assert result.stderr.startswith("ganexp: error: resume=") and "refused" in result.stderr
    assert not marker.exists()


class InjectNaN(Hook):
    """Makes the discriminator output NaN from a given step on."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def before_train(self, trainer: Trainer) -> None:
        def poison(module, inputs, output):
            return output * float("nan") if trainer.step + 1 >= self.at_step else output

        trainer.discriminator.register_forward_hook(poison)


@pytest.mark.slow
def test_injected_nan_stops_at_that_step_keeping_the_last_good_checkpoint(tmp_path: Path) -> None:
    s = smoke_session(tmp_path, "trainer.checkpoint_every=2", "trainer.log_every=100")
    s.trainer.hooks.insert(0, InjectNaN(at_step=5))
    with pytest.raises(RunFailed) as error:
        execute(s)
    message = str(error.value)
    assert message.startswith("non-finite loss/d, loss/g, d/real, d/fake at step 5;")
    assert "last good checkpoint" in message
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["step"] == 4
    assert all(
        torch.isfinite(v).all() for v in state["discriminator"].values() if v.is_floating_point()
    )


@pytest.mark.slow
def test_skip_nonfinite_goes_on(tmp_path: Path) -> None:
    s = smoke_session(tmp_path, "trainer.skip_nonfinite=true")
    s.trainer.hooks.insert(0, InjectNaN(at_step=5))
    execute(s)
    assert s.trainer.step == 6
    assert s.trainer.skipped_steps == 4  # steps 5 and 6: one D and one G step each
    assert all(torch.isfinite(p).all() for p in s.trainer.discriminator.parameters())


class BreakWandb(Hook):
    """Kills the W&B service process at a given step: W&B fails for real mid-run."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def after_step(self, trainer: Trainer) -> None:
        if trainer.step == self.at_step:
            for proc in Path("/proc").iterdir():
                if proc.name.isdigit() and _is_wandb_core(proc):
                    os.kill(int(proc.name), signal.SIGKILL)


def _is_wandb_core(proc: Path) -> bool:
    try:
        cmdline = (proc / "cmdline").read_bytes()
        ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return False
    return b"wandb-core" in cmdline and ppid == os.getpid()


@pytest.mark.slow
def test_wandb_failing_mid_run_does_not_stop_training(tmp_path: Path) -> None:
    s = smoke_session(tmp_path, "logger=wandb", "logger.mode=offline", "trainer.max_steps=8")
    s.trainer.hooks.insert(0, BreakWandb(at_step=3))
    execute(s)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss/d" in r] == [2, 4, 6, 8]
    assert "eval/fd_classifier" in rows[-1]
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 8


def test_disk_refusing_a_checkpoint_is_a_clear_error_leaving_the_old_one(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    small = {"generator": {"w": torch.zeros(10)}, "step": 1}
    save_checkpoint(small, path)
    script = (
        "import sys, torch, resource, signal\n"
        "from pathlib import Path\n"
        "from ganexp.engine.checkpoint import save_checkpoint\n"
        "from ganexp.errors import RunFailed\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))\n"
        "try:\n"
        "    big = {'generator': {'w': torch.zeros(1_000_000)}, 'step': 2}\n"
        "    save_checkpoint(big, Path(sys.argv[1]))\n"
        "except RunFailed as e:\n"
        "    print(e)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.startswith(f"could not write checkpoint {path} (File too large)")
    assert "previous checkpoint is intact" in result.stdout
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "last.pt.sha256"]


@pytest.mark.slow
def test_same_seed_gives_identical_losses_and_weights(tmp_path: Path) -> None:
    for name in ("a", "b"):
        execute(smoke_session(tmp_path / name, "seed=7", "loss=wgan_gp", "norm=layer"))
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert_same_weights(tmp_path / "a/checkpoints/last.pt", tmp_path / "b/checkpoints/last.pt")
    execute(smoke_session(tmp_path / "c", "seed=8", "loss=wgan_gp", "norm=layer"))
    assert losses(tmp_path / "c") != losses(tmp_path / "a")


@pytest.mark.slow
def test_a_finished_run_started_again_reports_its_results(tmp_path: Path) -> None:
    """A sweep started again (to resume its unfinished jobs) re-runs the finished ones too:
    they have nothing to train and must still report their final and best metrics."""
    first = execute(smoke_session(tmp_path))
    again = execute(smoke_session(tmp_path))
    assert again.steps == first.steps
    assert first.final and again.final == first.final
    assert again.best == first.best


@pytest.mark.slow  # two ganexp processes
def test_a_job_started_again_adds_its_time_to_the_earlier_attempts(tmp_path: Path) -> None:
    """job.json's wall_time_s is the job's whole time: a job started again (a resume, or a
    finished job re-run by a resumed sweep) adds its own time to the earlier attempts'."""
    from test_sweeps import TINY, ganexp_cmd

    run_dir = tmp_path / "run"
    result = ganexp_cmd(*TINY, "logger=none", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((run_dir / "job.json").read_text())
    assert record["wall_time_s"] > 0
    record["wall_time_s"] = 1000.0  # as if the first attempt had taken 1000 s
    (run_dir / "job.json").write_text(json.dumps(record))
    result = ganexp_cmd(*TINY, "logger=none", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    again = json.loads((run_dir / "job.json").read_text())
    assert again["status"] == "completed" and again["wall_time_s"] > 1000.0
