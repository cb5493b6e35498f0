"""A reader for W&B run files (``wandb/offline-run-*/run-<id>.wandb``): what ``ganexp-inspect``
shows and what the tests read back.

wandb no longer ships a Python reader for its transaction log, so this module decodes it
directly (by hand for that reason: no kept library reads the format). The layout (checked
against wandb 0.31 / wandb-core, ``core/pkg/leveldb``) is:

* A 7-byte W&B file header: ident ``b":W&B"``, magic ``0xBEE1`` as little-endian uint16
  (bytes ``e1 be``) and a one-byte store version, i.e. ``3a 57 26 42 e1 be 00`` for
  version 0.  Versions 0 and 1 are accepted (their chunk framing is identical).
* A LevelDB-style record log split into 32 KiB blocks.  Block boundaries are absolute file
  offsets (the file header occupies the first 7 bytes of block 0).  Each chunk has a 7-byte
  header: uint32 checksum, uint16 payload length (both little-endian) and a one-byte type
  (FULL=1, FIRST=2, MIDDLE=3, LAST=4).  A block tail shorter than a chunk header is zero
  padding.
* Each reassembled record is a serialized ``wandb_internal_pb2.Record``.

Checksums are always verified.  Unlike upstream LevelDB (masked CRC-32C), W&B uses the
plain IEEE CRC-32 (``zlib.crc32``, unmasked) over the type byte followed by the payload,
so verification needs nothing beyond the standard library.

Error policy: a bad file header, a checksum mismatch, an impossible chunk sequence or an
undecodable record raises :class:`RunFileError`.  A file that simply *ends early* (cut in
the middle of a chunk or of a multi-chunk record, as happens while wandb is still writing)
is not an error by default: every complete record before the cut is returned and the
partial one is dropped.  Pass ``strict=True`` to raise :class:`RunFileError` instead.
"""

from __future__ import annotations

import contextlib
import json
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError
from wandb.proto import wandb_internal_pb2 as pb

__all__ = [
    "BLOCK_SIZE",
    "FILE_HEADER",
    "NoRunFile",
    "RunFile",
    "RunFileError",
    "find_run_file",
    "image_keys",
    "load_run",
    "read_records",
]

HEADER_IDENT = b":W&B"
HEADER_MAGIC = 0xBEE1
SUPPORTED_VERSIONS = frozenset({0, 1})
#: Header written by current wandb releases (store version 0).
FILE_HEADER = struct.pack("<4sHB", HEADER_IDENT, HEADER_MAGIC, 0)
BLOCK_SIZE = 32 * 1024
CHUNK_HEADER = struct.Struct("<IHB")  # checksum, length, type

FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class NoRunFile(FileNotFoundError):
    """Not exactly one run file where one was looked for."""


class RunFileError(ValueError):
    """The file is not a W&B run file, or its content is corrupt (or truncated, if strict)."""


def _chunk_crc(chunk_type: int, payload: bytes) -> int:
    """IEEE CRC-32 of the type byte followed by the payload, as wandb-core writes it."""
    return zlib.crc32(payload, zlib.crc32(bytes((chunk_type,))))


def _check_file_header(data: bytes, source: str) -> None:
    if len(data) < len(FILE_HEADER):
        raise RunFileError(f"{source}: too short for a W&B file header ({len(data)} bytes)")
    ident, magic, version = struct.unpack_from("<4sHB", data)
    if ident != HEADER_IDENT or magic != HEADER_MAGIC:
        raise RunFileError(
            f"{source}: invalid W&B file header {data[: len(FILE_HEADER)].hex(' ')} "
            f"(expected {FILE_HEADER.hex(' ')})"
        )
    if version not in SUPPORTED_VERSIONS:
        raise RunFileError(f"{source}: unsupported W&B store version {version}")


def _split_records(data: bytes, source: str, *, strict: bool) -> list[bytes]:
    """Reassemble the record payloads of a whole file (header included in ``data``)."""
    _check_file_header(data, source)
    payloads: list[bytes] = []
    pending: bytearray | None = None  # payload of an unfinished FIRST..LAST record
    pos = len(FILE_HEADER)
    size = len(data)

    def truncated(what: str) -> list[bytes]:
        if strict:
            raise RunFileError(f"{source}: truncated at offset {size} ({what})")
        return payloads

    while pos < size:
        block_left = BLOCK_SIZE - pos % BLOCK_SIZE
        if block_left < CHUNK_HEADER.size:
            if any(data[pos : pos + block_left]):
                raise RunFileError(f"{source}: non-zero block trailer at offset {pos}")
            pos += block_left
            continue
        if size - pos < CHUNK_HEADER.size:
            return truncated("partial chunk header")
        checksum, length, chunk_type = CHUNK_HEADER.unpack_from(data, pos)
        if checksum == length == chunk_type == 0 and pending is None:
            # Zero-filled rest of block (preallocated file); skip it like wandb-core does.
            pos += block_left
            continue
        start = pos + CHUNK_HEADER.size
        end = start + length
        if end - pos > block_left:
            raise RunFileError(f"{source}: chunk at offset {pos} overflows its block")
        if end > size:
            return truncated("partial chunk payload")
        payload = data[start:end]
        if _chunk_crc(chunk_type, payload) != checksum:
            raise RunFileError(f"{source}: checksum mismatch in chunk at offset {pos}")
        if chunk_type in (FULL, FIRST) and pending is not None:
            raise RunFileError(f"{source}: unterminated multi-chunk record before offset {pos}")
        if chunk_type in (MIDDLE, LAST) and pending is None:
            raise RunFileError(f"{source}: continuation chunk without a start at offset {pos}")
        if chunk_type == FULL:
            payloads.append(payload)
        elif chunk_type == FIRST:
            pending = bytearray(payload)
        elif chunk_type in (MIDDLE, LAST):
            assert pending is not None
            pending += payload
            if chunk_type == LAST:
                payloads.append(bytes(pending))
                pending = None
        else:
            raise RunFileError(f"{source}: unknown chunk type {chunk_type} at offset {pos}")
        pos = end

    if pending is not None:
        return truncated("unfinished multi-chunk record")
    return payloads


def read_records(path: str | Path, *, strict: bool = False) -> list[pb.Record]:
    """Return every complete ``Record`` in the run file at ``path``, in file order.

    Raises :class:`RunFileError` for a bad header or corrupt data.  A truncated tail is
    silently dropped unless ``strict`` is true (see the module docstring).
    """
    path = Path(path)
    records: list[pb.Record] = []
    for index, payload in enumerate(_split_records(path.read_bytes(), str(path), strict=strict)):
        record = pb.Record()
        try:
            record.ParseFromString(payload)
        except DecodeError as exc:
            raise RunFileError(f"{path}: record #{index} is not a valid Record: {exc}") from exc
        records.append(record)
    return records


def find_run_file(run_dir: Path) -> Path:
    """Return the single ``run-*.wandb`` file for ``run_dir``.

    ``run_dir`` may be the ``offline-run-*`` folder itself, a ``wandb/`` folder, or a folder
    containing ``wandb/`` (e.g. a Hydra run directory).  The ``latest-run`` symlink is
    ignored.  Raises :class:`NoRunFile` unless exactly one file is found.
    """
    run_dir = Path(run_dir)
    found = sorted(run_dir.glob("run-*.wandb"))
    if not found:
        found = sorted(run_dir.glob("offline-run-*/run-*.wandb"))
    if not found:
        found = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    if len(found) != 1:
        raise NoRunFile(
            f"expected exactly one W&B run file under {run_dir}, found {len(found)}"
            + (f": {', '.join(str(p) for p in found)}" if found else "")
        )
    return found[0]


def _item_path(item: Any) -> list[str]:
    """Key path of a history/summary/config item: ``nested_key`` if set, else ``[key]``."""
    return list(item.nested_key) if item.nested_key else [item.key]


def _set_path(target: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        child = target.get(key)
        if not isinstance(child, dict):
            child = target[key] = {}
        target = child
    target[keys[-1]] = value


def _remove_path(target: dict[str, Any], keys: list[str]) -> None:
    for key in keys[:-1]:
        child = target.get(key)
        if not isinstance(child, dict):
            return
        target = child
    target.pop(keys[-1], None)


def _apply_updates(target: dict[str, Any], updates: Any, removes: Any) -> None:
    for item in updates:
        _set_path(target, _item_path(item), json.loads(item.value_json))
    for item in removes:
        _remove_path(target, _item_path(item))


@dataclass
class RunFile:
    """Decoded content of one run file (see :func:`load_run`).

    Attributes:
        path: the ``.wandb`` file.
        records: every decoded record, in order.
        run: the first ``RunRecord`` (id, project, run_group, job_type, tags, display_name),
            or ``None`` if the file has none.
        config: the merged config: plain JSON-decoded values, nested dicts kept nested.  The
            run file stores plain values (no ``{"value": ..., "desc": ...}`` wrappers, which
            only exist in ``config.yaml`` / the public API), so nothing is unwrapped.  The
            internal ``_wandb`` entry is dropped.
        summary: the final summary after applying all updates/removals in order, including
            W&B's own keys (``_step``, ``_runtime``, ``_timestamp``, ``_wandb``).
        history: one dict per history record.  Items with a multi-part ``nested_key`` are
            rebuilt as nested dicts, so a logged ``wandb.Image`` under ``samples`` becomes
            ``row["samples"] == {"_type": "image-file", "path": "media/images/...", ...}``;
            a plain key such as ``"loss/d"`` stays a single top-level key.  Every row has
            ``_step``; if the writer did not store it as an item it is taken from the
            record's ``step`` field, else counted on from the previous row.
        files: paths (relative to the run's ``files/`` dir) from ``files`` records, in first
            seen order, without duplicates.
        metrics: the ``MetricRecord`` entries (``define_metric``), in order.
        exit_code: exit code of the last ``exit`` record, or ``None`` if there is none.
    """

    path: Path
    records: list[pb.Record]
    run: pb.RunRecord | None = None
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    metrics: list[pb.MetricRecord] = field(default_factory=list)
    exit_code: int | None = None

    @property
    def files_dir(self) -> Path:
        """The run's ``files/`` directory, where paths in :attr:`files` are rooted."""
        return self.path.parent / "files"


def load_run(path: str | Path, *, strict: bool = False, wait: float = 30.0) -> RunFile:
    """Read and decode a run file; ``path`` may also be any directory :func:`find_run_file`
    accepts.  ``strict`` is passed to :func:`read_records`.

    ``run.finish()`` can return before wandb-core has flushed the file (seen: the last steps,
    or no records yet), so a file without its ``exit`` record is read again for up to ``wait``
    seconds; ``wait=0`` reads a file that never got one (a killed run's) at once."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        with contextlib.suppress(NoRunFile):  # no run file yet
            if (run := _read_run(path, strict)).exit_code is not None:
                return run
        time.sleep(0.1)
    return _read_run(path, strict)


def _read_run(path: str | Path, strict: bool) -> RunFile:
    path = Path(path)
    if path.is_dir():
        path = find_run_file(path)
    result = RunFile(path=path, records=read_records(path, strict=strict))
    for record in result.records:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            if result.run is None:
                result.run = record.run
            _apply_updates(result.config, record.run.config.update, record.run.config.remove)
            _apply_updates(result.summary, record.run.summary.update, record.run.summary.remove)
        elif kind == "config":
            _apply_updates(result.config, record.config.update, record.config.remove)
        elif kind == "summary":
            _apply_updates(result.summary, record.summary.update, record.summary.remove)
        elif kind == "history":
            row: dict[str, Any] = {}
            _apply_updates(row, record.history.item, ())
            if "_step" not in row:
                if record.history.HasField("step"):
                    row["_step"] = record.history.step.num
                else:
                    row["_step"] = result.history[-1]["_step"] + 1 if result.history else 0
            result.history.append(row)
        elif kind == "files":
            for item in record.files.files:
                if item.path not in result.files:
                    result.files.append(item.path)
        elif kind == "metric":
            result.metrics.append(record.metric)
        elif kind == "exit":
            result.exit_code = record.exit.exit_code
    result.config.pop("_wandb", None)
    return result


def image_keys(history: list[dict[str, Any]]) -> set[str]:
    """Top-level history keys whose value is a single logged image (``_type == "image-file"``).

    Lists of images (``_type == "images/separated"``) are not included.
    """
    return {
        key
        for row in history
        for key, value in row.items()
        if isinstance(value, dict) and value.get("_type") == "image-file"
    }
