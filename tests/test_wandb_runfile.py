"""Tests for the W&B run-file reader in ``ganexp/tracking/runfile.py``.

One real offline run (a few seconds) is shared by the module; edge cases (truncation,
corruption, block padding) use copies of that file or small files framed by ``_frame``.
"""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from wandb.proto import wandb_internal_pb2 as pb

from ganexp.tracking.runfile import (
    BLOCK_SIZE,
    FILE_HEADER,
    NoRunFile,
    RunFile,
    RunFileError,
    _split_records,
    find_run_file,
    image_keys,
    load_run,
    read_records,
)

LOSS_D = [1.5, 0.75, 0.5]
LOSS_G = [0.1, 0.2, 0.3]
LONG = "0123456789" * 7_000  # 70 kB config value: its run record spans three blocks
CONFIG = {"x": 1, "nested": {"y": 2}, "long": LONG}


@dataclass
class LoggedRun:
    root: Path  # the WANDB_DIR, i.e. the folder that contains wandb/
    run_file: Path
    run: RunFile
    image: np.ndarray


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoggedRun]:
    import wandb

    root = tmp_path_factory.mktemp("wandb_run")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(8, 6, 3), dtype=np.uint8)
    # an earlier test's W&B service in this process is shut down first (which clears its
    # WANDB_SERVICE): otherwise this run would use it, its teardown below would stop it, and the
    # context's exit would restore a WANDB_SERVICE naming a stopped service to later tests
    wandb.teardown()
    with pytest.MonkeyPatch.context() as mp:
        for name in [k for k in os.environ if k.startswith("WANDB_")]:
            mp.delenv(name)
        env = {
            "WANDB_MODE": "offline",
            "WANDB_DIR": str(root),
            "WANDB_SILENT": "true",
            "WANDB_CONSOLE": "off",
            "WANDB_DISABLE_CODE": "true",
            "WANDB_DISABLE_GIT": "true",
            "WANDB__DISABLE_STATS": "true",
            "WANDB__DISABLE_MACHINE_INFO": "true",
            "WANDB_CONFIG_DIR": str(root / "config"),
            "WANDB_CACHE_DIR": str(root / "cache"),
            "WANDB_DATA_DIR": str(root / "data"),
        }
        for name, value in env.items():
            mp.setenv(name, value)
        try:
            run = wandb.init(
                project="t",
                group="g",
                job_type="train",
                tags=["a", "b"],
                config=CONFIG,
                name="n",
                mode="offline",
                dir=str(root),
            )
            run.define_metric("loss/d", summary="min")
            for step, (d, g) in enumerate(zip(LOSS_D, LOSS_G, strict=True)):
                row = {"loss/d": d, "loss/g": g}
                if step == len(LOSS_D) - 1:
                    row["samples"] = wandb.Image(image)
                run.log(row)
            run.summary["best_fid"] = 12.5
            run.finish()
        finally:
            wandb.teardown()
    run_file = find_run_file(root)
    yield LoggedRun(root=root, run_file=run_file, run=load_run(run_file), image=image)


def _frame(payloads: list[bytes], version: int = 0) -> tuple[bytes, list[int]]:
    """Independent reference writer: frame payloads like wandb does.

    Returns the file bytes and the end offset of each record.
    """
    out = bytearray(struct.pack("<4sHB", b":W&B", 0xBEE1, version))
    ends = []
    for payload in payloads:
        rest, first = payload, True
        while True:
            left = BLOCK_SIZE - len(out) % BLOCK_SIZE
            if left < 7:
                out += bytes(left)
                continue
            piece, rest = rest[: left - 7], rest[left - 7 :]
            last = not rest
            kind = (1 if last else 2) if first else (4 if last else 3)
            crc = zlib.crc32(bytes([kind]) + piece)
            out += struct.pack("<IHB", crc, len(piece), kind) + piece
            first = False
            if last:
                break
        ends.append(len(out))
    return bytes(out), ends


def _history_record(num: int, filler_size: int = 0) -> pb.Record:
    record = pb.Record(num=num)
    record.history.step.num = num
    record.history.item.add(key="_step", value_json=str(num))
    record.history.item.add(key="filler", value_json=f'"{"f" * filler_size}"')
    return record


def _record_of_size(num: int, size: int) -> bytes:
    """A serialized history record of exactly ``size`` bytes."""
    for filler in range(size):
        payload = _history_record(num, filler).SerializeToString()
        if len(payload) == size:
            return payload
    raise AssertionError(f"cannot build a record of {size} bytes")


# --- the real run -------------------------------------------------------------------


def test_file_layout(logged: LoggedRun) -> None:
    data = logged.run_file.read_bytes()
    assert bytes.fromhex("3a 57 26 42 e1 be 00") == FILE_HEADER
    assert data.startswith(FILE_HEADER)
    assert len(data) > 2 * BLOCK_SIZE  # the long config forces FIRST/MIDDLE/LAST chunks
    # Re-framing the payloads reproduces the file byte for byte: the reader consumed
    # every chunk, padding and checksum exactly as wandb wrote them.
    payloads = _split_records(data, "real", strict=True)
    assert _frame(payloads)[0] == data
    assert read_records(logged.run_file, strict=True)[0].WhichOneof("record_type") == "header"


def test_history(logged: LoggedRun) -> None:
    history = logged.run.history
    assert [row["_step"] for row in history] == [0, 1, 2]
    assert [row["loss/d"] for row in history] == LOSS_D
    assert [row["loss/g"] for row in history] == LOSS_G
    assert all("_timestamp" in row for row in history)


def test_config_and_run_record(logged: LoggedRun) -> None:
    assert logged.run.config == CONFIG  # includes the multi-chunk value; _wandb dropped
    run = logged.run.run
    assert run is not None
    assert run.project == "t"
    assert run.run_group == "g"
    assert run.job_type == "train"
    assert list(run.tags) == ["a", "b"]
    assert run.display_name == "n"
    assert logged.run_file.name == f"run-{run.run_id}.wandb"


def test_image(logged: LoggedRun) -> None:
    history = logged.run.history
    assert image_keys(history) == {"samples"}
    image = history[-1]["samples"]
    assert image["_type"] == "image-file"
    assert (image["width"], image["height"]) == (6, 8)
    assert image["path"] in logged.run.files
    png = logged.run.files_dir / image["path"]
    assert png.is_file()
    assert png.parent == logged.run_file.parent / "files" / "media" / "images"
    with Image.open(png) as loaded:
        np.testing.assert_array_equal(np.asarray(loaded.convert("RGB")), logged.image)


def test_metrics_summary_exit(logged: LoggedRun) -> None:
    (metric,) = logged.run.metrics
    assert metric.name == "loss/d"
    assert metric.summary.min
    summary = logged.run.summary
    assert summary["loss/d"] == {"min": min(LOSS_D)}
    assert summary["loss/g"] == LOSS_G[-1]
    assert summary["best_fid"] == 12.5
    assert summary["_step"] == len(LOSS_D) - 1
    assert logged.run.exit_code == 0


def test_find_run_file(logged: LoggedRun, tmp_path: Path) -> None:
    offline_dir = logged.run_file.parent
    assert offline_dir.name.startswith("offline-run-")
    for where in (logged.root, logged.root / "wandb", offline_dir):
        assert find_run_file(where) == logged.run_file
    assert load_run(logged.root).path == logged.run_file
    with pytest.raises(NoRunFile, match="exactly one"):
        find_run_file(tmp_path)
    # Two runs in one Hydra folder are ambiguous.
    wandb_dir = tmp_path / "wandb"
    for name in ("offline-run-1", "offline-run-2"):
        (wandb_dir / name).mkdir(parents=True)
        (wandb_dir / name / "run-x.wandb").write_bytes(FILE_HEADER)
    with pytest.raises(NoRunFile, match="found 2"):
        find_run_file(tmp_path)


# --- truncation and corruption ------------------------------------------------------


def test_truncated_real_file(logged: LoggedRun, tmp_path: Path) -> None:
    data = logged.run_file.read_bytes()
    full = read_records(logged.run_file)
    _, ends = _frame(_split_records(data, "real", strict=True))
    cut_file = tmp_path / "cut.wandb"
    # Cuts inside the multi-block run record, inside a FULL chunk's payload, inside a
    # chunk header, and one byte before the end (inside the exit record).
    cuts = [BLOCK_SIZE + 100, 2 * BLOCK_SIZE, (ends[-3] + ends[-2]) // 2, ends[-2] + 3]
    cuts.append(len(data) - 1)
    for cut in cuts:
        assert cut not in ends
        cut_file.write_bytes(data[:cut])
        records = read_records(cut_file)
        assert records == full[: sum(end <= cut for end in ends)]
        with pytest.raises(RunFileError, match="truncated"):
            read_records(cut_file, strict=True)
    run = load_run(cut_file, wait=0)
    assert run.exit_code is None
    assert run.config == CONFIG


def test_truncated_everywhere_in_small_file(tmp_path: Path) -> None:
    # Record 0 leaves 3 bytes at the end of block 0 (zero trailer); record 1 spans blocks.
    first = _record_of_size(0, BLOCK_SIZE - len(FILE_HEADER) - 7 - 3)
    payloads = [first, _record_of_size(1, BLOCK_SIZE + 500), _record_of_size(2, 40)]
    data, ends = _frame(payloads)
    assert data[ends[0] : ends[0] + 3] == b"\0\0\0"
    path = tmp_path / "small.wandb"
    path.write_bytes(data)
    assert [r.history.step.num for r in read_records(path, strict=True)] == [0, 1, 2]
    interesting = {len(FILE_HEADER), len(data) - 1}
    for end in [*ends, BLOCK_SIZE, 2 * BLOCK_SIZE]:
        interesting.update(range(end - 8, end + 9))
    for cut in sorted(c for c in interesting if len(FILE_HEADER) <= c <= len(data)):
        path.write_bytes(data[:cut])
        steps = [r.history.step.num for r in read_records(path)]
        assert steps == list(range(sum(end <= cut for end in ends))), cut


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"XW&B\xe1\xbe\x00", "invalid W&B file header"),
        (b":W&B\x00\x00\x00", "invalid W&B file header"),
        (b":W&B\xe1\xbe\x07", "unsupported W&B store version 7"),
        (b":W&B", "too short"),
    ],
)
def test_bad_header(logged: LoggedRun, tmp_path: Path, header: bytes, message: str) -> None:
    path = tmp_path / "bad.wandb"
    body = logged.run_file.read_bytes()[len(FILE_HEADER) :]
    path.write_bytes(header + body if len(header) == len(FILE_HEADER) else header)
    with pytest.raises(RunFileError, match=message):
        read_records(path)
    with pytest.raises(RunFileError, match=message):
        load_run(path)


def test_corrupted_payload(logged: LoggedRun, tmp_path: Path) -> None:
    path = tmp_path / "corrupt.wandb"
    shutil.copy(logged.run_file, path)
    data = bytearray(path.read_bytes())
    data[len(data) - 5] ^= 0xFF  # inside the last record's payload
    path.write_bytes(bytes(data))
    with pytest.raises(RunFileError, match="checksum mismatch"):
        read_records(path)


def test_empty_log_and_step_fallback(tmp_path: Path) -> None:
    path = tmp_path / "empty.wandb"
    path.write_bytes(FILE_HEADER)
    assert read_records(path, strict=True) == []
    # Store version 1 may omit the _step item; it then comes from the step field/counter.
    records = [pb.Record(), pb.Record()]
    records[0].history.step.num = 5
    records[0].history.item.add(key="a", value_json="1")
    records[1].history.item.add(nested_key=["img", "_type"], value_json='"image-file"')
    path.write_bytes(_frame([r.SerializeToString() for r in records], version=1)[0])
    history = load_run(path, wait=0).history  # a hand-made file: no exit record to wait 30 s for
    assert history == [{"a": 1, "_step": 5}, {"img": {"_type": "image-file"}, "_step": 6}]
    assert image_keys(history) == {"img"}
