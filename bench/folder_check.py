"""How long the image-folder check takes before a run starts: ``python bench/folder_check.py``.

Writes ``--files`` small images (``--size`` px, PNG or JPEG, ``--distinct`` different images
written round-robin) into ``--classes`` class folders in a temporary directory, then times what
``data=image_folder`` does before training (``ganexp.data.folder.locate``: listing the class
folders, then :func:`~ganexp.data.folder.check_image` on every file), the same again in the same
process (as the job and the run repeat it: each file is then only stat-ed), and, for scale, a
full decode of a sample of the files. The files were just written, so they are read from the OS's
page cache: a cold disk adds its own read time. It prints figures and asserts nothing; the load
average and the cores other processes kept busy say how far a shared machine slowed them.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from common import OtherLoad
from PIL import Image

from ganexp.config import DataConfig
from ganexp.data import folder


def write_folder(root: Path, files: int, classes: int, size: int, fmt: str, distinct: int) -> int:
    """``files`` images in ``classes`` class folders; returns the bytes written."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    blobs = []
    for _ in range(
        distinct
    ):  # a gradient and noise: compresses like a small photo, not a flat fill
        pixels = ramp[None, :, None] * rng.random(3) + rng.normal(0, 20, (size, size, 3))
        buffer = io.BytesIO()
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, fmt)
        blobs.append(buffer.getvalue())
    for k in range(classes):
        (root / f"class_{k:02d}").mkdir(parents=True)
    written = 0
    for i in range(files):
        blob = blobs[i % distinct]
        (root / f"class_{i % classes:02d}" / f"{i:06d}.{fmt}").write_bytes(blob)
        written += len(blob)
    return written


def timed(what: str, count: int, run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    print(f"  {what:<44} {seconds:7.2f} s  {count / seconds:9.0f} files/s")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--format", choices=["png", "jpeg"], default="png")
    parser.add_argument("--distinct", type=int, default=500, help="different images written")
    parser.add_argument("--decode-sample", type=int, default=5000, help="files fully decoded")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at the start")
    with tempfile.TemporaryDirectory(prefix="ganexp-folder-check-") as tmp:
        root = Path(tmp) / "images"
        start = time.perf_counter()
        written = write_folder(
            root, args.files, args.classes, args.size, args.format, args.distinct
        )
        print(
            f"wrote {args.files} {args.size}x{args.size} {args.format} files "
            f"({written / args.files / 1024:.1f} KiB each) in {time.perf_counter() - start:.1f} s"
        )
        cfg = DataConfig(name="image_folder", root=str(root), channels=3, num_classes=None)
        other = OtherLoad()
        listed: list[tuple[str, int]] = []
        timed(
            "listing the class folders",
            args.files,
            lambda: listed.extend(folder.class_files(str(root))[1]),
        )
        first = timed(
            "listing + checking every file (first time)", args.files, lambda: folder.locate(cfg)
        )
        timed("the same again (each file only stat-ed)", args.files, lambda: folder.locate(cfg))
        sample = [path for path, _ in listed[: args.decode_sample]]

        def decode() -> None:
            for path in sample:
                with Image.open(path) as image:
                    image.load()

        decoded = timed(f"for scale: fully decoding {len(sample)} files", len(sample), decode)
        print(
            f"check: {args.files / first:.0f} files/s, {first:.1f} s for {args.files} files "
            f"(a full decode would take about {decoded / len(sample) * args.files:.1f} s); "
            f"other processes kept {other.cores():.2f} cores busy, "
            f"load average {os.getloadavg()[0]:.2f} at the end"
        )


if __name__ == "__main__":
    main()
