"""Shared fixtures: configs composed by Hydra's compose API, W&B kept offline and local."""

from __future__ import annotations

import os

import pytest

from ganexp.config import register_schema

# make test / make test-all run one pytest-xdist worker per core: each worker, and each process
# it starts, uses one torch thread, so that the workers share the cores rather than fight over them
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# slow_report: tests not marked slow that take more than 5 s are listed at the end of a run
pytest_plugins = ["slow_report", "pytester"]


@pytest.fixture(autouse=True, scope="session")
def _isolated_env(tmp_path_factory: pytest.TempPathFactory) -> None:
    """No W&B credentials or network, and one data cache for the whole session."""
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        del os.environ[key]
    home = tmp_path_factory.mktemp("home")
    os.environ.update(
        WANDB_SILENT="true",
        WANDB_DISABLE_CODE="true",
        WANDB_DISABLE_GIT="true",
        WANDB_CONFIG_DIR=str(home / "wandb-config"),
        WANDB_CACHE_DIR=str(home / "wandb-cache"),
        WANDB_DATA_DIR=str(home / "wandb-data"),
        NETRC=str(home / "netrc"),
        GANEXP_CACHE=str(tmp_path_factory.mktemp("cache")),
    )
    register_schema()


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` are skipped, with the reason, where there is no CUDA GPU."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is false)")
    for item in gpu_tests:
        item.add_marker(skip)
