"""Toy 2-D data: the modes_recovered headline (a uniform cloud cannot game it), data.scale,
data.train_size, the swiss roll and its sliced Wasserstein headline, and their validation."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import compose_config, smoke_run
from test_bad_input import GANEXP, refusal, refused

from ganexp.config import DataConfig, validate
from ganexp.data import build_data, mode_centers
from ganexp.data.toy import mode_std, sample_toy, train_set
from ganexp.metrics.toy import RECOVERED_SHARE, TRUE_HIGH_QUALITY, mode_stats, sliced_wasserstein
from ganexp.session.preflight import preflight
from ganexp.session.sweep import maximize

CPU = torch.device("cpu")
N = 2500  # PacGAN's evaluation size
MLP = ("generator=mlp", "discriminator=mlp")

RING8 = DataConfig(name="ring8", modes=8, radius=1.0, std=0.01, num_classes=0)
GRID25 = DataConfig(name="grid25", modes=25, spacing=2.0, std=0.05, num_classes=0)
SWISSROLL = DataConfig(name="swissroll", std=0.25, scale=7.5, num_classes=0)


def uniform_cloud(half_width: float, seed: int = 0) -> torch.Tensor:
    """N points uniform on the square [-half_width, half_width]^2."""
    g = torch.Generator().manual_seed(seed)
    return (2 * torch.rand(N, 2, generator=g) - 1) * half_width


def on_modes(cfg: DataConfig, modes: list[int], seed: int = 0) -> torch.Tensor:
    """N points of the mixture's own Gaussians, spread evenly over the listed modes only."""
    g = torch.Generator().manual_seed(seed)
    centers = mode_centers(cfg)
    chosen = torch.tensor(modes)[torch.randint(len(modes), (N,), generator=g)]
    return centers[chosen] + mode_std(cfg) * torch.randn(N, 2, generator=g)


# --- the headline: modes_recovered ----------------------------------------------------------------


def test_the_threshold_is_half_of_what_the_data_gives_a_mode() -> None:
    within_3_std = TRUE_HIGH_QUALITY
    assert within_3_std == pytest.approx(0.98889, abs=1e-5)
    # a ring8 mode needs 155 of 2500 samples within 3 std: half of the data's 309
    threshold = RECOVERED_SHARE * N * within_3_std / 8
    assert threshold == pytest.approx(154.5, abs=0.1)


@pytest.mark.parametrize(("cfg", "half_width"), [(GRID25, 5.0), (RING8, 1.5)])
def test_a_uniform_cloud_covers_modes_but_recovers_none(cfg: DataConfig, half_width: float):
    stats = mode_stats(uniform_cloud(half_width), mode_centers(cfg), mode_std(cfg))
    assert stats["modes_recovered"] == 0
    assert stats["modes_covered"] >= (15 if cfg is GRID25 else 2)


@pytest.mark.parametrize("cfg", [RING8, GRID25])
def test_the_data_itself_recovers_every_mode(cfg: DataConfig) -> None:
    k = len(mode_centers(cfg))
    for seed in range(5):
        stats = mode_stats(sample_toy(cfg, N, seed), mode_centers(cfg), mode_std(cfg))
        assert stats["modes_recovered"] == stats["modes_covered"] == k


def test_a_sampler_on_seven_of_eight_modes_recovers_seven() -> None:
    samples = on_modes(RING8, [0, 1, 2, 3, 4, 5, 6])
    stats = mode_stats(samples, mode_centers(RING8), mode_std(RING8))
    assert stats["modes_recovered"] == stats["modes_covered"] == 7


def test_a_sharp_generator_that_drops_a_mode_ranks_above_the_cloud() -> None:
    centers, std = mode_centers(GRID25), mode_std(GRID25)
    sharp = mode_stats(on_modes(GRID25, list(range(24))), centers, std)
    cloud = mode_stats(uniform_cloud(5.0), centers, std)
    assert sharp["modes_recovered"] == 24 > cloud["modes_recovered"]
    assert maximize("eval/modes_recovered")  # the sweep ranks it higher-is-better


def test_a_trickle_near_a_dropped_mode_does_not_recover_it() -> None:
    """A mode that gets a few samples is covered (PacGAN's count) but not recovered."""
    sharp = on_modes(RING8, list(range(7)))
    trickle = on_modes(RING8, [7], seed=1)[:20]
    stats = mode_stats(torch.cat([sharp[:-20], trickle]), mode_centers(RING8), mode_std(RING8))
    assert stats["modes_covered"] == 8 and stats["modes_recovered"] == 7


# --- data.scale ---------------------------------------------------------------------------------


def test_scale_divides_points_centres_and_std_alike() -> None:
    scaled = DataConfig(name="ring8", modes=8, radius=2.0, std=0.02, scale=1.414, num_classes=0)
    plain = DataConfig(name="ring8", modes=8, radius=2.0, std=0.02, num_classes=0)
    assert torch.allclose(mode_centers(scaled), mode_centers(plain) / 1.414)
    assert mode_std(scaled) == pytest.approx(0.02 / 1.414)
    points = build_data(scaled, 4000, CPU, seed=3).next_batch()[0]
    assert torch.allclose(points, build_data(plain, 4000, CPU, seed=3).next_batch()[0] / 1.414)
    assert (points.norm(dim=1) - 2 / 1.414).abs().max() < 5 * 0.02 / 1.414
    stats = mode_stats(points, mode_centers(scaled), mode_std(scaled))
    assert stats["modes_recovered"] == stats["modes_covered"] == 8
    assert stats["high_quality"] > 0.97


def test_the_wgan_gp_grid_fits_its_scaled_centres() -> None:
    cfg = DataConfig(name="grid25", modes=25, spacing=2.0, std=0.05, scale=2.828, num_classes=0)
    assert mode_centers(cfg).abs().max() == pytest.approx(4 / 2.828)
    stats = mode_stats(sample_toy(cfg, N, 0), mode_centers(cfg), mode_std(cfg))
    assert stats["modes_recovered"] == 25


# --- data.train_size ----------------------------------------------------------------------------


def fixed(train_size: int = 500, **overrides: object) -> DataConfig:
    return DataConfig(**{**vars(RING8), "train_size": train_size, **overrides})


def members(batch: torch.Tensor, train_set: torch.Tensor) -> torch.Tensor:
    """For each point of the batch, whether it is exactly a point of the set."""
    return (batch[:, None, :] == train_set[None, :, :]).all(dim=2).any(dim=1)


def test_batches_are_drawn_with_replacement_from_one_fixed_set() -> None:
    cfg = fixed(500)
    fixed_set = train_set(cfg, seed=7)
    assert fixed_set.shape == (500, 2)
    source = build_data(cfg, 256, CPU, seed=7)
    seen = torch.cat([source.next_batch()[0] for _ in range(20)])
    assert members(seen, fixed_set).all()
    assert len(seen.unique(dim=0)) < len(seen)  # 5120 draws of 500 points repeat some
    assert len(seen.unique(dim=0)) > 490  # and reach nearly all of them
    fresh = build_data(fixed(0), 256, CPU, seed=7).next_batch()[0]
    assert not members(fresh, fixed_set).any()


def test_the_set_is_the_seeds_and_resume_continues_the_same_batches() -> None:
    cfg = fixed(500)
    same = train_set(cfg, seed=7)
    assert torch.equal(train_set(cfg, seed=7), same)
    other = train_set(cfg, seed=8)
    assert not members(other, same).any()
    a = build_data(cfg, 64, CPU, seed=7)
    a.next_batch()
    state = a.state_dict()
    expected = [a.next_batch()[0] for _ in range(3)]
    b = build_data(cfg, 64, CPU, seed=7)  # a resumed run: the set drawn again from the seed
    b.load_state_dict(state)
    assert all(torch.equal(b.next_batch()[0], x) for x in expected)
    assert members(build_data(cfg, 64, CPU, seed=8).next_batch()[0], other).all()


def test_resuming_onto_a_set_of_another_size_is_refused(tmp_path: Path) -> None:
    toy = ("data=ring8", *MLP, "data.train_size=500")
    smoke_run(tmp_path, *toy, "trainer.max_steps=2")
    last = tmp_path / "checkpoints" / "last.pt"
    message = refusal("experiment=smoke", *toy[:-1], "data.train_size=600", f"resume={last}")
    assert message.startswith(f"resume='{last}': its data position does not carry over"), message
    assert "data.train_size is 500 in the checkpoint, 600 now" in message
    preflight(["experiment=smoke", *toy, f"resume={last}"])  # the same size resumes


def test_every_process_shares_the_set_but_draws_its_own_batches() -> None:
    from ganexp.engine.distributed import World

    cfg = fixed(500)
    fixed_set = train_set(cfg, seed=7)
    ranks = [build_data(cfg, 128, CPU, 7, World(rank=r, size=2)).next_batch()[0] for r in (0, 1)]
    assert all(len(x) == 64 and members(x, fixed_set).all() for x in ranks)
    assert not torch.equal(ranks[0], ranks[1])


# --- swissroll ----------------------------------------------------------------------------------


def test_the_swiss_roll_spans_its_radii_and_has_no_modes() -> None:
    assert mode_centers(SWISSROLL) is None
    points = build_data(SWISSROLL, 5000, CPU, seed=0).next_batch()[0]
    radius = points.norm(dim=1) * 7.5  # t, up to the noise
    margin = 5 * 0.25 * math.sqrt(2)
    assert radius.min() > 1.5 * math.pi - margin and radius.max() < 4.5 * math.pi + margin
    assert radius.max() - radius.min() > 2.5 * math.pi  # the whole roll, not a piece
    # without noise each point is (t cos t, t sin t): its angle is t mod 2 pi
    clean = sample_toy(DataConfig(**{**vars(SWISSROLL), "std": 1e-9}), 1000, 0) * 7.5
    t = clean.norm(dim=1)
    angle = torch.atan2(clean[:, 1], clean[:, 0])
    wrapped = torch.remainder(angle - t + math.pi, 2 * math.pi)
    assert torch.allclose(wrapped, torch.full_like(wrapped, math.pi), atol=1e-4)


def test_sliced_wasserstein_is_small_for_real_sets_and_large_for_a_shifted_one() -> None:
    real, other = sample_toy(SWISSROLL, N, 0), sample_toy(SWISSROLL, N, 1)
    same = sliced_wasserstein(real, other)
    shifted = sliced_wasserstein(real, other + torch.tensor([0.5, 0.0]))
    assert same < 0.06 and shifted > 0.25 and shifted > 5 * same
    assert sliced_wasserstein(real, real) == 0
    assert not maximize("eval/sliced_wasserstein")  # lower is better in sweeps


def test_sliced_wasserstein_averages_one_dimensional_distances() -> None:
    """Sets of equal size: the 1-D W1 is the mean gap between sorted projections."""
    a, b = torch.randn(300, 2), torch.randn(300, 2) + 1
    g = torch.Generator().manual_seed(0)
    directions = torch.randn(128, 2, generator=g, dtype=torch.float64)
    directions /= directions.norm(dim=1, keepdim=True)
    pa, pb = a.double() @ directions.T, b.double() @ directions.T
    expected = (pa.sort(dim=0).values - pb.sort(dim=0).values).abs().mean()
    assert sliced_wasserstein(a, b) == pytest.approx(float(expected))


def test_a_swissroll_run_keeps_best_by_sliced_wasserstein(tmp_path: Path) -> None:
    result = smoke_run(tmp_path, "data=swissroll", *MLP, "trainer.eval_every=3")
    assert result.best["key"] == "eval/sliced_wasserstein"
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [row for row in rows if "eval/sliced_wasserstein" in row]
    assert [row["step"] for row in evals] == [3, 6]
    assert result.best["value"] == min(row["eval/sliced_wasserstein"] for row in evals)
    assert 0 < evals[0]["eval/sliced_wasserstein_floor"] < evals[0]["eval/sliced_wasserstein"]
    assert (tmp_path / "samples" / "step_000006.png").is_file()  # a scatter with no centres


@pytest.mark.slow
def test_the_swissroll_cli_smoke_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [GANEXP, "data=swissroll", *MLP, "debug=smoke", "logger=none", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if "eval/sliced_wasserstein" in row] == [6]


# --- validation ---------------------------------------------------------------------------------


BAD = [
    (["data=ring8", *MLP, "data.scale=0"], "data.scale=0.0: must be > 0"),
    (["data=grid25", *MLP, "data.scale=-2.828"], "data.scale=-2.828: must be > 0"),
    (["data=ring8", *MLP, "data.train_size=-1"], "data.train_size=-1: must be >= 0"),
    (["data=swissroll", *MLP, "data.std=0"], "data.std=0.0: must be > 0"),
    (["data=swissroll", *MLP, "data.modes=8"], "data.modes=8: swissroll has no modes"),
    (["data.train_size=1000"], "data.train_size=1000: toy data only"),
    (["data.scale=2.0"], "data.scale=2.0: toy data only"),
]


@pytest.mark.parametrize(("argv", "expected"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_toy_values_are_refused_naming_the_key(argv: list[str], expected: str) -> None:
    assert refusal(*argv).startswith(expected)


@pytest.mark.slow
@pytest.mark.parametrize("bad", ["data.scale=0", "data.train_size=-1"])
def test_the_cli_refuses_bad_toy_values_in_one_line(tmp_path: Path, bad: str) -> None:
    assert refused(tmp_path, "data=ring8", *MLP, bad).startswith(bad.split("=")[0] + "=")


def test_the_toy_presets_validate() -> None:
    for name in ("ring8", "grid25", "swissroll"):
        validate(compose_config(f"data={name}", *MLP))
