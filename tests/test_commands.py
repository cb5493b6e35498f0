"""tests/commands.py runs a command in a forked child as its console script runs: the same exit
code, stdout and stderr as a real process, and a fresh process's sys.path (a module is found
through PYTHONPATH, never through the test process's own path)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from commands import BIN, run_command

TESTS = Path(__file__).parent


@pytest.mark.slow  # each case starts a real ganexp process to compare with
@pytest.mark.parametrize(
    ("args", "pythonpath", "expected"),
    [
        (["norm=bogus"], None, "norm='bogus': allowed: batch, group"),
        # tests/ is on this process's sys.path, not on a fresh one's: not importable
        (["loss._target_=commands.BIN"], None, "loss._target_='commands.BIN': cannot be imported"),
        (["loss._target_=commands.BIN"], str(TESTS), "loss._target_='commands.BIN': is not a"),
    ],
)
def test_a_forked_command_ends_as_the_real_process_does(
    tmp_path: Path, args: list[str], pythonpath: str | None, expected: str
) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    args = ["debug=smoke", "logger=none", *args, f"hydra.run.dir={tmp_path / 'run'}"]
    forked = run_command("ganexp", *args, cwd=tmp_path, env=env)
    real = subprocess.run(
        [str(BIN / "ganexp"), *args], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert (forked.returncode, forked.stdout, forked.stderr) == (
        real.returncode,
        real.stdout,
        real.stderr,
    )
    assert real.returncode == 2 and expected in real.stderr, real.stderr
    assert not (tmp_path / "run").exists()
