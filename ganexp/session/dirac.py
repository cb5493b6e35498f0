"""The Dirac-GAN study (``ganexp -m experiment=dirac_gan``): each method and update scheme's
verdict beside the paper's, and a phase portrait per method as the paper draws them.

    ganexp -m experiment=dirac_gan     # its summary writes SWEEP_DIR/dirac.md and dirac_*.png

From each job's trajectory (``eval/theta``, ``eval/psi`` at every step, metrics.jsonl):

- ``final distance``: sqrt(theta^2 + psi^2) at the last step; the start is sqrt 2 away;
- ``rate``: the per-step factor the distance changed by over the second half of the run (the
  exponential of the least-squares slope of log distance on step), to set beside the paper's
  |1 + h lambda| where it gives one;
- whether it converges: its final distance is below 5 % of its start's (instance noise keeps a
  run jittering about 0.01 from (0, 0)); and what it does otherwise: it spirals out (ends over
  1.5 times as far as it started) or stays away (circles, or stalls at a distance).

The paper's verdicts are those of its analysis (Mescheder, Geiger and Nowozin 2018, sec. 3 and
4), which is local, near (0, 0): the unregularized GAN's Jacobian at the equilibrium has the
eigenvalues +-f'(0)i, so simultaneous gradient descent spirals out there (|1 + h lambda| =
sqrt(1 + h^2/4) = 1.005 at h = 0.2) and alternating gradient descent circles; WGAN and WGAN-GP
do not converge; instance noise and
the zero-centred gradient penalty do, the penalty at |1 + h lambda| per step with
lambda = -gamma/2 +- i sqrt(f'(0)^2 - gamma^2/4), f'(0) = 1/2 (0.975 at gamma 0.3; at the
critical gamma = 1 the eigenvalues are both -1/2, 0.9 per step). The paper states no verdict for
five critic steps, nor a rate for alternating updates.

The vector field of a portrait is computed by ganexp's own step: one simultaneous step of
step size 1 from each grid point, of the job's own losses and penalties (weight clipping
included), is the field there.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from ganexp.analysis.cells import t_interval
from ganexp.config import USER_PARTS, RunConfig, register_schema, schema, validate
from ganexp.engine.distributed import World
from ganexp.engine.runfolder import write_atomic
from ganexp.errors import ConfigError
from ganexp.session.run import build_trainer
from ganexp.tasks import task_of

Rows = Callable[[Path], Iterable[dict]]  # a job folder's metrics.jsonl rows (session.sweep's)

METHODS = (
    "gan",
    "nsgan",
    "wgan",
    "wgan_gp",
    "instance_noise",
    "gradient_penalty",
    "gradient_penalty_critical",
    "nsgan_gradient_penalty",
    "consensus",
)
SCHEMES = ("simultaneous", "alternating", "alternating5")
# whether the paper's analysis says a method converges, by (method, scheme), sec. 3-4 (local
# convergence near (0, 0)); absent: the paper states nothing for that scheme
NOT_CONVERGENT = ("gan", "nsgan", "wgan", "wgan_gp")
PAPER_CONVERGES = {
    (method, scheme): method not in NOT_CONVERGENT
    for method in METHODS
    for scheme in ("simultaneous", "alternating")
    if method != "consensus" or scheme == "simultaneous"  # it needs simultaneous updates
}
F_PRIME = 0.5  # f'(0) of the paper's analysis: 1/2 for the GAN and NS-GAN losses


def paper_rate(gamma: float, h: float) -> float:
    """|1 + h lambda| of simultaneous gradient descent (step h) near the equilibrium, with the
    zero-centred penalty gamma."""
    if gamma**2 / 4 <= F_PRIME**2:
        lam = complex(-gamma / 2, math.sqrt(F_PRIME**2 - gamma**2 / 4))
        return abs(1 + h * lam)
    root = math.sqrt(gamma**2 / 4 - F_PRIME**2)
    return max(abs(1 + h * (-gamma / 2 + sign * root)) for sign in (1, -1))


def consensus_rate(gamma: float, h: float) -> float:
    """|1 + h lambda| of consensus optimization's linearized field near (0, 0): its L is
    (theta^2 + psi^2) f'(0)^2 / 2 there, so lambda = -gamma f'(0)^2 +- i f'(0) (our derivation
    from the notebook's GAN_Consensus; the paper prints no rate for it)."""
    return abs(1 + h * complex(-gamma * F_PRIME**2, F_PRIME))


# the (method, scheme) cells whose rate the analysis gives: simultaneous gradient descent with
# f'(0) = 1/2 (the GAN and NS-GAN losses), optionally penalized or with consensus
RATED_METHODS = (
    "gan",
    "nsgan",
    "gradient_penalty",
    "gradient_penalty_critical",
    "nsgan_gradient_penalty",
    "consensus",
)


def expected_rate(method: str, scheme: str, config: RunConfig) -> float | None:
    """The analysis' rate for a cell, from its own config's step size and gamma (what it ran
    with, not the paper's defaults); None where the analysis gives none or G and D step
    differently."""
    h = config.optim.lr_d
    if scheme != "simultaneous" or method not in RATED_METHODS or config.optim.lr_g != h:
        return None
    if method == "consensus":
        return consensus_rate(config.loss.consensus_weight, h)
    return paper_rate(config.loss.r1_weight, h)


@dataclass
class Trajectory:
    method: str
    scheme: str
    seed: int
    theta: np.ndarray
    psi: np.ndarray
    start: tuple[float, float]
    config: RunConfig

    steps: np.ndarray  # the step of each (theta, psi): 0 for the start

    @property
    def distance(self) -> np.ndarray:
        return np.hypot(self.theta, self.psi)

    def rate(self) -> float:
        """The per-step factor of the distance over the second half of the run (by step, so
        evaluations every k steps give a factor per step too)."""
        late = self.steps >= self.steps[-1] / 2
        logs = np.log(np.maximum(self.distance[late], 1e-300))
        return float(math.exp(np.polyfit(self.steps[late], logs, 1)[0]))

    def converges(self) -> bool:
        """Whether the run ends within 5 % of its start distance of (0, 0)."""
        return float(self.distance[-1]) < 0.05 * math.hypot(*self.start)

    def behaviour(self) -> str:
        """What the run does: converges, spirals out (ends over 1.5 times as far as it
        started), or stays at a distance (circles, or stalls)."""
        if self.converges():
            return "converges"
        return "spirals out" if self.distance[-1] > 1.5 * math.hypot(*self.start) else "stays away"


def _choice(overrides: Sequence[str], key: str) -> str | None:
    for override in overrides:
        name, _, value = override.lstrip("+").partition("=")
        if name == key:
            return value
    return None


def _job_config(path: Path) -> RunConfig:
    """A job's saved config, typed. The vector field rebuilds its networks and losses, so a
    config that names a class (``_target_``) is refused: nothing read from a file chooses code
    to run."""
    saved = OmegaConf.load(path)
    for node in USER_PARTS:
        target = OmegaConf.select(saved, f"{node}._target_")
        if target is not None:
            allowed = "the Dirac-GAN report rebuilds only ganexp's own parts"
            raise ConfigError(f"{node}._target_", target, f"in {path}: {allowed}")
    return validate(OmegaConf.merge(schema(), saved))


def read_trajectories(jobs: Iterable, rows: Rows) -> list[Trajectory]:
    """Every completed job's trajectory (``jobs``: the sweep's JobResults), with its start
    point prepended."""
    register_schema()
    found = []
    for job in jobs:
        method = _choice(job.overrides, "dirac_method")
        scheme = _choice(job.overrides, "dirac_scheme")
        if job.status != "completed" or method is None or scheme is None:
            continue
        config = _job_config(job.path / "config.yaml")
        start = (config.generator.start, config.discriminator.start)
        # by step, the last row of each (a resumed job repeats the steps since its checkpoint)
        states = {r["step"]: r for r in rows(job.path) if "eval/theta" in r}
        steps = sorted(s for s in states if s > 0)
        theta = np.array([start[0], *(states[s]["eval/theta"] for s in steps)])
        psi = np.array([start[1], *(states[s]["eval/psi"] for s in steps)])
        at = np.array([0, *steps], dtype=float)
        found.append(Trajectory(method, scheme, config.seed, theta, psi, start, config, at))
    return found


def vector_field(
    config: RunConfig, thetas: np.ndarray, psis: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(d theta, d psi) at each grid point: one simultaneous step of size 1 of ``config``'s own
    losses and penalties (its optimizer is plain SGD), from that point."""
    trainer_cfg = dataclasses.replace(config.trainer, simultaneous=True, n_critic=1)
    optim = dataclasses.replace(config.optim, lr_g=1.0, lr_d=1.0)
    cfg = dataclasses.replace(config, trainer=trainer_cfg, optim=optim)
    trainer = build_trainer(cfg, task_of(cfg), torch.device("cpu"), World())
    theta, psi = trainer.generator.theta, trainer.discriminator.psi
    u, v = np.zeros_like(thetas), np.zeros_like(psis)
    for index in np.ndindex(thetas.shape):
        with torch.no_grad():
            theta.fill_(float(thetas[index]))
            psi.fill_(float(psis[index]))
        trainer.run_step()
        u[index] = theta.item() - thetas[index]
        v[index] = psi.item() - psis[index]
    return u, v


def portrait(method: str, runs: list[Trajectory], path: Path) -> None:
    """The method's field and trajectories, one panel per update scheme."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    schemes = [s for s in SCHEMES if any(r.scheme == s for r in runs)]
    fig, axes = plt.subplots(1, len(schemes), figsize=(4.2 * len(schemes), 4.4), squeeze=False)
    grid = np.linspace(-2, 2, 10)  # the notebook's theta_s, psi_s
    thetas, psis = np.meshgrid(grid, grid, indexing="ij")
    u, v = vector_field(runs[0].config, thetas, psis)
    for ax, scheme in zip(axes[0], schemes, strict=True):
        ax.quiver(thetas, psis, u, v, color="0.55", angles="xy")
        for run in sorted((r for r in runs if r.scheme == scheme), key=lambda r: r.seed):
            paper_start = run.seed == 0
            ax.plot(run.theta, run.psi, lw=1.4 if paper_start else 0.8, alpha=0.9)
            ax.plot(*run.start, "o", ms=4, color="k" if paper_start else "0.4")
        ax.plot(0, 0, "*", ms=10, color="tab:red")
        ax.set(xlim=(-2.2, 2.2), ylim=(-2.2, 2.2), xlabel="theta", ylabel="psi", title=scheme)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=9)
    fig.suptitle(f"Dirac-GAN, {method}: field and trajectories (black start: the paper's)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _summary(values: Sequence[float], digits: int = 3) -> str:
    mean = float(np.mean(values))
    interval = t_interval(values)
    if interval is None:
        return f"{mean:.{digits}g}"
    return f"{mean:.{digits}g} [{interval[0]:.{digits}g}, {interval[1]:.{digits}g}]"


def _counted(values: Sequence[str]) -> str:
    kinds = sorted(set(values))
    if len(kinds) == 1:
        return kinds[0]
    return ", ".join(f"{values.count(kind)} {kind}" for kind in kinds)


def table(runs: list[Trajectory]) -> str:
    """The study's table: method x scheme, over the start points."""
    lines = [
        "| method | scheme | n | final distance, mean [95 % CI] | rate per step, mean [95 % CI]"
        " | paper's rate | converges: ours | paper's | what ours does |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method in METHODS:
        for scheme in SCHEMES:
            cell = [r for r in runs if (r.method, r.scheme) == (method, scheme)]
            if not cell:
                continue
            rates = {expected_rate(method, scheme, r.config) for r in cell}
            rate = rates.pop() if len(rates) == 1 else None
            paper = PAPER_CONVERGES.get((method, scheme))
            lines.append(
                f"| {method} | {scheme} | {len(cell)} "
                f"| {_summary([float(r.distance[-1]) for r in cell])} "
                f"| {_summary([r.rate() for r in cell], 5)} "
                f"| {'-' if rate is None else f'{rate:.4f}'} "
                f"| {_counted(['yes' if r.converges() else 'no' for r in cell])} "
                f"| {'-' if paper is None else ('yes' if paper else 'no')} "
                f"| {_counted([r.behaviour() for r in cell])} |"
            )
    return "\n".join(lines)


def write_report(sweep_dir: Path, jobs: Iterable, rows: Rows) -> Path | None:
    """``dirac.md`` (the table and the portraits) and ``dirac_<method>.png`` in ``sweep_dir``
    from its completed jobs; None when none of them is a Dirac-GAN method's."""
    runs = read_trajectories(jobs, rows)
    if not runs:
        return None
    figures = []
    for method in METHODS:
        mine = [r for r in runs if r.method == method]
        if mine:
            path = sweep_dir / f"dirac_{method}.png"
            portrait(method, mine, path)
            figures.append(f"![{method}]({path.name})")
    intro = (
        "Each cell over its start points (seed 0 is the paper's (1, 1)); verdicts and rates as "
        "`ganexp.session.dirac` defines them, the paper's from its sec. 3-4."
    )
    text = f"# Dirac-GAN: which training methods converge\n\n{intro}\n\n{table(runs)}\n\n"
    path = sweep_dir / "dirac.md"
    report = text + "\n".join(figures) + "\n"
    write_atomic(path, lambda f: f.write(report.encode("utf-8")))
    return path
