"""The FID Inception's speed: images/s of 2048-d features from uint8 32x32 images (the resize to
299 included), in float32 with contiguous tensors (the baseline), float32 channels_last (what
ganexp runs) and bfloat16 autocast channels_last where the device has it, with bf16's feature
error against float32. It sets ``metrics.features=auto``'s policy: a periodic evaluation on a GPU,
a final one the user asks for on a CPU."""

from __future__ import annotations

import time
from typing import Any

import torch

from ganexp.metrics.extractors import _Inception, read_inception

BATCH = 32


def _rate(forward, images: torch.Tensor, batches: int, device: torch.device) -> float:
    forward(images)  # warm-up: the first call of a TorchScript module optimizes its graph
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(batches):
        forward(images)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batches * len(images) / (time.perf_counter() - start)


def inception_speed(batches: int) -> dict[str, Any]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    archive = read_inception(None)
    contiguous_model = _Inception(archive, torch.contiguous_format).to(device)
    model = _Inception(archive, torch.channels_last).to(device)  # what ganexp uses
    images = torch.randint(0, 256, (BATCH, 3, 32, 32), dtype=torch.uint8, device=device)
    contiguous, channels_last = contiguous_model.features, model.features

    def bf16(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return model.features(x)

    rows: dict[str, Any] = {"device": device.type, "threads": torch.get_num_threads()}
    with torch.inference_mode():
        rows["fp32_contiguous"] = _rate(contiguous, images, batches, device)
        rows["fp32_channels_last"] = _rate(channels_last, images, batches, device)
        if device.type == "cuda" or torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
            rows["bf16_channels_last"] = _rate(bf16, images, batches, device)
            exact, rounded = channels_last(images).float(), bf16(images).float()
            rows["bf16_feature_error"] = float((exact - rounded).norm() / exact.norm())
    return rows


def print_inception(rows: dict[str, Any]) -> None:
    base = rows["fp32_contiguous"]
    print(f"  {rows['device']}, {rows['threads']} torch threads, batches of {BATCH} 32x32 images")
    for key in ("fp32_contiguous", "fp32_channels_last", "bf16_channels_last"):
        if key in rows:
            rate = rows[key]
            print(
                f"  {key:<20} {rate:8.1f} images/s  {rate / base:5.2f}x  "
                f"10k images: {10000 / rate / 60:6.1f} min"
            )
    if "bf16_feature_error" in rows:
        print(
            f"  bf16 features differ from fp32 by {rows['bf16_feature_error']:.2%} (relative "
            "norm): ganexp keeps fp32, the FID of published numbers"
        )
