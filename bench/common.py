"""What every section of the benchmark shares: composing a config the way ``ganexp`` does,
building a session of the real training path, reading memory, and printing tables."""

from __future__ import annotations

import contextlib
import io
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_module
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ganexp.config import RunConfig, register_schema
from ganexp.errors import ConfigError
from ganexp.session.preflight import check_config, composition_error

REPO = Path(__file__).resolve().parent.parent
# Every in-process session: no W&B, no evaluation hook (section 3 measures evaluation on its own).
QUIET = ("logger=none", "metrics.enabled=false")

register_schema()


# -- configs and sessions ------------------------------------------------------------------------
def compose_config(overrides: Sequence[str]) -> tuple[DictConfig, RunConfig]:
    """The config ``ganexp OVERRIDES`` would run, composed and checked as ``ganexp`` checks it.

    Raises :class:`ConfigError` (one line) for anything ``ganexp`` would refuse, including a key
    that does not exist (yet) in the schema.
    """
    with initialize_config_module("ganexp.conf", version_base="1.3"):
        try:
            cfg = compose("config", overrides=list(overrides))
        except (HydraException, OmegaConfBaseException) as ex:
            raise composition_error(ex) from ex
    return cfg, check_config(cfg)


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as a run records it."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def make_session(overrides: Sequence[str], run_dir: Path):
    """``ganexp.session.run.setup`` of the composed config in ``run_dir``: the real training path.

    What setup prints (the device line) is kept out of the benchmark's output.
    """
    from ganexp.session.run import setup

    cfg, run_cfg = compose_config([*QUIET, *overrides])
    with contextlib.redirect_stderr(io.StringIO()):
        return setup(run_cfg, resolved(cfg), run_dir, name="bench", group=None)


def short_error(error: BaseException) -> str:
    """One line for a table cell: a ConfigError's own message, else the type and first line."""
    if isinstance(error, ConfigError):
        return str(error)
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def sync(device: torch.device) -> None:
    """Wait for queued device work (a no-op on the CPU, where every op is synchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- statistics and memory -----------------------------------------------------------------------
def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def rss_mb() -> float:
    """Resident memory of this process now (VmRSS of /proc/self/status), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss, kB on Linux), in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_measured(cmd: Sequence[str], cwd: Path = REPO) -> tuple[int, float, str]:
    """Run ``cmd`` to its end: (exit code, peak RSS of that process in MB, its stderr).

    The command runs under ``peak_rss.py``, a small process whose only child it is (see there).
    """
    wrapper = Path(__file__).with_name("peak_rss.py")
    proc = subprocess.run(
        [sys.executable, str(wrapper), *cmd], cwd=cwd, capture_output=True, text=True
    )
    lines = proc.stdout.split()
    peak_mb = int(lines[-1]) / 1024 if lines else float("nan")
    return proc.returncode, peak_mb, proc.stderr


def last_error_line(stderr: str) -> str:
    """What a failed ``ganexp`` command said: its ``ganexp: error:`` line, else its last line."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("ganexp: error: "):
            return line.removeprefix("ganexp: error: ")
    return lines[-1] if lines else "no output"


# -- the machine ---------------------------------------------------------------------------------
class OtherLoad:
    """How many cores other processes kept busy since this was made: the machine's busy time
    (/proc/stat, steal included) minus this process's and its finished children's CPU time.

    On a shared machine this says how far a section's wall-clock figures were slowed: torch's
    threads wait for each other, so a core taken by another process can slow a step several times.
    """

    def __init__(self) -> None:
        self.start = self._read()

    @staticmethod
    def _read() -> tuple[float, float, float]:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle, iowait
        own = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            usage = resource.getrusage(who)
            own += usage.ru_utime + usage.ru_stime
        return time.perf_counter(), busy, own

    def cores(self) -> float:
        (t0, busy0, own0), (t1, busy1, own1) = self.start, self._read()
        return max(0.0, (busy1 - busy0) - (own1 - own0)) / max(t1 - t0, 1e-9)


BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _git(*args: str) -> str:
    """A read-only git query (no optional locks: never refreshes the index)."""
    try:
        out = subprocess.run(
            ["git", "--no-optional-locks", *args], cwd=REPO, capture_output=True, text=True
        )
    except OSError:
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def machine() -> dict[str, Any]:
    """What the figures depend on: CPU, cores, flags, torch, load, the source version."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():  # the first processor's fields
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    model = fields.get("model name") or platform.processor() or "unknown"
    flags = set(fields.get("flags", "").split())
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no", "--", "ganexp"))
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "bf16_flags": {flag: flag in flags for flag in BF16_FLAGS},
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "load_average": list(os.getloadavg()),
        "dont_write_bytecode": bool(sys.flags.dont_write_bytecode),
        "ganexp_commit": commit + (" + uncommitted changes" if dirty else ""),
    }


# -- output --------------------------------------------------------------------------------------
@dataclass
class Table:
    """Rows of cells printed as aligned columns; numbers (and "x" ratios) right-aligned."""

    header: Sequence[str] | None = None  # None: no header line

    def __post_init__(self) -> None:
        self.rows: list[list[str]] = []

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def lines(self, indent: str = "  ") -> Iterator[str]:
        rows = [list(self.header), *self.rows] if self.header else list(self.rows)
        columns = max(len(r) for r in rows)
        rows = [r + [""] * (columns - len(r)) for r in rows]
        # the last column is free text (notes, errors): it is not padded
        widths = [max(len(r[i]) for r in rows) for i in range(columns - 1)]
        for row in rows:
            cells = [
                cell.rjust(width) if i and _numeric(cell) else cell.ljust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=False))
            ]
            yield (indent + "  ".join([*cells, row[-1]])).rstrip()

    def print(self) -> None:
        for line in self.lines():
            print(line)


def _numeric(cell: str) -> bool:
    head = cell.split(" ")[0].rstrip("x%").lstrip("+-")
    return head.replace(".", "", 1).replace(",", "").isdigit()


def section(title: str) -> None:
    print(f"\n{title}", flush=True)
