"""Shared fixtures: configs composed by Hydra's compose API, W&B kept offline and local."""

from __future__ import annotations

import os

import pytest

from ganexp.config import register_schema

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


# Measured slow (tens of seconds each on 2 cores) in files others are editing now: marked here so
# that the fast tier (make test) stays within its minutes. Each room keeps tests in the fast tier:
# replicas its float64 [spectral-bce] case and the other in-process tests; the golden test its
# other 13 cases (stacked replicas: replicas_stacked_toy); paired translation its smoke run,
# grid, evaluator and refusals. Move a mark into its file, and off this list, when you can.
_REPLICAS = "tests/test_replicas.py::test_"
_PAIRED = "tests/test_paired_translation.py::test_"
SLOW_ELSEWHERE = {
    *(
        f"{_REPLICAS}each_replica_is_its_separate_run_over_20_steps_in_float64[{norm}-{loss}]"
        for norm in ("batch", "layer", "spectral")
        for loss in ("bce", "wgan_clip", "wgan_gp")
        if (norm, loss) != ("spectral", "bce")
    ),
    *(
        f"{_REPLICAS}dcgan_replicas_on_the_cpu_are_their_separate_runs_bit_for_bit[{case}]"
        for case in ("bce-batch", "wgan_gp-layer", "wgan_clip-spectral")
    ),
    f"{_REPLICAS}a_resumed_replica_run_equals_an_uninterrupted_one[dcgan-in-turn]",
    f"{_REPLICAS}vectorized_dcgan_replicas_take_the_first_step_of_their_separate_runs",
    "tests/test_golden.py::test_losses_do_not_move[replicas_wgan_gp]",
    f"{_PAIRED}a_resumed_run_continues_exactly",
    f"{_PAIRED}bad_pix2pix_folders_are_refused_in_one_line_before_any_run",
    f"{_PAIRED}ganexp_eval_and_sample_use_the_trained_translator",
    *(  # the unpaired task keeps its grid, evaluator, memory, refusals and golden case
        f"tests/test_unpaired_translation.py::test_{name}"
        for name in (
            "a_smoke_run_logs_the_unpaired_metrics_and_cycle_grids_to_wandb",
            "a_resumed_run_continues_the_networks_and_the_pools_exactly",
            "ganexp_eval_and_sample_use_the_trained_translators",
            "bad_cyclegan_folders_are_refused_in_one_line_before_any_run",
            "a_cyclegan_folder_trains_and_is_evaluated_on_its_test_domains",
        )
    ),
}


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` are skipped, with the reason, where there is no CUDA GPU; the tests
    of SLOW_ELSEWHERE are marked slow."""
    for item in items:
        if item.nodeid in SLOW_ELSEWHERE:
            item.add_marker(pytest.mark.slow)
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is false)")
    for item in gpu_tests:
        item.add_marker(skip)
