"""Checkpoints: atomic writes, safe loads, and finding the one to resume from.

A checkpoint is a plain dict of tensors, numbers and strings, so it loads with
``torch.load(weights_only=True)``: a file carrying a pickled object is refused and never runs.
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganexp.errors import ConfigError

LAST = "last.pt"


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


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` atomically: temporary file, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_checkpoint(path: Path, key: str = "resume") -> dict[str, Any]:
    """Load a ganexp checkpoint safely; ConfigError if it is missing, foreign or unsafe."""
    if not path.is_file():
        raise ConfigError(key, str(path), "no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as ex:
        first = str(ex).splitlines()[0]
        raise ConfigError(
            key, str(path), f"refused: not a plain ganexp checkpoint ({first})"
        ) from ex
    except (RuntimeError, EOFError, OSError) as ex:
        raise ConfigError(key, str(path), f"unreadable checkpoint ({ex})") from ex
    if not isinstance(state, dict) or "generator" not in state:
        raise ConfigError(key, str(path), "not a ganexp checkpoint (no generator weights)")
    return state


def find_resume_checkpoint(resume: str | None, run_dir: Path) -> Path | None:
    """The checkpoint to continue from: ``resume`` (a run folder or file), else this run
    folder's own ``checkpoints/last.pt`` if an earlier attempt left one."""
    if resume:
        target = Path(resume).expanduser()
        if target.is_dir():
            target = target / "checkpoints" / LAST
        if not target.is_file():
            raise ConfigError(
                "resume",
                resume,
                "must be a run folder holding checkpoints/last.pt or a checkpoint file",
            )
        return target
    own = run_dir / "checkpoints" / LAST
    return own if own.is_file() else None
