"""Helpers the tests share."""

from __future__ import annotations

from hydra import compose, initialize_config_module
from omegaconf import DictConfig


def compose_config(*overrides: str) -> DictConfig:
    """The config a command line `ganexp OVERRIDES` would run."""
    with initialize_config_module("ganexp.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))
