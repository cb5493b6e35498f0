"""D's view of the batch: minibatch discrimination and minibatch standard deviation against
hand computations, their place next to D's features, and runs through the `ganexp` command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import cli_sweep, smoke_config
from test_bad_input import refusal
from test_sweeps import TINY

from ganexp.data import data_spec
from ganexp.models.common import BatchStatistic, MinibatchDiscrimination, MinibatchStddev
from ganexp.session.build import build_discriminator
from ganexp.tracking.runfile import load_run


def test_minibatch_discrimination_by_hand() -> None:
    """One kernel of one dimension with T = 1 (scale 1): M_i = f_i, so with f = [0, 1, 3] the
    L1 distances are |f_i - f_j| and o_i = sum over j != i of exp(-|f_i - f_j|) + bias."""
    layer = MinibatchDiscrimination(features=1, kernels=1, dims=1)
    with torch.no_grad():
        layer.theta.fill_(0.7)  # weight-normalized to norm exp(0) = 1 whatever its value
    f = torch.tensor([[0.0], [1.0], [3.0]])
    e = math.exp
    expected = [e(-1) + e(-3), e(-1) + e(-2), e(-3) + e(-2)]
    torch.testing.assert_close(layer(f)[:, 0], torch.tensor(expected) - 1.0)


def test_minibatch_discrimination_shape_and_self_exclusion() -> None:
    """B = 100 kernels of C = 5 (Salimans et al.); identical samples see each other at
    distance 0 (each contributes exp(0) = 1) but never themselves."""
    layer = MinibatchDiscrimination(features=16)
    f = torch.randn(8, 16)
    assert layer(f).shape == (8, 100)
    same = torch.ones(8, 16)
    torch.testing.assert_close(layer(same), torch.full((8, 100), 7.0 - 1.0))
    alone = layer(f[:1])  # no other sample: only the bias
    torch.testing.assert_close(alone, torch.full((1, 100), -1.0))


def test_minibatch_stddev_by_hand() -> None:
    """Groups as ProGAN reshapes them: with N = 4 and groups of 2, group m = {m, m + 2}."""
    f = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 4.0], [1.0, 1.0]])
    # group 0: samples 0, 2 -> std per feature [1, 2] -> mean 1.5; group 1: 1, 3 -> 0
    out = MinibatchStddev(group=2)(f)[:, 0]
    torch.testing.assert_close(out, torch.tensor([1.5, 1e-4, 1.5, 1e-4]), atol=1e-4, rtol=0)
    whole = MinibatchStddev(group=8)(f)  # a group larger than the batch: the whole batch
    assert torch.allclose(whole, whole[0])


@pytest.mark.parametrize("view", ["minibatch_discrimination", "minibatch_stddev"])
@pytest.mark.parametrize("arch", ["dcgan", "mlp", "resnet"])
def test_the_statistic_sits_next_to_ds_features(view: str, arch: str) -> None:
    """D(x) = D's own output from f(x) + w . s(f(x)): what its linear output layer gives on the
    concatenation; and a sample's output depends on its batch mates."""
    overrides = [f"discriminator.batch_view={view}", f"discriminator={arch}"]
    if arch == "mlp":
        overrides += ["data=ring8", "generator=mlp", "norm=none"]
    cfg, _ = smoke_config(*overrides)
    spec = data_spec(cfg.data)
    critic = build_discriminator(cfg, spec)
    assert isinstance(critic, BatchStatistic)
    x = torch.randn(8, *spec.shape)
    with torch.no_grad():
        f = critic.critic.features(x)
        by_hand = critic.critic.head(f) + critic.linear(critic.statistic(f)).flatten()
        torch.testing.assert_close(critic(x), by_hand)
        assert critic.features(x).shape[1] == f.shape[1] + critic.statistic.width
        mates = torch.cat([x[:4], torch.randn(4, *spec.shape)])
        assert not torch.allclose(critic(mates)[:4], critic(x)[:4])


def test_ds_head_is_its_output_layer_on_the_features() -> None:
    cfg, _ = smoke_config()
    critic = build_discriminator(cfg, data_spec(cfg.data))
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(critic.head(critic.features(x)), critic(x))


BAD = [
    (["discriminator.batch_view=mbd"], "discriminator.batch_view='mbd': allowed: none, mini"),
    (["generator.batch_view=minibatch_stddev"], "generator.batch_view='minibatch_stddev': D's"),
    (["discriminator.minibatch_kernels=0"], "discriminator.minibatch_kernels=0: must be an int"),
    (
        ["discriminator.batch_view=minibatch_stddev", "discriminator.stddev_group=5"],
        "discriminator.stddev_group=5: must divide the 128 inputs D judges at once",
    ),
]


@pytest.mark.parametrize(("argv", "expected"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_batch_views_are_refused_naming_the_key(argv: list[str], expected: str) -> None:
    assert refusal(*argv).startswith(expected)


CLI_CASES = {
    "mbd-spectral-hinge": (
        "discriminator.batch_view=minibatch_discrimination",
        "norm=spectral",
        "loss=hinge",
    ),
    "stddev-layer-wgan_gp": (
        "discriminator.batch_view=minibatch_stddev",
        "loss=wgan_gp",
        "norm=layer",
    ),
    "stddev-packed": ("discriminator.batch_view=minibatch_stddev", "discriminator.pack=2"),
}


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The cases trained by one `ganexp -m` process (W&B offline): a run folder each."""
    folder = tmp_path_factory.mktemp("batch_views")
    return cli_sweep(folder, CLI_CASES, *TINY, "logger.mode=offline")


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CLI_CASES))
def test_batch_views_train_through_the_cli(cli_runs: dict[str, Path], case: str) -> None:
    overrides = CLI_CASES[case]
    run_dir = cli_runs[case]
    assert json.loads((run_dir / "job.json").read_text())["status"] == "completed"
    run = load_run(run_dir)
    assert run.config["discriminator"]["batch_view"] == overrides[0].split("=")[1]
    assert [row["step"] for row in run.history if "loss/d" in row] == [1, 2]
