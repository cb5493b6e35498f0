"""The speed switches: precision, channels_last, optimizer implementation, compile fallback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import LinearCritic, smoke_run, smoke_session
from torch import nn

from ganexp.config import OptimConfig, OptimName
from ganexp.errors import ConfigError
from ganexp.parts.losses import GradientPenaltyLoss
from ganexp.session.build import build_optimizer
from ganexp.session.run import compile_networks


def _critic(norm: float) -> LinearCritic:
    w = torch.randn(12, generator=torch.Generator().manual_seed(0))
    return LinearCritic(w / w.norm() * norm)


def test_gradient_penalty_under_bf16_autocast_keeps_its_closed_form() -> None:
    critic = _critic(3.0)
    real, fake = torch.randn(16, 3, 2, 2), torch.randn(16, 3, 2, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        penalty = GradientPenaltyLoss(10.0).regularizer(critic, real, fake, None)
    assert penalty.dtype == torch.float32
    assert penalty.item() == pytest.approx(10.0 * (3.0 - 1) ** 2, rel=2e-2)
    penalty.backward()  # the double backward reaches the critic's weights
    assert critic.weight.grad is not None and torch.isfinite(critic.weight.grad).all()


def test_gradient_penalty_unscales_the_fp16_scaler_factor() -> None:
    critic = _critic(2.0)
    real, fake = torch.randn(8, 12), torch.randn(8, 12)
    loss = GradientPenaltyLoss(10.0)
    torch.manual_seed(1)
    plain = loss.regularizer(critic, real, fake, None)
    torch.manual_seed(1)
    scaled = loss.regularizer(critic, real, fake, None, grad_scale=torch.tensor(65536.0))
    assert scaled.item() == pytest.approx(plain.item(), rel=1e-6)


def _session(tmp_path: Path, *overrides: str):
    return smoke_session(tmp_path, "metrics.enabled=false", *overrides)


def test_channels_last_is_on_by_default_for_images_on_cpu(tmp_path: Path) -> None:
    on = _session(tmp_path / "on").trainer
    off = _session(tmp_path / "off", "device.channels_last=false").trainer
    convs = [
        m for m in on.discriminator.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1
    ]
    conv = convs[0]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and on.channels_last
    conv = next(
        m for m in off.discriminator.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1
    )
    assert not conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not off.channels_last


@pytest.mark.parametrize("loss", ["bce", "wgan_gp"])
@pytest.mark.slow
def test_bf16_training_runs_and_stays_close_to_fp32(tmp_path: Path, loss: str) -> None:
    for precision in ("fp32", "bf16"):
        smoke_run(
            tmp_path / precision,
            "metrics.enabled=false",
            f"loss={loss}",
            "norm=layer",
            f"device.precision={precision}",
        )
    first = {
        p: json.loads((tmp_path / p / "metrics.jsonl").read_text().splitlines()[0])
        for p in ("fp32", "bf16")
    }
    assert all(torch.isfinite(torch.tensor(v)) for v in first["bf16"].values())
    # the first interval's losses differ only by rounding
    assert first["bf16"]["loss/d"] == pytest.approx(first["fp32"]["loss/d"], rel=0.1, abs=0.05)


def test_optimizer_implementations() -> None:
    params = [nn.Parameter(torch.randn(3))]
    adam = build_optimizer(OptimConfig(implementation="auto"), params, 1e-3)
    assert adam.defaults["fused"] is True
    rms = build_optimizer(OptimConfig(name=OptimName.rmsprop), params, 1e-3)
    assert rms.defaults["foreach"] is True
    loop = build_optimizer(OptimConfig(implementation="for_loop"), params, 1e-3)
    assert not loop.defaults["foreach"] and not loop.defaults.get("fused")
    with pytest.raises(ConfigError, match="fused is for adam"):
        build_optimizer(OptimConfig(name=OptimName.rmsprop, implementation="fused"), params, 1e-3)


def test_compile_failure_falls_back_with_one_line(capsys) -> None:
    net = nn.Linear(2, 2)

    def failing_probe() -> None:
        raise RuntimeError("backend exploded\nmore detail")

    compile_networks([net], failing_probe)
    assert net._compiled_call_impl is None
    assert net(torch.ones(1, 2)).shape == (1, 2)
    err = capsys.readouterr().err
    assert err == "ganexp: warning: torch.compile failed (backend exploded); running uncompiled\n"
