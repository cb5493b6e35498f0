"""Choosing the device: `auto` picks the best one present and says so; an explicit device that
is missing is an error listing the available ones, never a silent fallback to the CPU."""

from __future__ import annotations

import torch

from ganexp.config import DeviceName
from ganexp.errors import ConfigError


def available_devices() -> list[str]:
    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type


def resolve_device(name: DeviceName | str) -> torch.device:
    """The torch device for ``device.name``; raises ConfigError if it is not present."""
    name = DeviceName(name)
    available = available_devices()
    if name == DeviceName.auto:
        for preferred in ("cuda", "mps", "cpu"):
            if preferred in available:
                return torch.device(preferred)
    if name.value not in available:
        raise ConfigError(
            "device",
            name.value,
            f"not available on this machine; available: {', '.join(available)}",
        )
    return torch.device(name.value)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``device.precision`` (None: plain fp32).

    auto: bf16 on CUDA GPUs that support it, else fp32 (the CPU's bf16 is opt-in: faster on CPUs
    with bf16 instructions, but it changes the numbers of a run). fp16 needs a CUDA GPU (and a
    gradient scaler, which the loop adds).
    """
    if precision == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else None
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(
            "device.precision",
            precision,
            f"fp16 needs a CUDA GPU; on {device.type} use bf16 or fp32",
        )
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
