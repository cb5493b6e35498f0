"""trainer.replicas=K: K seeds trained as one stacked model, each replica the run its seed would
be on its own (to rounding), with the outputs of a run of its own, counted as seeds by a sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import checkpoint_weights, compose_config, smoke_config, smoke_run, torch_threads
from test_sweeps import TINY, TOY, ganexp_cmd, read_csv

from ganexp.errors import ConfigError
from ganexp.metrics import evaluator
from ganexp.session.preflight import check_config
from ganexp.session.run import build_replicas, execute_sessions, train_replicas
from ganexp.tracking.runfile import load_run

SLOW = pytest.mark.slow  # for the cases of a test whose others stay in the fast tier
MLP = ("data=ring8", "generator=mlp", "discriminator=mlp")
QUIET = ("metrics.enabled=false", "trainer.checkpoint_every=100")


def _max_difference(a: Path, b: Path) -> float:
    wa, wb = checkpoint_weights(a), checkpoint_weights(b)
    assert wa.keys() == wb.keys()
    return max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa)


def _replicas_against_separate_runs(tmp_path: Path, k: int, *overrides: str) -> list[float]:
    """Train k replicas and the k separate runs (seeds 0..k-1); each replica's largest weight
    difference (G, D) from its separate run."""
    cfg, resolved = smoke_config(*QUIET, *overrides, f"trainer.replicas={k}")
    outcomes = train_replicas(cfg, resolved, tmp_path / "replicas", name="r", group=None)
    assert [error for _, error in outcomes] == [None] * k
    differences = []
    for seed in range(k):
        smoke_run(tmp_path / f"seed{seed}", *QUIET, *overrides, f"seed={seed}")
        replica = tmp_path / "replicas" / f"replica_{seed}" / "checkpoints" / "last.pt"
        separate = tmp_path / f"seed{seed}" / "checkpoints" / "last.pt"
        differences.append(_max_difference(replica, separate))
    return differences


@pytest.fixture
def float64():
    """Networks, noise and toy data in float64: rounding too small to hide a wrong draw or a
    wrong update, and too small for Adam to blow up (see the fp32 test below)."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize(
    ("norm", "loss"),
    [
        pytest.param(norm, loss, marks=[] if (norm, loss) == ("spectral", "bce") else [SLOW])
        for norm in ("batch", "layer", "spectral")
        for loss in ("bce", "wgan_clip", "wgan_gp")
    ],
)
def test_each_replica_is_its_separate_run_over_20_steps_in_float64(
    tmp_path: Path, float64: None, loss: str, norm: str
) -> None:
    """Every replica's weights, batch norm statistics and power-iteration vectors after 20
    steps (WGAN's five critic steps each) are its separate run's, to 1e-6 (measured: 1e-9 or
    less): the same batches, noise, interpolations, clipping and updates. A wrong draw or a
    mixed-up replica would be off by orders of magnitude more."""
    overrides = (*MLP, f"norm={norm}", f"loss={loss}", "trainer.max_steps=20")
    assert max(_replicas_against_separate_runs(tmp_path, 2, *overrides)) < 1e-6


@pytest.mark.slow
@pytest.mark.parametrize(
    ("loss", "norm"),
    [("bce", "layer"), ("bce", "spectral"), ("wgan_gp", "layer"), ("wgan_gp", "spectral")],
)
def test_replicas_stay_within_1e_4_of_their_separate_runs_over_20_steps_in_fp32(
    tmp_path: Path, loss: str, norm: str
) -> None:
    """Issue 13's fp32 bar, where it holds here. Where it does not (batch norm; weight clipping
    with layer norm), batched kernels round differently, and Adam and RMSprop turn a
    rounding-size difference in a near-zero gradient into a step of the learning rate's size:
    README "Replicas" gives the measured figures; in float64 (above) every case holds.
    Measured with torch's 2 threads (with 1, WGAN-GP with layer norm ends 1.1e-4 apart)."""
    overrides = (*MLP, f"norm={norm}", f"loss={loss}", "trainer.max_steps=20")
    with torch_threads(2):
        assert max(_replicas_against_separate_runs(tmp_path, 2, *overrides)) < 1e-4


def _first_d_loss(run_dir: Path) -> float:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return next(row["loss/d"] for row in rows if row.get("step") == 1 and "loss/d" in row)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("loss", "norm"), [("bce", "batch"), ("wgan_gp", "layer"), ("wgan_clip", "spectral")]
)
def test_dcgan_replicas_on_the_cpu_are_their_separate_runs_bit_for_bit(
    tmp_path: Path, loss: str, norm: str
) -> None:
    """Conv networks on the CPU are not vectorized (vmap's grouped convolutions are slower
    there): each replica takes its own step in its own stream, so after 5 steps in fp32 its
    weights, statistics and power-iteration vectors are its separate run's exactly."""
    overrides = (f"norm={norm}", f"loss={loss}", "trainer.max_steps=5")
    assert _replicas_against_separate_runs(tmp_path, 2, *overrides) == [0.0, 0.0]


@pytest.mark.slow
def test_vectorized_dcgan_replicas_take_the_first_step_of_their_separate_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stacked path for conv networks (what a GPU runs): the first step's D loss, on the
    initial weights with the replica's own batch and noise, is its separate run's to rounding."""
    monkeypatch.setattr("ganexp.session.run.vectorize", lambda networks, device: True)
    for norm in ("batch", "layer", "spectral"):
        overrides = (f"norm={norm}", "trainer.max_steps=1", "trainer.log_every=1")
        _replicas_against_separate_runs(tmp_path / norm, 2, *overrides)
        for k in range(2):
            replica = _first_d_loss(tmp_path / norm / "replicas" / f"replica_{k}")
            assert replica == pytest.approx(_first_d_loss(tmp_path / norm / f"seed{k}"), rel=1e-5)


def test_replicas_share_the_real_side_of_evaluation_and_score_as_their_separate_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replica 1 evaluates with replica 0's extractor, reference and real k-NN radii (loaded
    and computed once), against its own generated side: its metrics are its separate run's."""
    overrides = ("trainer.max_steps=2", "trainer.checkpoint_every=100")
    cfg, resolved = smoke_config(*overrides, "trainer.replicas=2")
    loads = []
    build_extractor = evaluator.build_extractor
    monkeypatch.setattr(
        evaluator, "build_extractor", lambda *a: loads.append(a) or build_extractor(*a)
    )
    sessions, _ = build_replicas(cfg, resolved, tmp_path / "replicas", name="r", group=None)
    assert len(loads) == 1  # the extractor is loaded once, for both replicas
    monkeypatch.undo()
    results = execute_sessions(sessions)
    first, second = (session.evaluate.evaluate for session in sessions)
    assert second.extractor is first.extractor
    for mine, shared in zip(second.sides, first.sides, strict=True):
        assert mine.reference is shared.reference and mine.manifold is shared.manifold
        assert mine.fd is not shared.fd
    for k in range(2):
        separate = smoke_run(tmp_path / f"seed{k}", *overrides, f"seed={k}")
        assert results[k].final == separate.final, k
    assert results[0].final != results[1].final


@pytest.mark.parametrize(
    "networks", [MLP, pytest.param((), marks=SLOW)], ids=["stacked-mlp", "dcgan-in-turn"]
)
def test_a_resumed_replica_run_equals_an_uninterrupted_one(
    tmp_path: Path, networks: tuple[str, ...]
) -> None:
    overrides = (*networks, "norm=batch", "loss=wgan_gp", "trainer.replicas=2", *QUIET)
    cfg, resolved = smoke_config(*overrides, "trainer.max_steps=4")
    train_replicas(cfg, resolved, tmp_path / "whole", name="r", group=None)
    short, short_resolved = smoke_config(*overrides, "trainer.max_steps=2")
    train_replicas(short, short_resolved, tmp_path / "resumed", name="r", group=None)
    train_replicas(cfg, resolved, tmp_path / "resumed", name="r", group=None)  # continues
    for k in range(2):
        whole = tmp_path / "whole" / f"replica_{k}" / "checkpoints" / "last.pt"
        resumed = tmp_path / "resumed" / f"replica_{k}" / "checkpoints" / "last.pt"
        assert _max_difference(whole, resumed) == 0.0, k


@pytest.mark.parametrize("networks", [MLP, ()], ids=["stacked-mlp", "dcgan-in-turn"])
def test_a_replica_gone_non_finite_stops_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture, networks: tuple[str, ...]
) -> None:
    cfg, resolved = smoke_config(*networks, "norm=none", "trainer.replicas=3", *QUIET)
    sessions, group = build_replicas(cfg, resolved, tmp_path, name="r", group=None)
    assert group.vectorized == bool(networks)
    with torch.no_grad():  # replica 1's D only (a view of its slice, when stacked)
        next(group.trainers[1].discriminator.parameters()).fill_(float("nan"))
    results = execute_sessions(sessions)
    assert list(group.failed) == [1]
    assert "non-finite" in group.failed[1]
    assert "ganexp: replica 1: " in capsys.readouterr().err
    for k in (0, 2):
        weights = checkpoint_weights(tmp_path / f"replica_{k}" / "checkpoints" / "last.pt")
        assert all(torch.isfinite(w).all() for w in weights.values())
        assert results[k].steps == cfg.trainer.max_steps


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.augment=diffaug", "data.augment"),
        ("norm.generator=virtual_batch", "norm.generator"),
        ("trainer.skip_nonfinite=true", "trainer.skip_nonfinite"),
        ("device.precision=bf16", "device.precision"),
        ("trainer.replicas=0", "trainer.replicas"),
    ],
)
def test_what_replicas_cannot_vectorize_is_refused_in_one_line(override: str, key: str) -> None:
    """What the config refuses with replicas; the loss terms answer for themselves (below)."""
    with pytest.raises(ConfigError) as raised:
        smoke_config("trainer.replicas=2", override)
    assert str(raised.value).startswith(f"{key}="), str(raised.value)
    assert "\n" not in str(raised.value)


def test_replicas_from_the_command_line_write_a_run_each(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = ganexp_cmd(
        *TINY,
        *TOY,
        "trainer.replicas=3",
        "seed=5",
        "logger.mode=offline",
        "logger.group=replicas",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run_dir / "job.json").read_text())["replicas"] == [
        "replica_0",
        "replica_1",
        "replica_2",
    ]
    for k in range(3):
        folder = run_dir / f"replica_{k}"
        record = json.loads((folder / "job.json").read_text())
        assert record["status"] == "completed" and f"seed={5 + k}" in record["overrides"]
        assert record["final"] and (folder / "checkpoints" / "last.pt").is_file()
        run = load_run(folder)
        assert run.config["seed"] == 5 + k and run.run.run_group == "replicas"
        assert [r["step"] for r in run.history if "loss/d" in r] == [1, 2]


@pytest.mark.slow
def test_a_sweep_counts_replicas_as_seeds(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = ganexp_cmd(
        "-m",
        *TINY,
        *TOY,
        "trainer.replicas=3",
        "loss=bce,wgan_gp",
        "logger=none",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    cells = read_csv(sweep / "cells.csv")
    assert sorted(cell["loss"] for cell in cells) == ["bce", "wgan_gp"]
    assert all(cell["n"] == "3" for cell in cells), cells


def test_a_sweep_of_seeds_with_replicas_is_refused_in_one_line(tmp_path: Path) -> None:
    result = ganexp_cmd(
        "-m", *TINY, *TOY, "trainer.replicas=3", "seed=0,1", "logger=none", cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ganexp: error: seed='0,1': is swept while trainer.replicas=3"), last


def test_a_replicas_folder_continues_as_a_separate_run(
    tmp_path: Path, float64: None, capsys: pytest.CaptureFixture
) -> None:
    """replica_k/'s checkpoint is a run's (its optimizer state sliced to the replica): a single
    run with seed k resumed from it ends where replica k of an uninterrupted group ends."""
    overrides = (*MLP, "norm=batch", "loss=wgan_gp", *QUIET)
    whole, whole_resolved = smoke_config(*overrides, "trainer.replicas=2", "trainer.max_steps=4")
    train_replicas(whole, whole_resolved, tmp_path / "whole", name="r", group=None)
    short, resolved = smoke_config(*overrides, "trainer.replicas=2", "trainer.max_steps=2")
    train_replicas(short, resolved, tmp_path / "group", name="r", group=None)
    capsys.readouterr()
    smoke_run(tmp_path / "group" / "replica_1", *overrides, "seed=1", "trainer.max_steps=4")
    assert "at step 2" in capsys.readouterr().err  # it resumed, not started afresh
    replica = tmp_path / "whole" / "replica_1" / "checkpoints" / "last.pt"
    single = tmp_path / "group" / "replica_1" / "checkpoints" / "last.pt"
    assert _max_difference(replica, single) < 1e-6


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("loss.r1_weight=1", "loss.r1_weight=1.0"),
        ("loss.historical_weight=0.1", "loss.historical_weight=0.1"),
        ("loss.generator_loss=feature_matching", "loss.generator_loss='feature_matching'"),
    ],
)
def test_a_term_replicas_cannot_stack_is_refused_by_the_term(override: str, expected: str) -> None:
    """Which loss terms stacked replicas compute is the terms' own answer (Term.stackable),
    asked before anything runs; the gradient penalty is one they compute."""
    check_config(compose_config("experiment=smoke", *MLP, "trainer.replicas=2", "loss=wgan_gp"))
    with pytest.raises(ConfigError) as refused:
        check_config(compose_config("experiment=smoke", *MLP, "trainer.replicas=2", override))
    assert str(refused.value).startswith(f"{expected}: not vectorized across replicas")
