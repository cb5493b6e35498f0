"""Several processes, one run: torchrun with gloo on the CPU, two processes.

Every process must hold the same weights after training, only rank 0 may write (one W&B run, one
metrics line per logged step), the processes split each batch between them, and a run stopped
and continued must end with the weights of an uninterrupted one.
"""

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
from helpers import smoke_config

from ganexp.data import build_data
from ganexp.engine.checkpoint import load_checkpoint
from ganexp.engine.distributed import World
from ganexp.errors import ConfigError
from ganexp.session.preflight import check_processes
from ganexp.tracking.runfile import load_run

TESTS = Path(__file__).parent
GANEXP = str(Path(sys.executable).with_name("ganexp"))
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
SMOKE = ("experiment=smoke", "trainer.max_steps=6", "metrics.enabled=false")


def torchrun(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(TESTS)} | (env or {})
    result = subprocess.run(
        [*TORCHRUN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=400
    )
    assert result.returncode == 0 or not check, result.stderr[-3000:]
    return result


def ganexp_run(*overrides: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return torchrun("-m", "ganexp", *SMOKE, *overrides, cwd=cwd)


def params(state: dict) -> dict[str, torch.Tensor]:
    nets = ("generator", "discriminator")
    return {f"{net}.{key}": value for net in nets for key, value in state[net].items()}


@pytest.mark.parametrize(
    "overrides",
    [
        # spectral norm in D: its power-iteration vectors are buffers updated in place
        ("norm.discriminator=spectral",),
        # several critic steps, and the penalty's double backward through D
        ("loss=wgan_gp", "norm.discriminator=layer", "trainer.n_critic=2"),
    ],
    ids=["bce-spectral", "wgan_gp"],
)
@pytest.mark.slow
def test_two_processes_hold_identical_weights_after_training(
    tmp_path: Path, overrides: tuple[str, ...]
) -> None:
    overrides = ("experiment=smoke", "metrics.enabled=false", *overrides)
    torchrun(str(TESTS / "ddp_worker.py"), str(tmp_path / "run"), str(tmp_path), *overrides)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    w0, w1 = params(rank0), params(rank1)
    assert w0.keys() == w1.keys()
    inputs_differed = False
    for key, value in w0.items():
        if "running_" in key or "num_batches" in key:
            # batch norm statistics are each process's own (rank 0's are saved): they show that
            # the processes computed on different inputs, so equal weights come from DDP
            inputs_differed |= not torch.equal(value, w1[key])
        else:
            assert torch.equal(value, w1[key]), key
        assert torch.equal(value, params(saved)[key]), key
    assert inputs_differed
    initial = load_checkpoint(next((tmp_path / "run" / "checkpoints").glob("step_000003.pt")))
    assert not torch.equal(params(initial)["generator.net.0.weight"], w0["generator.net.0.weight"])


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A torchrun run of the smoke preset, 6 steps, W&B offline, in a folder of its own choosing
    (outputs/DATE/TIME under its working folder): the folder and the command's stderr."""
    cwd = tmp_path_factory.mktemp("torchrun")
    result = ganexp_run("logger.mode=offline", cwd=cwd)
    folders = list((cwd / "outputs").glob("*/*"))
    assert len(folders) == 1, folders  # rank 1 used rank 0's time-stamped folder
    return folders[0], result.stderr


@pytest.mark.slow
def test_torchrun_writes_one_run_folder_one_wandb_run_and_each_log_line_once(
    whole_run: tuple[Path, str],
) -> None:
    run_dir, stderr = whole_run
    assert stderr.count("device=auto") == 1  # one process speaks
    runs = list(run_dir.parents[2].rglob("run-*.wandb"))  # anywhere under its working folder
    assert len(runs) == 1, runs
    wandb_run = load_run(runs[0])
    assert wandb_run.exit_code == 0
    logged = [row["step"] for row in wandb_run.history if "loss/d" in row]
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == logged == [2, 4, 6]
    assert json.loads((run_dir / "job.json").read_text())["status"] == "completed"
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert len(state["ranks"]) == 2
    rank0, rank1 = (own["rng"]["torch"] for own in state["ranks"])
    assert not torch.equal(rank0, rank1)  # each process draws its own noise


@pytest.mark.slow
def test_stopped_and_continued_run_ends_with_the_uninterrupted_weights(
    tmp_path: Path, whole_run: tuple[Path, str]
) -> None:
    whole, halves = whole_run[0], tmp_path / "halves"
    ganexp_run("logger=none", f"hydra.run.dir={halves}", "trainer.max_steps=3")
    result = ganexp_run("logger=none", f"hydra.run.dir={halves}")
    assert "resuming from" in result.stderr
    a = load_checkpoint(whole / "checkpoints" / "last.pt")
    b = load_checkpoint(halves / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 6
    for key, value in params(a).items():
        assert torch.equal(value, params(b)[key]), key


@pytest.mark.slow
def test_submitit_tasks_of_one_job_train_as_one_run(tmp_path: Path) -> None:
    """hydra.launcher.tasks_per_node=2: submitit starts two processes per job; they join one
    process group from submitit's environment, as the tasks of a multi-node Slurm job do."""
    sweep = tmp_path / "sweep"
    launcher = ("hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2")
    cmd = [GANEXP, "-m", *launcher, f"hydra.sweep.dir={sweep}", *SMOKE, "logger.mode=offline"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.err"))
    assert "x 2 processes" in logs
    assert len(list((sweep / "0" / "wandb").glob("offline-run-*"))) == 1
    assert len(load_checkpoint(sweep / "0" / "checkpoints" / "last.pt")["ranks"]) == 2
    assert json.loads((sweep / "0" / "job.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_a_nan_in_one_process_stops_both_at_that_step(tmp_path: Path) -> None:
    overrides = ("experiment=smoke", "metrics.enabled=false", "trainer.checkpoint_every=2")
    worker = (str(TESTS / "ddp_worker.py"), str(tmp_path / "run"), str(tmp_path))
    result = torchrun(*worker, *overrides, env={"GANEXP_NAN_AT": "1:5"}, check=False)
    assert result.returncode != 0
    reports = {path.name: path.read_text() for path in tmp_path.glob("rank*.error")}
    assert reports.keys() == {"rank0.error", "rank1.error"}, result.stderr[-3000:]
    assert reports["rank0.error"] == reports["rank1.error"]  # both stop at once, one report:
    # the first in rank order, rank 0's, whose G loss turned NaN through the averaged gradients
    assert reports["rank0.error"].startswith("non-finite loss/g at step 5;")
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in params(state).values() if v.is_floating_point())


def _rank_pid(marker: str, rank: int) -> int | None:
    """The pid of the worker process with ``rank`` among those started with ``marker``."""
    wanted = {f"GANEXP_TEST={marker}".encode(), f"RANK={rank}".encode()}
    for proc in Path("/proc").iterdir():
        try:
            environ = set((proc / "environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if proc.name.isdigit() and wanted <= environ:
            return int(proc.name)
    return None


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_one_step_and_the_run_continues(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    args = [*TORCHRUN, "-m", "ganexp", *SMOKE, "logger=none", f"hydra.run.dir={run_dir}"]
    long_run = ["trainer.max_steps=400", "trainer.log_every=1", "trainer.checkpoint_every=1000"]
    env = os.environ | {"GANEXP_TEST": str(tmp_path)}  # unique to this test run
    proc = subprocess.Popen(
        [*args, *long_run], env=env, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        metrics = run_dir / "metrics.jsonl"
        deadline = time.monotonic() + 300
        while not (metrics.exists() and metrics.read_text().count("\n") >= 3):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
            time.sleep(0.2)
        os.kill(_rank_pid(str(tmp_path), 1), signal.SIGTERM)  # rank 1 only
        stderr = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:  # a hang: leave no processes behind
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0  # torchrun reports its workers' exit 143
    assert stderr.count("stopped by SIGTERM") == 2, stderr[-3000:]  # both ranks, one step
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert 3 <= state["step"] < 400 and len(state["ranks"]) == 2
    further = state["step"] + 2  # the same command, two steps further
    result = subprocess.run(
        [*args, f"trainer.max_steps={further}"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming from {run_dir / 'checkpoints' / 'last.pt'} at step {state['step']}" in (
        result.stderr
    )
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == further


def test_processes_split_every_batch_between_them() -> None:
    cfg, _ = smoke_config()
    device = torch.device("cpu")
    whole = build_data(cfg.data, 32, device, seed=3)
    parts = [build_data(cfg.data, 32, device, seed=3, world=World(rank, 2)) for rank in (0, 1)]
    for _ in range(10):  # more than one epoch of the 256 examples
        images, labels = whole.next_batch()
        split = [part.next_batch() for part in parts]
        assert all(len(x) == 16 for x, _ in split)
        assert torch.equal(torch.cat([x for x, _ in split]), images)
        assert torch.equal(torch.cat([y for _, y in split]), labels)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (("trainer.batch_size=30",), "trainer.batch_size"),
        (("norm.sync_batchnorm=true",), "norm.sync_batchnorm"),
        (("trainer.simultaneous=true", "loss.consensus_weight=1"), "loss.consensus_weight"),
    ],
)
def test_what_several_processes_need_is_checked_first(
    overrides: tuple[str, ...], key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    cfg, _ = smoke_config(*overrides)
    with pytest.raises(ConfigError) as error:
        check_processes(cfg, "cpu")
    assert error.value.key == key


@pytest.mark.slow
def test_a_sweep_under_torchrun_is_refused_in_one_line(tmp_path: Path) -> None:
    env = os.environ | {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}
    result = subprocess.run(
        [GANEXP, "-m", "experiment=smoke", "seed=0,1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "torchrun" in result.stderr
    assert not (tmp_path / "multirun").exists()
