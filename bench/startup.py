"""Section 2: from a command to its first training step.

The figure is the wall time from launching ::

    ganexp experiment=smoke logger=none metrics.enabled=false trainer.max_steps=1 hydra.run.dir=TMP

until the process exits (a fresh run folder each time). It is an upper bound for the time to the
first step: it also includes that step's sample grid and checkpoint, and the exit. For context,
the floor that importing torch alone costs: ``python -c "import torch"``. The two commands
alternate, and each figure is the median of its runs.

With ``PYTHONDONTWRITEBYTECODE=1`` in the environment and no bytecode in the virtual environment,
every start compiles every imported module from source. Then, if asked, both commands are timed
again with a bytecode cache outside the virtual environment (``PYTHONPYCACHEPREFIX``, primed by one
untimed run): that is what any machine that writes bytecode sees from its second run on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from common import REPO, last_error_line, median

SMOKE = ("experiment=smoke", "logger=none", "metrics.enabled=false", "trainer.max_steps=1")


def _wall(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    return time.perf_counter() - start, proc.returncode, proc.stderr


def has_bytecode() -> bool:
    """Whether the installed torch has compiled bytecode next to its sources."""
    cache = Path(torch.__file__).parent / "__pycache__"
    return cache.is_dir() and any(cache.glob("*.pyc"))


def _timed_pair(tmp: Path, env: dict[str, str], repeats: int, tag: str) -> dict[str, Any]:
    """``repeats`` alternating runs of the ganexp command and of the import floor."""
    ganexp = str(Path(sys.executable).parent / "ganexp")
    command, floor, error = [], [], None
    for i in range(repeats):
        run_dir = tmp / f"startup-{tag}-{i}"
        seconds, code, stderr = _wall([ganexp, *SMOKE, f"hydra.run.dir={run_dir}"], env)
        if code != 0:
            error = f"exit {code}: {last_error_line(stderr)}"
            break
        command.append(seconds)
        floor.append(_wall([sys.executable, "-c", "import torch"], env)[0])
    return {
        "command_s": median(command),
        "command_runs_s": command,
        "import_torch_s": median(floor),
        "import_torch_runs_s": floor,
        "error": error,
    }


def startup(tmp: Path, *, repeats: int, with_bytecode_cache: bool) -> dict[str, Any]:
    env = dict(os.environ)
    no_bytecode = bool(sys.flags.dont_write_bytecode) and not has_bytecode()
    result: dict[str, Any] = {
        "command": "ganexp " + " ".join(SMOKE) + " hydra.run.dir=TMP",
        "no_bytecode": no_bytecode,
        "as_is": _timed_pair(tmp, env, repeats, "as-is"),
    }
    if no_bytecode and with_bytecode_cache:
        cached = env | {"PYTHONPYCACHEPREFIX": str(tmp / "pycache")}
        cached.pop("PYTHONDONTWRITEBYTECODE", None)
        prime = _timed_pair(tmp, cached, 1, "prime")  # writes the cache; not counted
        result["bytecode_cache"] = _timed_pair(tmp, cached, repeats, "cached")
        result["bytecode_cache"]["priming_run_s"] = prime["command_s"]
    return result
