"""Helpers the tests share."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ganexp.checkpoint import load_checkpoint
from ganexp.config import RunConfig, validate
from ganexp.run import RunResult, Session, execute, setup


def compose_config(*overrides: str) -> DictConfig:
    """The config a command line `ganexp OVERRIDES` would run."""
    with initialize_config_module("ganexp.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


def checkpoint_weights(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint's networks and of their averages, by name."""
    state = load_checkpoint(path)
    kept = ("generator", "discriminator", "generator_ema", "historical_g", "historical_d")
    nets = [net for net in kept if net in state]
    return {f"{net}.{key}": value for net in nets for key, value in state[net].items()}


def assert_same_weights(a: Path, b: Path) -> None:
    """Two checkpoints hold identical networks, tensor for tensor."""
    wa, wb = checkpoint_weights(a), checkpoint_weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def smoke_config(*overrides: str) -> tuple[RunConfig, dict]:
    """The validated config of `ganexp experiment=smoke logger=none OVERRIDES`, and its dict."""
    cfg = compose_config("experiment=smoke", "logger=none", *overrides)
    return validate(cfg), OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def smoke_session(run_dir: Path, *overrides: str) -> Session:
    """A smoke run set up in-process in run_dir, ready to execute."""
    cfg, resolved = smoke_config(*overrides)
    return setup(cfg, resolved, run_dir, name="test", group=None)


def smoke_run(run_dir: Path, *overrides: str) -> RunResult:
    """A smoke run trained in-process in run_dir."""
    return execute(smoke_session(run_dir, *overrides))


class LinearCritic(nn.Module):
    """D(x) = w . x: its input gradient is w everywhere, so its gradient penalty is known."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def features(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return x.flatten(1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.features(x) @ self.weight


def assert_refused_before_training(result, run_dir: Path, expected: str) -> None:
    """A `ganexp` command refused in one line (exit 2) starting ``expected``, with no traceback
    and no run folder."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"ganexp: error: {expected}")
    assert "Traceback" not in result.stderr
    assert not run_dir.exists()
