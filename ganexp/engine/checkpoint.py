"""Checkpoints: atomic writes, the last K kept, corruption detected, safe loads.

A checkpoint is a plain dict of tensors, numbers and strings, so it loads with
``torch.load(weights_only=True)``: a file carrying a pickled object is refused and its payload
never runs. Each ``step_NNNNNN.pt`` has a ``.sha256`` beside it; ``last.pt`` is a hard link to the
newest. Corruption is caught with or without that digest: the CRC-32 of every member of the
checkpoint's zip archive is checked too (torch's own reader does not). A file that is corrupt,
not a checkpoint, or a checkpoint missing what its reader needs (:data:`TRAINING`,
:data:`SAMPLING`) is skipped, with a message, for the one before it.
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
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganexp.engine.runfolder import write_atomic
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


def _link_atomic(source: Path, target: Path) -> None:
    """Make ``target`` name the same file as ``source``, replacing it atomically."""
    tmp = target.with_name(f".{target.name}.link")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(source, tmp)
    except OSError:  # no hard links on this file system: copy
        write_atomic(tmp, lambda f: f.write(source.read_bytes()))
    os.replace(tmp, target)


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` and its digest atomically; raise RunFailed if the disk refuses."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()  # serialized first: torch.save reports a failed write as RuntimeError
    torch.save(state, buffer)
    data = buffer.getbuffer()
    digest = hashlib.sha256(data).hexdigest()
    try:
        write_atomic(path, lambda f: f.write(data))
        write_atomic(_digest_path(path), lambda f: f.write(f"{digest}\n".encode()))
        _fsync_dir(path.parent)
    except OSError as ex:
        raise RunFailed(
            f"could not write checkpoint {path} ({ex.strerror or ex}); the previous checkpoint "
            "is intact"
        ) from ex


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _tensors(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()
    )


def _optimizer(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("state"), dict)
        and isinstance(value.get("param_groups"), list)
        and all(isinstance(group, dict) for group in value["param_groups"])
    )


def _rng(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("torch"), torch.Tensor)
        and isinstance(value.get("python"), list | tuple)
        and isinstance(value.get("numpy"), dict)
        and isinstance(value["numpy"].get("keys"), torch.Tensor)
    )


def _spec(value: Any) -> bool:
    """The fields of :class:`ganexp.data.DataSpec`, with their types."""
    fields = {"kind", "shape", "num_classes", "class_names", "size", "condition_channels"}
    return (
        isinstance(value, dict)
        and set(value) <= fields
        and value.get("kind") in ("image", "points")
        and isinstance(value.get("shape"), list | tuple)
        and all(_count(n) and n > 0 for n in value["shape"])
        and _count(value.get("num_classes"))
        and isinstance(value.get("class_names"), list | tuple)
        and all(isinstance(name, str) for name in value["class_names"])
        and (value.get("size") is None or _count(value["size"]))
        and _count(value.get("condition_channels", 0))
    )


def _is(kind: type) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, kind)


Contents = dict[str, tuple[Callable[[Any], bool], str]]
# What ganexp-sample and ganexp-eval read: the generator, the run's config and data spec.
SAMPLING: Contents = {
    "generator": (_tensors, "a dict of tensors"),
    "discriminator": (_tensors, "a dict of tensors"),
    "step": (_count, "an integer >= 0"),
    "config": (_is(dict), "the run's config as a dict"),
    "spec": (_spec, "the data's kind, shape, classes and size"),
}
# What a run continues from: everything the loop, its data and its random streams hold.
TRAINING: Contents = SAMPLING | {
    "opt_g": (_optimizer, "an optimizer's state dict"),
    "opt_d": (_optimizer, "an optimizer's state dict"),
    "images_seen": (_count, "an integer >= 0"),
    "skipped_steps": (_count, "an integer >= 0"),
    "precision": (_is(dict), "a dict"),
    "data": (_is(dict), "the data position as a dict"),
    "fixed": (_is(dict), "the fixed noise as a dict"),
    "rng": (_rng, "the random states (torch, python, numpy)"),
}
# Kept by some runs only; where present they must hold what their readers expect.
OPTIONAL: Contents = {
    "generator_ema": (_tensors, "a dict of tensors"),
    "historical_g": (_tensors, "a dict of tensors"),
    "historical_d": (_tensors, "a dict of tensors"),
    "semi_supervised": (_is(dict), "a dict"),
    "pool": (_is(dict), "a dict"),
    "ranks": (_is(list), "a list"),
    "wandb_id": (lambda v: v is None or isinstance(v, str), "a string or null"),
}


def check_contents(state: Any, path: Path, key: str, needs: Contents) -> None:
    """``state`` holds every entry of ``needs`` (and of :data:`OPTIONAL` present) with the type
    its reader expects; else one ConfigError line naming the entry."""
    if not isinstance(state, dict):
        what = f"it holds a {type(state).__name__}, not a dict"
        raise ConfigError(key, str(path), f"not a ganexp checkpoint ({what})")
    if "generator" not in state:
        raise ConfigError(key, str(path), "not a ganexp checkpoint (no generator weights)")
    for name in needs:
        if name not in state:
            raise ConfigError(key, str(path), f"incomplete checkpoint: it has no {name!r}")
    for name, (fits, expected) in (needs | OPTIONAL).items():
        if name in state and not fits(state[name]):
            shown = repr(state[name]) if isinstance(state[name], int | str | float) else ""
            found = shown[:40] or f"a {type(state[name]).__name__}"
            raise ConfigError(
                key, str(path), f"malformed checkpoint: {name!r} is {found}, must be {expected}"
            )


_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"\x80": "a pickle stream",
    b"\x1f\x8b": "a gzip file",
}


def _what_it_is(path: Path) -> str:
    """A guess at what a file that is not a checkpoint holds, from its first bytes."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "an empty file"
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            return kind
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary data of an unknown kind"
    return "text"


def _check_archive(path: Path, key: str) -> None:
    """A checkpoint is torch's zip archive: refuse anything else for what it is, and check the
    CRC-32 of every member (flipped bytes inside a tensor would load silently otherwise)."""
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            if f.read(4) == b"PK\x03\x04":  # a zip archive's start without its directory
                raise ConfigError(key, str(path), "unreadable checkpoint (truncated or damaged)")
        what = f"it is {_what_it_is(path)}, not a torch file"
        raise ConfigError(key, str(path), f"not a ganexp checkpoint: {what}")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as ex:
        raise ConfigError(key, str(path), f"corrupt checkpoint ({ex})") from None
    if bad is not None:
        raise ConfigError(key, str(path), f"corrupt checkpoint (CRC mismatch in {bad})")


def load_checkpoint(
    path: Path, key: str = "resume", needs: Contents | None = None
) -> dict[str, Any]:
    """Load one ganexp checkpoint safely; ConfigError if it is missing, corrupt, foreign,
    lacks an entry of ``needs``, or carries a pickled object (refused without running it)."""
    if not path.is_file():
        raise ConfigError(key, str(path), "no such checkpoint file")
    digest_file = _digest_path(path)
    try:
        if digest_file.is_file():
            expected = digest_file.read_text().strip()
            if sha256_file(path) != expected:
                raise ConfigError(key, str(path), "corrupt checkpoint (sha256 does not match)")
        _check_archive(path, key)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except ConfigError:
        raise
    except pickle.UnpicklingError as ex:
        found = re.search(r"(?:unsupported|Unsupported global:) GLOBAL (\S+)", str(ex))
        if not found:
            first = str(ex).strip().splitlines()[0] if str(ex).strip() else type(ex).__name__
            raise ConfigError(key, str(path), f"unreadable checkpoint ({first})") from None
        raise ConfigError(
            key,
            str(path),
            f"refused: not a plain ganexp checkpoint, it holds code ({found.group(1)})",
        ) from ex
    except (RuntimeError, EOFError, OSError, ValueError, UnicodeDecodeError) as ex:
        first = str(ex).strip().splitlines()[0] if str(ex).strip() else type(ex).__name__
        raise ConfigError(key, str(path), f"unreadable checkpoint ({first})") from ex
    check_contents(state, path, key, needs or {})
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

    def load_latest(
        self, key: str = "resume", needs: Contents | None = None
    ) -> tuple[dict[str, Any], Path] | None:
        """The newest checkpoint that loads and holds ``needs``, saying which ones were skipped;
        None if there is none. A checkpoint that holds code is refused outright."""
        candidates = [self.last, *self.steps()] if self.last.exists() else self.steps()
        errors = []
        for path in candidates:
            try:
                state = load_checkpoint(path, key, needs)
            except ConfigError as error:
                if "refused" in error.allowed:
                    raise
                errors.append(error)
                print(f"ganexp: skipping {path.name}: {error.allowed}", file=sys.stderr)
                continue
            return state, path
        if errors:
            newest = errors[0].allowed
            raise ConfigError(key, str(self.folder), f"no checkpoint in it can be read ({newest})")
        return None

    def holds_checkpoints(self) -> bool:
        return self.last.is_file() or bool(self.steps())


def checkpoint_folder(target: Path) -> CheckpointStore | None:
    """The checkpoints of ``target``: a run folder, or its ``checkpoints/`` folder."""
    for folder in (target / "checkpoints", target):
        store = CheckpointStore(folder)
        if store.holds_checkpoints():
            return store
    return None


def resume_source(resume: str | None, run_dir: Path) -> CheckpointStore | Path | None:
    """What to continue from: ``resume`` (a run folder or a checkpoint file), else this run
    folder's own checkpoints, if an earlier attempt left some."""
    if resume:
        target = Path(resume).expanduser()
        if target.is_file():
            return target
        store = checkpoint_folder(target) if target.is_dir() else None
        if store is None:
            raise ConfigError(
                "resume",
                resume,
                "must be a run folder holding checkpoints/last.pt or a checkpoint file",
            )
        return store
    own = CheckpointStore(run_dir / "checkpoints")
    return own if own.holds_checkpoints() else None


def load_resume(source: CheckpointStore | Path | None) -> tuple[dict[str, Any], Path] | None:
    if source is None:
        return None
    if isinstance(source, Path):
        return load_checkpoint(source, needs=TRAINING), source
    return source.load_latest(needs=TRAINING)
