"""The design-space options: hinge and least-squares losses with every norm, R1 with any loss, a
user's own loss class from a folder outside the repository, the generator's EMA and historical
averaging."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
import yaml
from helpers import (
    assert_refused_before_training,
    assert_same_weights,
    cli_sweep,
    compose_config,
    smoke_session,
)
from test_sweeps import TINY, ganexp_cmd

from ganexp.cli.restore import sampler_weights
from ganexp.engine.checkpoint import load_checkpoint
from ganexp.parts.losses import HistoricalAverage
from ganexp.parts.terms import Historical
from ganexp.session.preflight import plan_job
from ganexp.session.run import execute
from ganexp.tracking.runfile import load_run

NORMS = ("batch", "layer", "instance", "group", "spectral", "none")


def logged(run_dir: Path) -> list[dict]:
    """The training-statistics rows of the W&B run file (what the dashboard plots)."""
    return [row for row in load_run(run_dir).history if "loss/d" in row]


@pytest.mark.slow
def test_r1_with_a_lazy_interval_is_logged_with_any_loss(tmp_path: Path) -> None:
    """n_critic = 1 and r1_every = 2: the penalty is on steps 1, 3 (critic steps 0, 2) only, so
    with log_every = 1 the logged loss/r1 is positive on odd steps and zero on even ones."""
    run_dir = tmp_path / "run"
    result = ganexp_cmd(
        *TINY,
        "trainer.max_steps=4",
        "loss=hinge",
        "loss.r1_weight=10",
        "loss.r1_every=2",
        "logger.mode=offline",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = logged(run_dir)
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    r1 = [row["loss/r1"] for row in rows]
    assert r1[0] > 0 and r1[2] > 0 and r1[1] == 0 and r1[3] == 0, r1


USER_LOSS = '''
    import torch

    from ganexp.losses import GANLoss


    class MarginLoss(GANLoss):
        """Hinge with a margin of the user's choice; writes what it was built with."""

        def __init__(self, margin: float = 1.0) -> None:
            self.margin = margin
            self.calls = open("margin_loss.log", "a")
            print(f"built margin={margin}", file=self.calls, flush=True)

        def d_loss(self, real_out, fake_out):
            print("d_loss", file=self.calls, flush=True)
            real = torch.relu(self.margin - real_out).mean()
            return real + torch.relu(self.margin + fake_out).mean()

        def g_loss(self, fake_out):
            print("g_loss", file=self.calls, flush=True)
            return -fake_out.mean()
'''

USER_CONFIG = """
    # @package _global_
    loss:
      _target_: mylosses.MarginLoss
      margin: 2.0
"""


@pytest.fixture
def user_folder(tmp_path: Path) -> Path:
    """A user's project: their loss module and a config dir with conf/loss/mine.yaml."""
    folder = tmp_path / "my_project"
    (folder / "conf" / "loss").mkdir(parents=True)
    (folder / "mylosses.py").write_text(textwrap.dedent(USER_LOSS))
    (folder / "conf" / "loss" / "mine.yaml").write_text(textwrap.dedent(USER_CONFIG))
    return folder


@pytest.mark.slow  # a ganexp process that trains
def test_a_users_loss_from_their_own_folder_trains(user_folder: Path) -> None:
    """The README's example, with R1 added to show the contract survives the interface's growth."""
    run_dir = user_folder / "run"
    result = ganexp_cmd(
        *TINY,
        f"hydra.searchpath=[file://{user_folder}/conf]",
        "loss=mine",
        "loss.r1_weight=1",
        "logger.mode=offline",
        f"hydra.run.dir={run_dir}",
        cwd=user_folder,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    calls = (user_folder / "margin_loss.log").read_text().splitlines()
    assert calls[-1] == "g_loss" and "d_loss" in calls
    built = [line for line in calls if line.startswith("built")]
    assert built and set(built) == {"built margin=2.0"}  # checked before training, then trained
    run = load_run(run_dir)
    assert run.config["loss"]["_target_"] == "mylosses.MarginLoss"
    assert run.config["loss"]["margin"] == 2.0
    # the config shown, saved and sent to W&B holds what is read: no built-in loss's keys
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())["loss"]
    for shown in (run.config["loss"], saved):
        assert not {"name", "gp_weight", "clip_value", "label_smoothing"} & set(shown)
        assert shown["r1_weight"] == 1.0  # read by the R1 term, with any loss
    assert "loss=mylosses.MarginLoss" in run.run.tags
    assert logged(run_dir)[-1]["loss/r1"] > 0


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "+loss.margn=3",
            "loss.margn=3: not a parameter of mylosses.MarginLoss, which takes margin",
        ),
        pytest.param(  # each a ganexp process: one of them in the fast tier
            "loss._target_=mylosses.Margin",
            "loss._target_='mylosses.Margin': cannot be imported",
            marks=pytest.mark.slow,
        ),
        pytest.param(  # a key nothing reads: MarginLoss does not take it
            "loss.gp_weight=3",
            "loss.gp_weight=3.0: only loss=wgan_gp reads it (or a user's loss whose constructor "
            "takes gp_weight); nothing reads it under mylosses.MarginLoss",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            "loss._target_=torch.nn.MSELoss",
            "loss._target_='torch.nn.MSELoss': must be a subclass of ganexp.losses.GANLoss",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_a_bad_users_loss_is_one_line_before_training(
    user_folder: Path, override: str, expected: str
) -> None:
    run_dir = user_folder / "run"
    result = ganexp_cmd(
        *TINY,
        f"hydra.searchpath=[file://{user_folder}/conf]",
        "loss=mine",
        override,
        "logger=none",
        f"hydra.run.dir={run_dir}",
        cwd=user_folder,
    )
    assert_refused_before_training(result, run_dir, expected)


# --- the generator's EMA (trainer.ema_decay) ---------------------------------------------------


def test_the_ema_generator_is_the_hand_computed_average(tmp_path: Path) -> None:
    """e_1 = w_1, then e_t = d * e_(t-1) + (1 - d) * w_t, for weights and batch norm buffers."""
    decay = 0.75
    trainer = smoke_session(tmp_path, f"trainer.ema_decay={decay}").trainer
    expected: dict[str, torch.Tensor] = {}
    for _ in range(3):
        trainer.run_step()
        trainer.step += 1
        now = {k: v.detach().clone() for k, v in trainer.generator.state_dict().items()}
        now = {k: v for k, v in now.items() if v.is_floating_point()}
        expected = {
            k: decay * expected[k] + (1 - decay) * w if expected else w for k, w in now.items()
        }
    averaged = trainer.sampler.state_dict()
    assert trainer.sampler is not trainer.generator
    assert not torch.equal(averaged["net.0.weight"], trainer.generator.state_dict()["net.0.weight"])
    for key, value in expected.items():
        torch.testing.assert_close(averaged[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_without_ema_the_generator_samples(tmp_path: Path) -> None:
    trainer = smoke_session(tmp_path).trainer
    assert trainer.ema is None and trainer.sampler is trainer.generator


@pytest.mark.slow
def test_ema_is_checkpointed_resumed_exactly_and_sampled_from(tmp_path: Path) -> None:
    ema = ("trainer.ema_decay=0.9", "trainer.checkpoint_every=2", "trainer.eval_every=2")
    execute(smoke_session(tmp_path / "whole", *ema, "trainer.max_steps=4"))
    execute(smoke_session(tmp_path / "halves", *ema, "trainer.max_steps=2"))
    execute(smoke_session(tmp_path / "halves", *ema, "trainer.max_steps=4"))  # resumes at 2
    whole, halves = (tmp_path / name / "checkpoints" for name in ("whole", "halves"))
    assert_same_weights(whole / "last.pt", halves / "last.pt")  # G, D and G's EMA
    for name in ("last.pt", "best.pt"):
        state = load_checkpoint(whole / name)
        assert int(state["generator_ema"]["n_averaged"]) == state["step"]
        weights = sampler_weights(state)  # what ganexp-sample and ganexp-eval restore
        assert weights.keys() == state["generator"].keys()
        assert torch.equal(weights["net.0.weight"], state["generator_ema"]["module.net.0.weight"])
        assert not torch.equal(weights["net.0.weight"], state["generator"]["net.0.weight"])


# --- historical averaging (loss.historical_weight) ---------------------------------------------


def test_historical_averaging_by_hand() -> None:
    """After parameters w0 (initial), w1, w2 the mean is (w0 + w1 + w2) / 3; the penalty is
    weight * |w - mean|^2 and its gradient 2 * weight * (w - mean), the mean held constant."""
    net = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[0.0, 3.0]]))
    hist = HistoricalAverage(net, weight=0.5)
    for value in ([[3.0, 0.0]], [[6.0, 3.0]]):
        with torch.no_grad():
            net.weight.copy_(torch.tensor(value))
        hist.update(net)
    # mean [3, 2]; w = [6, 3]: |w - mean|^2 = 9 + 1
    penalty = hist(net)
    assert penalty.item() == pytest.approx(0.5 * 10)
    penalty.backward()
    torch.testing.assert_close(net.weight.grad, torch.tensor([[3.0, 1.0]]))


def test_historical_averages_follow_every_step_and_a_rewind(tmp_path: Path) -> None:
    trainer = smoke_session(tmp_path, "loss.historical_weight=0.01", "loss=wgan_gp").trainer
    g_hist, d_hist = (
        term.average
        for player in "gd"
        for term in trainer.terms
        if isinstance(term, Historical) and term.player == player
    )
    for _ in range(2):
        trainer.run_step()
        trainer.step += 1
    assert int(g_hist.state_dict()["n_averaged"]) == 1 + 2  # the initial weights, then 2 steps
    assert int(d_hist.state_dict()["n_averaged"]) == 1 + 2 * trainer.n_critic
    stats = trainer.pop_stats()
    assert stats["loss/hist_d"] > 0 and stats["loss/hist_g"] > 0
    before = {k: v.clone() for k, v in d_hist.state_dict().items()}
    trainer._before_step = trainer._step_state()
    trainer.run_step()  # a step a stop signal abandons: everything it changed goes back
    trainer.rewind_step()
    for key, value in d_hist.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.slow
def test_historical_averages_are_checkpointed_and_resumed_exactly(tmp_path: Path) -> None:
    hist = ("loss.historical_weight=0.01", "trainer.checkpoint_every=2")
    execute(smoke_session(tmp_path / "whole", *hist, "trainer.max_steps=4"))
    execute(smoke_session(tmp_path / "halves", *hist, "trainer.max_steps=2"))
    execute(smoke_session(tmp_path / "halves", *hist, "trainer.max_steps=4"))
    whole, halves = (tmp_path / name / "checkpoints" / "last.pt" for name in ("whole", "halves"))
    assert_same_weights(whole, halves)
    assert {"historical_g", "historical_d"} <= load_checkpoint(whole).keys()


@pytest.mark.slow
def test_feature_matching_trains_with_packing_and_diffaug(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = ganexp_cmd(
        *TINY,
        "loss.generator_loss=feature_matching",
        "discriminator.pack=2",
        "data.augment=diffaug",
        "logger.mode=offline",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = logged(run_dir)
    assert [row["step"] for row in rows] == [1, 2]
    assert all(row["loss/g"] >= 0 for row in rows)  # a mean of squares, not an adversarial loss


# --- every option with every norm it allows ------------------------------------------------------


# each option as a user would give it, and what shows it took effect in the finished job
class Option(NamedTuple):
    """One design-space option: its overrides, what its networks show when built (None: nothing
    in them), and what a trained run of it shows."""

    overrides: tuple[str, ...]
    built: Callable[[dict[str, dict]], bool] | None  # on {"generator": ..., "discriminator": ...}
    trained: Callable[[FinishedJob], bool]


def _keys(network: str, has: Callable[[str], bool]) -> Callable[[dict[str, dict]], bool]:
    return lambda state: any(has(key) for key in state[network])


def _adversarial_loss(name: str) -> Callable[[FinishedJob], bool]:
    """A loss without a penalty of its own: it trained, and logged no penalty."""
    return lambda job: (
        job.config["loss"]["name"] == name and not (job.logged("loss/gp") or job.logged("loss/r1"))
    )


OPTIONS: dict[str, Option] = {
    "hinge": Option(("loss=hinge",), None, _adversarial_loss("hinge")),
    "lsgan": Option(("loss=lsgan",), None, _adversarial_loss("lsgan")),
    "r1": Option(
        ("loss.r1_weight=1.0", "loss.r1_every=2"), None, lambda job: job.logged("loss/r1")
    ),
    "feature_matching": Option(
        ("loss.generator_loss=feature_matching",),
        None,
        lambda job: job.config["loss"]["generator_loss"] == "feature_matching",
    ),
    "historical": Option(
        ("loss.historical_weight=0.01",), None, lambda job: "historical_d" in job.state
    ),
    "ema": Option(("trainer.ema_decay=0.9",), None, lambda job: "generator_ema" in job.state),
    "diffaug": Option(
        ("data.augment=diffaug",), None, lambda job: job.config["data"]["augment"] == "diffaug"
    ),
    "resnet": Option(
        ("generator=resnet", "discriminator=resnet"),
        _keys("discriminator", lambda key: ".shortcut." in key),
        lambda job: job.config["discriminator"]["arch"] == "resnet",
    ),
    "minibatch_discrimination": Option(
        ("discriminator.batch_view=minibatch_discrimination",),
        _keys("discriminator", lambda key: key == "statistic.theta"),
        lambda job: job.config["discriminator"]["batch_view"] == "minibatch_discrimination",
    ),
    "minibatch_stddev": Option(
        ("discriminator.batch_view=minibatch_stddev",),
        _keys("discriminator", lambda key: key.startswith("linear.")),
        lambda job: job.config["discriminator"]["batch_view"] == "minibatch_stddev",
    ),
    "pack": Option(
        ("discriminator.pack=2",), None, lambda job: job.config["discriminator"]["pack"] == 2
    ),
    "projection": Option(
        ("conditional=true", "discriminator.conditioning=projection"),
        _keys("discriminator", lambda key: "embed" in key),
        lambda job: job.config["discriminator"]["conditioning"] == "projection",
    ),
    "init_orthogonal": Option(
        ("generator.init=orthogonal", "discriminator.init=orthogonal"),
        None,
        lambda job: job.config["generator"]["init"] == "orthogonal",
    ),
    # G's norm is virtual batch norm whatever the norm axis says; the axis sets D's
    "virtual_batch": Option(
        ("norm.generator=virtual_batch",),
        _keys("generator", lambda key: key.endswith("reference_z")),
        lambda job: job.config["norm"]["generator"] == "virtual_batch",
    ),
}
# G's conditional batch norm takes G's norm from the norm axis: the four norms with an affine
CBN = Option(
    ("conditional=true", "generator.conditioning=cbn"),
    _keys("generator", lambda key: ".gamma.weight" in key),
    lambda job: job.config["generator"]["conditioning"] == "cbn",
)
CBN_NORMS = ("batch", "layer", "instance", "group")


class FinishedJob:
    def __init__(self, folder: Path) -> None:
        self.run = load_run(folder)
        self.config = self.run.config
        self.state = load_checkpoint(folder / "checkpoints" / "last.pt")
        self.rows = logged(folder)

    def logged(self, key: str) -> bool:
        return any(row.get(key, 0) > 0 for row in self.rows)


def _every_combination() -> list[tuple[str, Option, str]]:
    combos = [(name, option, norm) for name, option in OPTIONS.items() for norm in NORMS]
    return combos + [("cbn", CBN, norm) for norm in CBN_NORMS]


@pytest.mark.slow  # 88 plans, each composed, validated and built on the meta device
def test_every_option_builds_with_every_norm_it_allows() -> None:
    """Each option x each of the six norms (cbn: the four with an affine), checked as a job is
    before it trains: validated, its data's spec read, both networks built on the meta device and
    run forward on a batch there (the memory estimate). Each shows the option in its layers."""
    for name, option, norm in _every_combination():
        plan = plan_job(compose_config(*TINY, *option.overrides, f"norm={norm}"))
        assert plan.cfg.norm.discriminator == norm, (name, norm)
        assert next(plan.discriminator.parameters()).is_meta
        nets = {"generator": plan.generator, "discriminator": plan.discriminator}
        state = {network: net.state_dict() for network, net in nets.items()}
        assert option.built is None or option.built(state), (name, norm)


@pytest.mark.slow
def test_each_option_trains_and_logs_to_wandb(tmp_path: Path) -> None:
    """Each option trained through one CLI sweep, W&B offline, the norms taken in turn so that
    each of the six trains twice (and cbn with two of its four): every job completes, logs both
    steps, and shows its option took effect, in its config and in its checkpoint's networks.
    Every option x norm builds and runs forward in the test above."""
    jobs = [
        (name, option, NORMS[i % len(NORMS)]) for i, (name, option) in enumerate(OPTIONS.items())
    ]
    jobs += [("cbn", CBN, norm) for norm in CBN_NORMS[1::2]]
    cases = {f"{name}-{norm}": (*option.overrides, f"norm={norm}") for name, option, norm in jobs}
    assert {norm for _, _, norm in jobs} == set(NORMS)
    folders = cli_sweep(tmp_path, cases, *TINY, "logger.mode=offline")
    for name, option, norm in jobs:
        folder = folders[f"{name}-{norm}"]
        assert json.loads((folder / "job.json").read_text())["status"] == "completed"
        job = FinishedJob(folder)
        assert job.config["norm"]["discriminator"] == norm, (name, norm)
        assert [row["step"] for row in job.rows] == [1, 2], (name, norm)
        assert option.trained(job), (name, norm)
        assert option.built is None or option.built(job.state), (name, norm)
