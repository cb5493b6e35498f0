"""The Dirac-GAN (experiment=dirac_gan): ganexp's own losses, penalties and update schemes move
(theta, psi) exactly as the paper's vector fields do, and the study's report reads a sweep.

The reference below is the paper's code, LMescheder/GAN_stability notebooks/diracgan/gans.py
(the fields) and simulate.py (the updates), transcribed to plain Python; its alternating update
steps D first here, as ganexp does (the notebook steps G first)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from commands import run_command
from helpers import compose_config
from omegaconf import OmegaConf

from ganexp.config import circle, validate
from ganexp.engine.distributed import World
from ganexp.errors import ConfigError
from ganexp.keys import lower_bound
from ganexp.session.dirac import (
    consensus_rate,
    expected_rate,
    paper_rate,
    read_trajectories,
    vector_field,
)
from ganexp.session.run import build_trainer
from ganexp.session.sweep import collect_jobs, metrics_rows
from ganexp.tasks import task_of


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def fp(x: float) -> float:  # f'(t) for f(t) = -log(1 + exp(-t))
    return sigmoid(-x)


def paper_field(method: str, theta: float, psi: float) -> tuple[float, float]:
    """The notebook's _get_vector of each deterministic method."""
    if method == "gan":
        return -psi * fp(psi * theta), theta * fp(psi * theta)
    if method == "nsgan":
        return -psi * fp(-psi * theta), theta * fp(psi * theta)
    if method == "wgan":
        return -psi, theta
    if method == "wgan_gp":  # WGAN_GP(0.7, 1.)
        return -psi, theta - 0.7 * (abs(psi) - 1.0) * math.copysign(1, psi)
    if method in ("consensus", "consensus_notebook"):
        # GAN_Consensus(1.): the field minus grad L, L = 1/2 (psi^2 + theta^2) f'(psi theta)^2.
        # The notebook writes the chain rule's second term with a factor 0.5 where the
        # derivative has 1 ("consensus_notebook" keeps it); ganexp differentiates L exactly.
        f, f2 = fp(psi * theta), -sigmoid(-psi * theta) * sigmoid(psi * theta)
        half = 0.5 if method == "consensus_notebook" else 1.0
        v1reg = theta * f**2 + half * psi * (psi**2 + theta**2) * f * f2
        v2reg = psi * f**2 + half * theta * (psi**2 + theta**2) * f * f2
        return -psi * f - v1reg, theta * f - v2reg
    gamma = {"gradient_penalty": 0.3, "gradient_penalty_critical": 1.0}.get(method, 0.3)
    if method == "nsgan_gradient_penalty":
        return -psi * fp(-psi * theta), theta * fp(psi * theta) - gamma * psi
    return -psi * fp(psi * theta), theta * fp(psi * theta) - gamma * psi


def paper_trajectory(method: str, scheme: str, steps: int) -> list[tuple[float, float]]:
    h, theta, psi = 0.2, 1.0, 1.0
    clip = (lambda p: max(-1.0, min(1.0, p))) if method == "wgan" else (lambda p: p)
    psi = clip(psi)
    path = []
    for _ in range(steps):
        if scheme == "simultaneous":
            v1, v2 = paper_field(method, theta, psi)
            theta, psi = theta + h * v1, clip(psi + h * v2)
        else:
            for _ in range(5 if scheme == "alternating5" else 1):
                psi = clip(psi + h * paper_field(method, theta, psi)[1])
            theta += h * paper_field(method, theta, psi)[0]
        path.append((theta, psi))
    return path


def ganexp_trainer(*overrides: str):
    cfg = validate(compose_config("experiment=dirac_gan", "logger=none", *overrides))
    torch.manual_seed(cfg.seed)
    return build_trainer(cfg, task_of(cfg), torch.device("cpu"), World())


DETERMINISTIC = [
    "gan",
    "nsgan",
    "wgan",
    "wgan_gp",
    "gradient_penalty",
    "gradient_penalty_critical",
    "nsgan_gradient_penalty",
]


@pytest.mark.parametrize("scheme", ["simultaneous", "alternating", "alternating5"])
@pytest.mark.parametrize("method", DETERMINISTIC)
def test_ganexp_moves_as_the_papers_field(method: str, scheme: str) -> None:
    trainer = ganexp_trainer(f"+dirac_method={method}", f"+dirac_scheme={scheme}", "seed=0")
    expected = paper_trajectory(method, scheme, 40)
    for step, (theta, psi) in enumerate(expected, 1):
        trainer.run_step()
        got = (trainer.generator.theta.item(), trainer.discriminator.psi.item())
        assert got == pytest.approx((theta, psi), rel=1e-4, abs=1e-5), (step, got)


def test_consensus_moves_as_the_exact_gradient_of_its_regularizer() -> None:
    """ganexp's consensus step is the field minus the exact gradient of 1/2 |v|^2; the notebook's
    GAN_Consensus halves one chain-rule term, so its first step already differs."""
    trainer = ganexp_trainer("+dirac_method=consensus", "+dirac_scheme=simultaneous", "seed=0")
    path = []
    for step, (theta, psi) in enumerate(paper_trajectory("consensus", "simultaneous", 40), 1):
        trainer.run_step()
        got = (trainer.generator.theta.item(), trainer.discriminator.psi.item())
        path.append(got)
        assert got == pytest.approx((theta, psi), rel=1e-4, abs=1e-5), (step, got)
    (notebook_first,) = paper_trajectory("consensus_notebook", "simultaneous", 1)
    assert abs(path[0][0] - notebook_first[0]) > 0.01  # ganexp does not follow the notebook's


def test_instance_noise_draws_a_fresh_noise_for_every_input_of_d() -> None:
    """Its mean step is the noisy field's: at (1, 1), the notebook's GAN_InstNoise(0.7) field
    averaged over many draws, within the Monte Carlo error of 1000 draws a step."""
    rng = np.random.default_rng(0)
    eps, x_eps = 0.7 * rng.standard_normal(10**6), 0.7 * rng.standard_normal(10**6)
    theta_eps = 1.0 + eps
    v1 = float(np.mean(-1.0 * (1 / (1 + np.exp(theta_eps)))))
    v2 = float(np.mean(theta_eps / (1 + np.exp(theta_eps)) - x_eps / (1 + np.exp(-x_eps))))
    trainer = ganexp_trainer("+dirac_method=instance_noise", "+dirac_scheme=simultaneous")
    theta, psi = trainer.generator.theta, trainer.discriminator.psi
    steps = []
    for _ in range(20):
        with torch.no_grad():
            theta.fill_(1.0)
            psi.fill_(1.0)
        trainer.run_step()
        steps.append(((theta.item() - 1) / 0.2, (psi.item() - 1) / 0.2))
    mean = np.mean(steps, axis=0)
    assert mean == pytest.approx((v1, v2), abs=0.02)
    assert np.std(steps, axis=0).min() > 0  # each step draws its own noise


def test_the_vector_field_is_the_papers() -> None:
    cfg = validate(
        compose_config("experiment=dirac_gan", "+dirac_method=gradient_penalty", "logger=none")
    )
    grid = np.linspace(-2, 2, 5)
    thetas, psis = np.meshgrid(grid, grid, indexing="ij")
    u, v = vector_field(cfg, thetas, psis)
    for index in np.ndindex(thetas.shape):
        expected = paper_field("gradient_penalty", thetas[index], psis[index])
        assert (u[index], v[index]) == pytest.approx(expected, abs=1e-5)


def test_start_points_are_evenly_on_the_circle_through_the_papers_start() -> None:
    r = math.sqrt(2)
    assert (circle(0, 5, r, 45, "x"), circle(0, 5, r, 45, "y")) == pytest.approx((1.0, 1.0))
    points = [(circle(k, 5, r, 45, "x"), circle(k, 5, r, 45, "y")) for k in range(5)]
    assert all(math.hypot(*p) == pytest.approx(r) for p in points)
    cfg = validate(compose_config("experiment=dirac_gan", "seed=3", "logger=none"))
    assert (cfg.generator.start, cfg.discriminator.start) == pytest.approx(points[3])


def test_the_papers_rates() -> None:
    assert paper_rate(0.3, 0.2) == pytest.approx(0.9747, abs=1e-4)
    assert paper_rate(1.0, 0.2) == pytest.approx(0.9)
    assert paper_rate(0.0, 0.2) == pytest.approx(math.sqrt(1.01))
    assert consensus_rate(1.0, 0.2) == pytest.approx(abs(0.95 + 0.1j))
    assert paper_rate(0.3, 0.1) == pytest.approx(abs(1 + 0.1 * complex(-0.15, 0.4770)), abs=1e-4)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ("+dirac_scheme=simultaneous", "trainer.n_critic=5"),
            "trainer.simultaneous=True: takes one critic step per step: trainer.n_critic=1 (not 5)",
        ),
        (("generator=mlp",), "generator.arch='mlp': data=dirac needs generator=dirac"),
        (("data=ring8",), "generator.arch='dirac': needs data=dirac"),
        (("data.std=0.1",), "data.std=0.1: dirac is the point 0: must be 0"),
        (("trainer.ema_decay=0.9",), "trainer.ema_decay=0.9: must be 0 with data=dirac"),
        (("loss.instance_noise=-1",), "loss.instance_noise=-1.0: must be >= 0"),
        (
            ("+dirac_method=consensus", "+dirac_scheme=alternating"),
            "loss.consensus_weight=1.0: needs trainer.simultaneous=true",
        ),
        (
            ("trainer.simultaneous=true", "trainer.replicas=2"),
            "trainer.simultaneous=True: not vectorized across replicas",
        ),
    ],
)
def test_bad_dirac_settings_are_refused_in_one_line(
    tmp_path: Path, overrides: tuple[str, ...], expected: str
) -> None:
    result = run_command("ganexp", "experiment=dirac_gan", "logger=none", *overrides, cwd=tmp_path)
    assert result.returncode == 2
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_the_sweep_writes_the_table_and_portraits(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = run_command(
        "ganexp",
        "-m",
        "experiment=dirac_gan",
        "+dirac_method=gan,gradient_penalty",
        "+dirac_scheme=simultaneous,alternating",
        "seed=0,1",
        "trainer.max_steps=300",
        "logger=none",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert f"Dirac-GAN report: {sweep / 'dirac.md'}" in result.stderr
    runs = read_trajectories(collect_jobs(sweep), metrics_rows)
    assert len(runs) == 8 and all(len(r.theta) == 301 for r in runs)
    gp = [r for r in runs if (r.method, r.scheme) == ("gradient_penalty", "simultaneous")]
    assert all(r.rate() == pytest.approx(0.9747, abs=2e-3) for r in gp)
    gan = [r for r in runs if (r.method, r.scheme) == ("gan", "simultaneous")]
    assert all(r.distance[-1] > r.distance[0] for r in gan)  # it spirals out
    text = (sweep / "dirac.md").read_text()
    assert (
        "| gradient_penalty | simultaneous | 2 |" in text
        and "| 0.9747 | yes | yes | converges |" in text
    )
    assert (sweep / "dirac_gan.png").stat().st_size > 0
    assert (sweep / "dirac_gradient_penalty.png").stat().st_size > 0


def test_evaluating_a_dirac_run_again_says_where_its_metrics_are() -> None:
    """What ganexp-eval builds for a checkpoint: a Dirac run has no evaluator of its own."""
    from ganexp.session.run import build_evaluator

    cfg = validate(compose_config("experiment=dirac_gan", "logger=none"))
    with pytest.raises(ConfigError, match=r"metrics\.jsonl"):
        build_evaluator(cfg, None, torch.device("cpu"))


def test_a_trajectory_read_every_few_steps_still_gives_a_rate_per_step(tmp_path: Path) -> None:
    """Evaluations every 5 steps, and a resumed job's repeated rows: the rate is per step and
    each step counts once (the last row of it)."""
    rows = [{"step": s, "eval/theta": 0.9**s, "eval/psi": 0.0} for s in range(5, 101, 5)]
    rows += [{"step": 50, "eval/theta": 0.9**50, "eval/psi": 0.0}]  # a resume repeats step 50
    OmegaConf.save(compose_config("experiment=dirac_gan", "logger=none"), tmp_path / "config.yaml")
    job = SimpleNamespace(
        overrides=["+dirac_method=gan", "+dirac_scheme=simultaneous"],
        status="completed",
        path=tmp_path,
    )
    (run,) = read_trajectories([job], lambda _: rows)
    assert list(run.steps) == [0, *range(5, 101, 5)]
    assert run.rate() == pytest.approx(0.9)


def test_the_rate_beside_a_cell_is_the_analysis_at_its_own_step_size_and_gamma() -> None:
    cfg = validate(compose_config("experiment=dirac_gan", "+dirac_method=gradient_penalty"))
    assert expected_rate("gradient_penalty", "simultaneous", cfg) == pytest.approx(0.9747, 1e-4)
    slower = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr_g=0.1, lr_d=0.1))
    assert expected_rate("gradient_penalty", "simultaneous", slower) == paper_rate(0.3, 0.1)
    assert expected_rate("gradient_penalty", "alternating", cfg) is None
    assert expected_rate("wgan", "simultaneous", cfg) is None


def test_the_distance_is_plotted_as_never_below_zero() -> None:
    assert lower_bound("eval/distance") == 0.0 and lower_bound("eval/theta") is None
