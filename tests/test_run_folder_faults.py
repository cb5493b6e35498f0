"""Run folders under faults, through the command line: two processes in one folder, a folder
that cannot be written, a disk that fills, Ctrl-C twice, a user's code calling sys.exit in a
sweep. The full-disk and read-only cases mount a small tmpfs, so they need root."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from test_sweeps import GANEXP, ganexp_cmd, read_csv

from ganexp.cli.train import _remove_if_untouched
from ganexp.engine.checkpoint import load_checkpoint
from ganexp.engine.runfolder import LOCK_FILE, WAIT_ENV, hold
from ganexp.errors import RunFailed
from ganexp.session.job import RESERVE_FILE, reserve_room, write_job_record
from ganexp.tracking.logger import append_line

# a toy run of small networks: quick steps, small checkpoints, no evaluation
TOY = (
    "data=ring8",
    "generator=mlp",
    "discriminator=mlp",
    "norm=none",
    "generator.width=16",
    "discriminator.width=16",
    "trainer.z_dim=8",
    "metrics.enabled=false",
    "logger=none",
    "trainer.progress_bar=false",
)
# long enough to be stopped from outside: a checkpoint every 20 steps, no sample grids
ENDLESS = (*TOY, "trainer.max_steps=1000000", "trainer.checkpoint_every=20")
ENDLESS += ("trainer.log_every=10", "trainer.sample_every=1000000")


def _env(wait: float) -> dict[str, str]:
    """ganexp's environment, waiting up to ``wait`` s for another holder of its folder."""
    return dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", **{WAIT_ENV: f"{wait}"})


def _wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"exited ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _steps_logged(run_dir: Path) -> list[int]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines]


def _assert_one_line_error(stderr: str, start: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"ganexp: error: {start}"), stderr[-3000:]
    return last


@contextlib.contextmanager
def _tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted on ``folder`` (root only: skips otherwise), unmounted after."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.mark.slow
def test_a_held_run_folder_refuses_a_second_run_and_a_killed_holder_frees_it(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    command = [GANEXP, *ENDLESS, f"hydra.run.dir={run_dir}"]
    with open(tmp_path / "holder.log", "w") as err:
        holder = subprocess.Popen(command, env=_env(0), stdout=subprocess.DEVNULL, stderr=err)
    requeued = None
    try:
        lock = run_dir / LOCK_FILE
        _wait_for(lambda: f'"pid": {holder.pid}' in _text(lock), holder, "its lock")
        _wait_for((run_dir / "checkpoints" / "last.pt").exists, holder, "a checkpoint")
        kept = {p: p.read_bytes() for p in [*run_dir.glob(".hydra/*"), run_dir / "config.yaml"]}

        # a second run (another seed) is refused at once, naming the holder, touching nothing
        second = subprocess.run(
            [*command, "seed=1"], env=_env(0), capture_output=True, text=True, timeout=240
        )
        assert second.returncode == 2
        line = _assert_one_line_error(second.stderr, f"hydra.run.dir='{run_dir}': in use by")
        assert f"(pid {holder.pid} on {socket.gethostname()}, started " in line
        assert {p: p.read_bytes() for p in kept} == kept
        assert f'"pid": {holder.pid}' in lock.read_text()
        assert not (run_dir / "job.json").exists()

        # a requeued job waits for its earlier self; kill -9 leaves no lock behind
        log = tmp_path / "requeued.log"
        with open(log, "w") as err:
            requeued = subprocess.Popen(
                command, env=_env(200), stdout=subprocess.DEVNULL, stderr=err
            )
        _wait_for(lambda: "; waiting up to " in log.read_text(), requeued, "its wait")
        holder.kill()
        holder.wait()
        resumed = re.compile(r"resuming from .*last\.pt at step (\d+)")
        _wait_for(lambda: resumed.search(log.read_text()), requeued, "its resume")
        start = int(resumed.search(log.read_text()).group(1))

        def trained() -> bool:
            with contextlib.suppress(ValueError):  # a row being written
                return max(_steps_logged(run_dir)) > start
            return False

        _wait_for(trained, requeued, "training")

        # Ctrl-C twice: stops at once, one line, exit 130, job.json says where it stopped
        requeued.send_signal(signal.SIGINT)
        time.sleep(0.05)
        requeued.send_signal(signal.SIGINT)
        assert requeued.wait(timeout=120) == 128 + signal.SIGINT
        stopped = log.read_text()  # one line, and not an error: the user asked for it
        assert "Traceback" not in stopped and "error" not in stopped, stopped[-3000:]
        assert stopped.strip().splitlines()[-1].startswith("ganexp: stopped "), stopped[-3000:]
    finally:
        for proc in (holder, requeued):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    record = json.loads((run_dir / "job.json").read_text())
    assert record["status"] == "interrupted" and "SIGINT" in record["error"]
    assert record["steps"] > start and f"at step {record['steps']};" in record["error"]
    steps = _steps_logged(run_dir)  # one writer at a time: each step once, in order
    assert steps == sorted(set(steps)) and steps[-1] <= record["steps"]


def test_a_held_sweep_dir_refuses_a_second_sweep_before_it_writes(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    lock = hold("hydra.sweep.dir", sweep, wait=False)  # this test process holds it
    try:
        result = subprocess.run(
            [GANEXP, "-m", *TOY, "seed=0,1", f"hydra.sweep.dir={sweep}"],
            env=_env(0),
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        lock.release()
    assert result.returncode == 2
    line = _assert_one_line_error(result.stderr, f"hydra.sweep.dir='{sweep}': in use by")
    assert f"(pid {os.getpid()} on " in line
    assert [p.name for p in sweep.iterdir()] == [LOCK_FILE]


@pytest.mark.parametrize(
    ("args", "wrong"),
    [
        (("hydra.run.dir={ro}/run",), "{ro} is on a read-only file system"),
        (("hydra.run.dir={ro}",), "{ro} is on a read-only file system"),
        (("-m", "seed=0,1", "hydra.sweep.dir={ro}/sweep"), "{ro} is on a read-only file system"),
        (("hydra.run.dir={small}/run",), "the disk of {small} has 64 KiB free; a run needs"),
        (("hydra.run.dir={file}",), "names a file"),
        (("hydra.run.dir={file}/run",), "{file} is not a folder"),
    ],
)
def test_an_output_folder_that_cannot_be_written_is_refused_in_one_line(
    tmp_path: Path, args: tuple[str, ...], wrong: str
) -> None:
    folders = {"ro": tmp_path / "ro", "small": tmp_path / "small", "file": tmp_path / "a.txt"}
    folders["file"].write_text("a file, not a folder\n")
    mount = contextlib.nullcontext()
    if "{ro}" in wrong:
        mount = _tmpfs(folders["ro"], "ro,size=64k")
    elif "{small}" in wrong:
        mount = _tmpfs(folders["small"], "size=64k")
    with mount:
        typed = [a.format(**folders) for a in args]
        result = ganexp_cmd(*TOY, *typed, cwd=tmp_path)
    assert result.returncode == 2
    key, _, value = typed[-1].partition("=")
    line = _assert_one_line_error(result.stderr, f"{key}='{value}': ")
    assert wrong.format(**folders) in line
    assert folders["file"].read_text() == "a file, not a folder\n"
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()


@pytest.mark.slow
def test_a_full_disk_stops_the_run_in_one_line_with_nothing_half_written(
    tmp_path: Path,
) -> None:
    """Sized so that a sample grid (or a metrics row) finds the disk full between the
    checkpoints of steps 10 and 20."""
    with _tmpfs(tmp_path / "disk", "size=370k") as disk:
        run_dir = disk / "run"
        result = ganexp_cmd(
            *TOY,
            "trainer.max_steps=1000",
            "trainer.sample_every=1",
            "trainer.log_every=1",
            "trainer.checkpoint_every=10",
            f"hydra.run.dir={run_dir}",
            cwd=tmp_path,
        )
        assert result.returncode == 1, result.stderr[-3000:]
        line = _assert_one_line_error(result.stderr, "could not write ")
        failed = re.fullmatch(
            r"ganexp: error: could not write (\S+) \(No space left on device\)", line
        )
        assert failed, line
        assert Path(failed.group(1)).parent == run_dir / "samples" or failed.group(1) == str(
            run_dir / "metrics.jsonl"
        )
        # the last checkpoint is intact, job.json says how and where the run ended
        assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == 10
        record = json.loads((run_dir / "job.json").read_text())
        assert record["status"] == "failed" and record["error"] == line.removeprefix(
            "ganexp: error: "
        )
        assert 10 < record["steps"] < 20
        # nothing half-written: no temporary or empty files, whole rows, whole pictures
        files = [p for p in run_dir.rglob("*") if p.is_file()]
        assert not [p for p in files if p.name.endswith(".tmp") or p.name == RESERVE_FILE]
        assert not [p for p in files if p.stat().st_size == 0 and p.suffix != ".log"]
        text = (run_dir / "metrics.jsonl").read_text()
        assert text.endswith("\n")
        assert _steps_logged(run_dir) == list(range(1, len(text.splitlines()) + 1))
        grids = sorted((run_dir / "samples").glob("step_*.png"))
        assert len(grids) >= record["steps"] - 1
        for grid in grids:
            with Image.open(grid) as image:
                image.load()


def test_a_metrics_row_that_does_not_fit_leaves_no_partial_line(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "disk", "size=16k") as disk:
        row = json.dumps({"step": 1, "loss/d": 0.123456789}).encode() + b"\n"
        metrics = open(disk / "metrics.jsonl", "ab", buffering=0)  # noqa: SIM115
        with metrics, pytest.raises(OSError, match="No space left"):
            for _ in range(10_000):  # 4 KiB pages fill up: the last row crosses the last one
                append_line(metrics, row)
        text = (disk / "metrics.jsonl").read_bytes()
        assert text and len(text) % len(row) == 0 and len(text) % 4096 != 0


def test_job_json_is_written_in_the_room_set_aside_on_a_full_disk(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "disk", "size=128k") as disk:
        full, spare = disk / "full", disk / "spare"
        for folder in (full, spare):
            folder.mkdir()
        reserve_room(spare)
        with contextlib.suppress(OSError), open(disk / "filler", "wb", buffering=0) as filler:
            while True:
                filler.write(bytes(4096))
        with pytest.raises(RunFailed, match=f"could not write {full}/job.json \\(No space"):
            write_job_record(full, {"status": "failed"})
        assert not (full / "job.json").exists()
        write_job_record(spare, {"status": "failed", "steps": 12})
        assert json.loads((spare / "job.json").read_text()) == {"status": "failed", "steps": 12}
        assert not (spare / RESERVE_FILE).exists()


def test_a_refused_job_never_removes_a_folder_it_did_not_make(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    (theirs / ".hydra").mkdir(parents=True)
    (theirs / "config.yaml").write_text("the user's own\n")
    assert not _remove_if_untouched(theirs)  # not made by this process
    assert (theirs / "config.yaml").read_text() == "the user's own\n"
    ours = tmp_path / "ours"
    lock = hold("hydra.run.dir", ours)  # made here, as main() does for a new folder
    try:
        (ours / ".hydra").mkdir()
        (ours / "samples").mkdir()  # the job had begun: not untouched
        assert not _remove_if_untouched(ours)
        (ours / "samples").rmdir()
        assert _remove_if_untouched(ours)
        assert not ours.exists()
    finally:
        lock.release()


USER_LOSSES = """
    import sys

    import torch.nn.functional as F

    from ganexp.losses import GANLoss


    class Quits(GANLoss):
        def d_loss(self, real_out, fake_out):
            return F.softplus(-real_out).mean() + F.softplus(fake_out).mean()

        def g_loss(self, fake_out):
            sys.exit(3)


    class Plain(Quits):
        def g_loss(self, fake_out):
            return F.softplus(-fake_out).mean()
"""


@pytest.mark.slow
def test_a_users_sys_exit_fails_its_job_and_the_sweep_goes_on(tmp_path: Path) -> None:
    (tmp_path / "mylosses.py").write_text(textwrap.dedent(USER_LOSSES))
    sweep = tmp_path / "sweep"
    result = ganexp_cmd(
        "-m",
        *TOY,
        "loss._target_=mylosses.Quits,mylosses.Plain",
        "trainer.max_steps=3",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith(
        f"ganexp: sweep summary: {sweep}/summary.md (2 jobs, 1 failed)"
    )
    rows = read_csv(sweep / "summary.csv")
    assert [r["status"] for r in rows] == ["failed", "completed"]
    assert re.fullmatch(
        r"SystemExit\(3\) raised inside the job \(at mylosses\.py:\d+\)", rows[0]["error"]
    )
    assert rows[0]["steps"] == "0" and rows[1]["steps"] == "3"
