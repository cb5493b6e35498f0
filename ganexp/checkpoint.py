"""Checkpoints: atomic writes, the last K kept, corruption detected, safe loads.

A checkpoint is a plain dict of tensors, numbers and strings, so it loads with
``torch.load(weights_only=True)``: a file carrying a pickled object is refused and its payload
never runs. Each ``step_NNNNNN.pt`` has a ``.sha256`` beside it; ``last.pt`` is a hard link to the
newest. A file whose bytes do not match its digest (or that does not load) is skipped, with a
message, for the one before it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import random
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganexp.errors import ConfigError, RunFailed

LAST = "last.pt"
BEST = "best.pt"


def rng_state() -> dict[str, Any]:
    """Every random state a run draws from, in types weights_only loading accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "gauss": gauss,
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuples(state["python"]))
    np_state = state["numpy"]
    keys = np_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(
        (np_state["kind"], keys, np_state["pos"], np_state["has_gauss"], np_state["gauss"])
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list | tuple) else value


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, write) -> None:
    """``write(file)`` into a temporary file, fsync it, rename it over ``path``. On failure
    (a full disk) the temporary file is removed and ``path`` is left as it was."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _link_atomic(source: Path, target: Path) -> None:
    """Make ``target`` name the same file as ``source``, replacing it atomically."""
    tmp = target.with_name(f".{target.name}.link")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(source, tmp)
    except OSError:  # no hard links on this file system: copy
        _write_atomic(tmp, lambda f: f.write(source.read_bytes()))
    os.replace(tmp, target)


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` and its digest atomically; raise RunFailed if the disk refuses."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()  # serialized first: torch.save reports a failed write as RuntimeError
    torch.save(state, buffer)
    data = buffer.getbuffer()
    digest = hashlib.sha256(data).hexdigest()
    try:
        _write_atomic(path, lambda f: f.write(data))
        _write_atomic(_digest_path(path), lambda f: f.write(f"{digest}\n".encode()))
        _fsync_dir(path.parent)
    except OSError as ex:
        raise RunFailed(
            f"could not write checkpoint {path} ({ex.strerror or ex}); the previous checkpoint "
            "is intact"
        ) from ex


def load_checkpoint(path: Path, key: str = "resume") -> dict[str, Any]:
    """Load one ganexp checkpoint safely; ConfigError if it is missing, corrupt, foreign or
    carries a pickled object (which is refused without running it)."""
    if not path.is_file():
        raise ConfigError(key, str(path), "no such checkpoint file")
    digest_file = _digest_path(path)
    if digest_file.is_file():
        expected = digest_file.read_text().strip()
        if sha256_file(path) != expected:
            raise ConfigError(key, str(path), "corrupt checkpoint (sha256 does not match)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as ex:
        found = re.search(r"(?:unsupported|Unsupported global:) GLOBAL (\S+)", str(ex))
        what = found.group(1) if found else "an object a weights-only load refuses"
        raise ConfigError(
            key, str(path), f"refused: not a plain ganexp checkpoint, it holds code ({what})"
        ) from ex
    except (RuntimeError, EOFError, OSError, ValueError) as ex:
        first = str(ex).strip().splitlines()[0] if str(ex).strip() else type(ex).__name__
        raise ConfigError(key, str(path), f"unreadable checkpoint ({first})") from ex
    if not isinstance(state, dict) or "generator" not in state:
        raise ConfigError(key, str(path), "not a ganexp checkpoint (no generator weights)")
    return state


class CheckpointStore:
    """The checkpoints of one run folder: ``step_NNNNNN.pt`` (the last ``keep``) and ``last.pt``."""

    def __init__(self, folder: Path, keep: int = 3) -> None:
        self.folder = folder
        self.keep = keep

    @property
    def last(self) -> Path:
        return self.folder / LAST

    def steps(self) -> list[Path]:
        """Step checkpoints, newest first (by number: step 1000000 has seven digits)."""
        found = [p for p in self.folder.glob("step_*.pt") if p.stem[5:].isdigit()]
        return sorted(found, key=lambda p: int(p.stem[5:]), reverse=True)

    def save(self, state: dict[str, Any], step: int) -> Path:
        path = self.folder / f"step_{step:06d}.pt"
        save_checkpoint(state, path)
        _link_atomic(_digest_path(path), _digest_path(self.last))
        _link_atomic(path, self.last)
        for old in self.steps()[self.keep :]:
            old.unlink()
            _digest_path(old).unlink(missing_ok=True)
        return path

    def save_as(self, state: dict[str, Any], name: str) -> Path:
        path = self.folder / name
        save_checkpoint(state, path)
        return path

    def load_latest(self) -> tuple[dict[str, Any], Path] | None:
        """The newest checkpoint that loads, saying which ones were skipped; None if none."""
        candidates = [self.last, *self.steps()] if self.last.exists() else self.steps()
        errors = []
        for path in candidates:
            try:
                state = load_checkpoint(path)
            except ConfigError as error:
                if "refused" in error.allowed:
                    raise
                errors.append(error)
                print(f"ganexp: skipping {path.name}: {error.allowed}", file=sys.stderr)
                continue
            return state, path
        if errors:
            raise ConfigError("resume", str(self.folder), "no checkpoint in it can be read")
        return None


def resume_source(resume: str | None, run_dir: Path) -> CheckpointStore | Path | None:
    """What to continue from: ``resume`` (a run folder or a checkpoint file), else this run
    folder's own checkpoints, if an earlier attempt left some."""
    if resume:
        target = Path(resume).expanduser()
        if target.is_file():
            return target
        folder = target / "checkpoints"
        if not (folder / LAST).is_file() and not any(folder.glob("step_*.pt")):
            raise ConfigError(
                "resume",
                resume,
                "must be a run folder holding checkpoints/last.pt or a checkpoint file",
            )
        return CheckpointStore(folder)
    own = CheckpointStore(run_dir / "checkpoints")
    return own if own.last.exists() or own.steps() else None


def load_resume(source: CheckpointStore | Path | None) -> tuple[dict[str, Any], Path] | None:
    if source is None:
        return None
    if isinstance(source, Path):
        return load_checkpoint(source), source
    return source.load_latest()
