"""Virtual batch norm against its formula written out per example, the independence of an example
from its batch mates, and the generator wrapper that carries the reference batch."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from ganexp.models.norms import VirtualBatchNorm, WithReferenceBatch

R, EPS = 5, 1e-5


def by_formula(layer: VirtualBatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Example by example, channel by channel, as Salimans et al. sec. 3.4 and VBNL write it."""
    out = torch.empty_like(x)
    reference = x[:R]
    scale, shift = layer.log_scale.exp(), layer.shift
    for c in range(x.shape[1]):
        ref = reference[:, c]
        ref_mean, ref_sq = ref.mean(), (ref * ref).mean()
        for i in range(len(x)):
            v = x[i, c]
            if i < R:  # the reference: its own statistics
                mean, sq = ref_mean, ref_sq
            else:
                mean = v.mean() / (R + 1) + ref_mean * R / (R + 1)
                sq = (v * v).mean() / (R + 1) + ref_sq * R / (R + 1)
            out[i, c] = (v - mean) / math.sqrt(EPS + sq - mean * mean) * scale[c] + shift[c]
    return out


@pytest.mark.parametrize("shape", [(R + 4, 3, 4, 4), (R + 4, 6)], ids=["maps", "vectors"])
def test_vbn_matches_the_formula(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    layer = VirtualBatchNorm(shape[1], R, EPS)
    with torch.no_grad():
        layer.shift.normal_()
    x = torch.randn(shape, dtype=torch.float64) * 3 + 1
    layer = layer.double()
    torch.testing.assert_close(layer(x), by_formula(layer, x))


def test_an_example_does_not_depend_on_its_batch_mates() -> None:
    torch.manual_seed(1)
    layer = VirtualBatchNorm(3, R)
    reference, batch = torch.randn(R, 3, 4, 4), torch.randn(6, 3, 4, 4)
    together = layer(torch.cat([reference, batch]))[R:]
    for i in range(6):
        alone = layer(torch.cat([reference, batch[i : i + 1]]))[R:]
        torch.testing.assert_close(alone[0], together[i])
    other_reference = layer(torch.cat([torch.randn(R, 3, 4, 4), batch]))[R:]
    assert not torch.allclose(other_reference, together)  # the reference does matter


def test_gradients_flow_through_the_reference_statistics() -> None:
    layer = VirtualBatchNorm(2, R)
    x = torch.randn(R + 3, 2, requires_grad=True)
    layer(x)[R:].sum().backward()
    assert x.grad[:R].abs().sum() > 0  # the reference rows shape the others' statistics
    assert layer.log_scale.grad is not None and layer.shift.grad is not None


class Echo(nn.Module):
    """A stand-in generator that returns its input code and labels, to see what it was given."""

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return z if labels is None else torch.cat([z, labels[:, None].float()], 1)


def test_the_wrapper_puts_a_fixed_reference_in_front_and_returns_the_batch_only() -> None:
    wrapped = WithReferenceBatch(Echo(), reference_size=R, z_dim=4, num_classes=0, seed=3)
    z = torch.randn(7, 4)
    torch.testing.assert_close(wrapped(z), z)
    again = WithReferenceBatch(Echo(), reference_size=R, z_dim=4, num_classes=0, seed=3)
    assert torch.equal(again.reference_z, wrapped.reference_z)
    assert "reference_z" in wrapped.state_dict()  # checkpointed with the generator
    conditional = WithReferenceBatch(Echo(), reference_size=R, z_dim=4, num_classes=10, seed=3)
    labels = torch.arange(7)
    out = conditional(z, labels)
    torch.testing.assert_close(out[:, -1], labels.float())
    assert conditional.reference_labels.shape == (R,) and conditional.reference_labels.max() < 10


def test_a_vbn_generators_sample_does_not_depend_on_its_batch() -> None:
    """Built from the config: G(z)[i] is the same drawn alone or with others (batch norm's is
    not), and the reference batch is trainer.batch_size codes."""
    from helpers import smoke_config

    from ganexp.data import data_spec
    from ganexp.session.build import build_generator

    cfg, _ = smoke_config("norm=virtual_batch")
    generator = build_generator(cfg, data_spec(cfg.data))
    assert len(generator.reference_z) == cfg.trainer.batch_size
    z = torch.randn(6, cfg.trainer.z_dim)
    with torch.no_grad():
        together = generator(z)
        alone = torch.cat([generator(z[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(alone, together, rtol=1e-4, atol=1e-5)


def test_vbn_in_the_discriminator_is_refused_in_one_line() -> None:
    from test_bad_input import refusal

    message = refusal("norm.discriminator=virtual_batch")
    assert (
        message
        == "norm.discriminator='virtual_batch': virtual batch norm is for the generator only"
    )


CLI_CASES = {
    "dcgan-cgan": ("norm=virtual_batch", "conditional=true"),
    "resnet": ("norm=virtual_batch", "generator=resnet", "discriminator=resnet"),
    "mlp-toy": ("norm=virtual_batch", "data=ring8", "generator=mlp", "discriminator=mlp"),
}


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The cases trained by one `ganexp -m` process (W&B offline): a run folder each."""
    from helpers import cli_sweep
    from test_sweeps import TINY

    folder = tmp_path_factory.mktemp("vbn")
    return cli_sweep(folder, CLI_CASES, *TINY, "logger.mode=offline")


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CLI_CASES))
def test_vbn_trains_through_the_cli(cli_runs: dict[str, Path], case: str) -> None:
    from ganexp.tracking.runfile import load_run

    run_dir = cli_runs[case]
    assert json.loads((run_dir / "job.json").read_text())["status"] == "completed"
    run = load_run(run_dir)
    assert run.config["norm"]["generator"] == "virtual_batch"
    assert [row["step"] for row in run.history if "loss/g" in row] == [1, 2]
