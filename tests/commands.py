"""ganexp's commands run as a user runs them, without paying Python's start and imports each time.

A ganexp process spends about 7 s of CPU importing torch, torchvision, torchmetrics and Hydra
before its first check, and the suite starts a hundred of them. :func:`run_command` runs
``ganexp ARGS`` (or ``ganexp-sample``, ``ganexp-eval``, ``ganexp-inspect``) in a child forked
from a server that imported those modules once (multiprocessing's forkserver, with them
preloaded): the child gets the command's argv, working folder and environment, its own stdout
and stderr, and runs the command's own entry point to its exit code and ends as the interpreter
does (threads joined, then atexit handlers), exactly as the console script would. Nothing else
is shared: the server never runs a command itself, so every child starts from the state of a
fresh process that has done its imports.

What a forked child cannot reproduce runs as a real process (:func:`run_command` decides): an
environment that leaves torch's thread count to a default other than the server's. Tests of a
process's life (signals, kills, a held folder, torchrun, submitit) start real processes
themselves.
"""

from __future__ import annotations

import atexit
import functools
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
import warnings
from pathlib import Path

BIN = Path(sys.executable).parent
ENTRY_POINTS = {
    "ganexp": ("ganexp.cli.train", "main"),
    "ganexp-sample": ("ganexp.cli.sample", "cli"),
    "ganexp-eval": ("ganexp.cli.evaluate", "cli"),
    "ganexp-inspect": ("ganexp.cli.inspect", "cli"),
}
# imported once by the server; a command's own modules (its tasks, metrics) come with them. Not
# wandb, which makes a temporary folder at import (its media) that the first child to exit would
# remove from under every later one: each command imports it itself, as a fresh process does.
PRELOAD = [
    "torch",
    "torchvision",
    "torchmetrics",
    "matplotlib.pyplot",
    "ganexp.cli.train",
    "ganexp.cli.sample",
    "ganexp.cli.evaluate",
    "ganexp.session.run",
    "ganexp.tasks",
    "ganexp.data",
    "ganexp.metrics.evaluator",
]
_context: multiprocessing.context.ForkServerContext | None = None


def _server() -> multiprocessing.context.ForkServerContext:
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


@functools.cache
def _base_path() -> list[str]:
    """The sys.path entries every fresh interpreter of this venv has (the standard library and
    site-packages), without the ones pytest added to this process's."""
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    shown = subprocess.run(
        [sys.executable, "-c", "import json, sys; print(json.dumps(sys.path[1:]))"],
        env=clean,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(shown.stdout)


def _exit_code(code: object) -> int:
    """The exit status Python gives ``sys.exit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _child(
    program: str,
    args: list[str],
    cwd: str,
    env: dict[str, str],
    out: str,
    err: str | None,
    base_path: list[str],
) -> None:
    """The command, in the forked child: as the console script runs it, then exit. ``err``
    None: stderr goes where stdout goes."""
    os.dup2(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 1)
    if err is None:
        os.dup2(1, 2)
    else:
        os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    del sys.modules[__name__]  # imported by the server to run this function; not the command's
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    # a console script's sys.path: its own folder, then PYTHONPATH, then the interpreter's
    extra = [entry for entry in env.get("PYTHONPATH", "").split(os.pathsep) if entry]
    sys.path[:] = [str(BIN), *extra, *base_path]
    if env.get("PYTHONWARNINGS") == "ignore":
        warnings.simplefilter("ignore")
    if "OMP_NUM_THREADS" in env:  # what torch reads at import
        import torch

        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    module, function = ENTRY_POINTS[program]
    sys.argv = [str(BIN / program), *args]
    code = 0
    try:
        entry = getattr(__import__(module, fromlist=[function]), function)
        code = _exit_code(entry())
    except SystemExit as stop:
        code = _exit_code(stop.code)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = -signal.SIGINT
    except BaseException:
        traceback.print_exc()
        code = 1
    try:  # as the interpreter ends: join the threads (and their exit hooks), then atexit's
        threading._shutdown()
        atexit._run_exitfuncs()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    if code == -signal.SIGINT:  # as Python dies of an uncaught KeyboardInterrupt
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)


def _forkable(env: dict[str, str]) -> bool:
    """Whether a child of the server starts as a fresh process would under ``env``: torch's
    thread count is read at import, and a child can set it again when ``env`` names it (or
    leaves it to the same default as this process's)."""
    wanted = env.get("OMP_NUM_THREADS")
    return (wanted or "").isdigit() or wanted == os.environ.get("OMP_NUM_THREADS")


def run_command(
    program: str,
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    merge_stderr: bool = False,
) -> subprocess.CompletedProcess[str]:
    """``program ARGS`` (a ganexp console script) in ``cwd`` with ``env``, to its end: its exit
    code, stdout and stderr (``merge_stderr``: both in stdout), as :func:`subprocess.run` gives
    them. The command starts its own W&B service, as a user's command would: a WANDB_SERVICE
    that this test process's own runs left in ``env`` is dropped. ``cwd`` and ``env`` default
    to this process's."""
    cwd = Path.cwd() if cwd is None else cwd
    env = {
        key: value
        for key, value in (os.environ if env is None else env).items()
        if key != "WANDB_SERVICE"
    }
    if not _forkable(env):
        return subprocess.run(
            [str(BIN / program), *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
            text=True,
            timeout=timeout,
        )
    with tempfile.TemporaryDirectory() as tmp:
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        stderr = None if merge_stderr else str(err)
        child = _server().Process(
            target=_child,
            args=(program, list(args), str(cwd), dict(env), str(out), stderr, _base_path()),
        )
        child.start()
        child.join(timeout)
        if child.exitcode is None:
            child.kill()
            child.join()
            raise subprocess.TimeoutExpired([program, *args], timeout)
        return subprocess.CompletedProcess(
            [program, *args],
            child.exitcode,
            out.read_text() if out.exists() else "",
            None if merge_stderr else (err.read_text() if err.exists() else ""),
        )
