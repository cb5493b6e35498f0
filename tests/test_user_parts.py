"""The user's own generator, discriminator and norm (``_target_``), from a folder outside the
repository: they train through the CLI, compose with the norm axis and the options that read
D's features, are what ganexp-sample loads, and every way they can break the contract is one
line before training."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import assert_refused_before_training, compose_config
from test_sweeps import GANEXP, TINY, ganexp_cmd
from torch import nn

from ganexp.config import validate
from ganexp.data import data_spec
from ganexp.engine.checkpoint import load_checkpoint
from ganexp.errors import ConfigError
from ganexp.session.build import build_discriminator, build_generator
from ganexp.tracking.runfile import load_run

USER_NETS = '''
    import torch
    from torch import nn


    class TinyGenerator(nn.Module):
        """z -> hidden -> a sample of `shape`, with norm.generator's layer after the hidden one."""

        def __init__(self, z_dim, shape, norm, hidden=32):
            super().__init__()
            self.shape = tuple(shape)
            size = torch.Size(shape).numel()
            self.net = nn.Sequential(
                nn.Linear(z_dim, hidden), norm(hidden, spatial=False), nn.ReLU(),
                nn.Linear(hidden, size), nn.Tanh(),
            )

        def forward(self, z, labels=None):
            return self.net(z).view(len(z), *self.shape)


    class TinyCritic(nn.Module):
        """features: one hidden layer with norm.discriminator's layer; head: a linear score."""

        def __init__(self, shape, norm, hidden=32):
            super().__init__()
            self.feature_width = hidden
            size = torch.Size(shape).numel()
            self.body = nn.Sequential(
                nn.Linear(size, hidden), norm(hidden, spatial=False), nn.LeakyReLU(0.2)
            )
            self.out = nn.Linear(hidden, 1)

        def features(self, x, labels=None):
            return self.body(x.flatten(1))

        def head(self, phi, labels=None):
            return self.out(phi).flatten()

        def forward(self, x, labels=None):
            return self.head(self.features(x, labels))


    class PlainCritic(nn.Module):
        """A critic with only a forward: no features for feature matching."""

        def __init__(self, shape):
            super().__init__()
            self.out = nn.Linear(torch.Size(shape).numel(), 1)

        def forward(self, x, labels=None):
            return self.out(x.flatten(1))


    class WrongShape(TinyGenerator):
        def forward(self, z, labels=None):
            return self.net(z)


    class RMSNorm(nn.Module):
        """x / sqrt(mean over features of x^2 + eps) * gain, per sample (channels of maps)."""

        def __init__(self, num_features, spatial, eps=1e-6):
            super().__init__()
            self.eps = eps
            view = (1, -1, 1, 1) if spatial else (1, -1)
            self.gain = nn.Parameter(torch.ones(num_features).view(view))

        def forward(self, x):
            return x * torch.rsqrt(x.square().mean(1, keepdim=True) + self.eps) * self.gain


    class NotANetwork:
        def __init__(self, shape):
            pass
'''

CONFIGS = {
    "generator/mine.yaml": """
        # @package _global_
        generator:
          _target_: mynets.TinyGenerator
          hidden: 48
    """,
    "discriminator/mine.yaml": """
        # @package _global_
        discriminator:
          _target_: mynets.TinyCritic
    """,
    "norm/mine.yaml": """
        # @package _global_
        norm:
          _target_: mynets.RMSNorm
          generator: custom
          discriminator: custom
          eps: 1.0e-5
    """,
}


@pytest.fixture
def user_folder(tmp_path: Path) -> Path:
    """A user's project: their module of networks and a config dir with a yaml for each."""
    folder = tmp_path / "my_project"
    (folder / "mynets.py").parent.mkdir(parents=True)
    (folder / "mynets.py").write_text(textwrap.dedent(USER_NETS))
    for name, text in CONFIGS.items():
        (folder / "conf" / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / "conf" / name).write_text(textwrap.dedent(text))
    return folder


@pytest.fixture
def user_module(user_folder: Path, monkeypatch: pytest.MonkeyPatch):
    """The user's folder importable in this process, as it is for `ganexp` run from it."""
    monkeypatch.chdir(user_folder)
    monkeypatch.syspath_prepend(str(user_folder))
    yield user_folder
    sys.modules.pop("mynets", None)


def _users(folder: Path, *overrides: str):
    """The validated config of `ganexp OVERRIDES` with the user's config dir searched."""
    return validate(compose_config(f"hydra.searchpath=[file://{folder}/conf]", *overrides))


@pytest.mark.slow  # three ganexp processes (train, then sample refused and done)
def test_users_networks_and_norm_train_from_their_own_folder(user_folder: Path) -> None:
    run_dir = user_folder / "run"
    mine = ("generator=mine", "discriminator=mine", "norm=mine")
    result = ganexp_cmd(
        *TINY,
        f"hydra.searchpath=[file://{user_folder}/conf]",
        *mine,
        "loss.generator_loss=feature_matching",
        "logger.mode=offline",
        f"hydra.run.dir={run_dir}",
        cwd=user_folder,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert state["generator"]["net.0.weight"].shape[0] == 48  # hidden: 48, from the yaml
    assert state["generator"]["net.1.gain"].shape == (1, 48)  # the user's norm, in G
    assert state["discriminator"]["body.1.gain"].shape == (1, 32)  # and in D
    run = load_run(run_dir)
    assert {"G=mynets.TinyGenerator", "D=mynets.TinyCritic", "norm.d=custom"} <= set(run.run.tags)
    assert run.config["generator"]["hidden"] == 48
    assert [row["step"] for row in run.history if "loss/g" in row] == [1, 2]
    # ganexp-sample rebuilds the user's generator from the checkpoint's config, once the user
    # names their classes: a checkpoint never chooses code by itself
    sample = [str(Path(GANEXP).with_name("ganexp-sample")), f"checkpoint={run_dir}", "n=4"]
    refused = subprocess.run(sample, cwd=user_folder, capture_output=True, text=True, timeout=240)
    classes = refused.stderr.strip().split("name them yourself: ")[-1].split()
    assert refused.returncode == 2 and classes == [
        "generator._target_=mynets.TinyGenerator",
        "discriminator._target_=mynets.TinyCritic",
        "norm._target_=mynets.RMSNorm",
    ], refused.stderr
    sample += classes
    done = subprocess.run(sample, cwd=user_folder, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert list((run_dir / "generated").glob("*.png"))


@pytest.mark.slow
def test_users_networks_take_every_norm_their_layers_allow(user_folder: Path) -> None:
    """The norm axis reaches a user's networks through the `norm` factory they are given."""
    sweep = user_folder / "sweep"
    norms = ("batch", "layer", "group", "spectral", "none", "mine")
    result = ganexp_cmd(
        "-m",
        *TINY,
        f"hydra.searchpath=[file://{user_folder}/conf]",
        "generator=mine",
        "discriminator=mine",
        f"norm={','.join(norms)}",
        "logger=none",
        f"hydra.sweep.dir={sweep}",
        cwd=user_folder,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for num, norm in enumerate(norms):
        critic = load_checkpoint(sweep / str(num) / "checkpoints" / "last.pt")["discriminator"]
        spectral = any("parametrizations" in key for key in critic)
        assert spectral == (norm == "spectral"), (norm, list(critic))
        assert ("body.1.weight" in critic) == (norm in ("batch", "layer", "group")), norm


def test_a_users_norm_goes_into_the_built_in_networks(user_module: Path) -> None:
    cfg = _users(user_module, "norm=mine", "data.image_size=32")
    spec = data_spec(cfg.data)
    G, D = build_generator(cfg, spec), build_discriminator(cfg, spec)
    for net in (G, D):
        norms = [m for m in net.modules() if type(m).__name__ == "RMSNorm"]
        assert norms and all(m.eps == 1e-5 for m in norms)  # the yaml's eps
        assert all(m.gain.dim() == 4 for m in norms)  # dcgan's conv maps: spatial
    out = G(torch.randn(3, cfg.trainer.z_dim))
    assert out.shape == (3, *spec.shape) and D(out).shape == (3,)


def test_a_users_network_sees_the_norm_of_its_own_side(user_module: Path) -> None:
    cfg = _users(user_module, "generator=mine", "discriminator=mine", "norm.discriminator=layer")
    spec = data_spec(cfg.data)
    G, D = build_generator(cfg, spec), build_discriminator(cfg, spec)
    assert isinstance(G.net[1], nn.BatchNorm1d) and isinstance(D.body[1], nn.LayerNorm)


BROKEN_CONTRACTS = [
    (
        ("generator=mine", "generator._target_=mynets.Nope"),
        "generator._target_='mynets.Nope': cannot be imported",
    ),
    (
        ("discriminator=mine", "discriminator._target_=mynets.NotANetwork"),
        "discriminator._target_='mynets.NotANetwork': must be a torch.nn.Module subclass",
    ),
    (
        ("generator=mine", "+generator.hiden=8"),
        "generator.hiden=8: not a parameter of mynets.TinyGenerator, which takes hidden",
    ),
    (
        ("generator=mine", "+generator.z_dim=8"),
        "generator.z_dim=8: is set by ganexp (from trainer.z_dim)",
    ),
    (
        ("generator=mine", "generator._target_=mynets.WrongShape"),
        "generator._target_='mynets.WrongShape': forward gives (16, ",
    ),
    (
        (
            "discriminator=mine",
            "discriminator._target_=mynets.PlainCritic",
            "loss.generator_loss=feature_matching",
        ),
        "loss.generator_loss='feature_matching': reads D's features; mynets.PlainCritic "
        "lacks features",
    ),
    (
        (
            "discriminator=mine",
            "discriminator._target_=mynets.PlainCritic",
            "discriminator.batch_view=minibatch_stddev",
        ),
        "discriminator.batch_view='minibatch_stddev': reads D's features; "
        "mynets.PlainCritic lacks features, head, feature_width",
    ),
    (
        (
            "discriminator=mine",
            "discriminator._target_=mynets.PlainCritic",
            "task=semi_supervised",
            "loss.generator_loss=non_saturating",
        ),
        "task.name='semi_supervised': reads D's features; mynets.PlainCritic "
        "lacks features, feature_width",
    ),
    (("norm.discriminator=custom",), "norm.discriminator='custom': needs norm._target_"),
    (
        ("+norm._target_=mynets.RMSNorm",),
        "norm._target_='mynets.RMSNorm': names a norm no network uses",
    ),
    (
        ("norm=mine", "+norm.scale=2"),
        "norm.scale=2: not a parameter of mynets.RMSNorm, which takes eps",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [  # each a ganexp process: two in the fast tier (the in-process check below takes all)
        pytest.param(*case, marks=() if i < 2 else pytest.mark.slow)
        for i, case in enumerate(BROKEN_CONTRACTS)
    ],
)
def test_a_users_part_that_breaks_its_contract_is_one_line_before_training(
    user_folder: Path, overrides: tuple[str, ...], expected: str
) -> None:
    run_dir = user_folder / "run"
    result = ganexp_cmd(
        *TINY,
        "trainer.batch_size=16",
        f"hydra.searchpath=[file://{user_folder}/conf]",
        *overrides,
        "logger=none",
        f"hydra.run.dir={run_dir}",
        cwd=user_folder,
    )
    assert_refused_before_training(result, run_dir, expected)


def test_a_users_part_is_checked_without_a_subprocess(user_module: Path) -> None:
    """The same checks in-process: the norm's keyword set by ganexp is refused by name."""
    cfg = _users(user_module, "norm=mine", "+norm.spatial=false")
    with pytest.raises(ConfigError, match=r"^norm.spatial=False: is set by ganexp"):
        build_generator(cfg, data_spec(cfg.data))
