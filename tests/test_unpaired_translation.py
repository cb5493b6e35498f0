"""task=unpaired_translation (CycleGAN): both directions as one G and one D, the cycle and
identity terms of a real step, the image pools, grids, metrics, W&B logging, resume, the
CycleGAN folder format, ganexp-eval and ganexp-sample, and the inputs it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    assert_estimate_holds,
    assert_same_weights,
    assert_translates_a_folder,
    eval_rows,
    replayed_step,
    smoke_config,
    smoke_run,
    smoke_session,
)
from PIL import Image
from test_bad_input import refusal, refused
from torch import nn

from ganexp.cli import evaluate
from ganexp.data.images import to_signed_unit, to_uint8
from ganexp.data.translation import held_out_domains
from ganexp.engine.checkpoint import load_checkpoint
from ganexp.metrics.translation import UnpairedEvaluator
from ganexp.tasks.unpaired_translation import (
    CycleCritics,
    CycleGenerators,
    DomainPools,
    swap_halves,
)
from ganexp.tracking.runfile import image_keys, load_run

UNPAIRED = ("task=unpaired_translation",)


class Shift(nn.Module):
    """A 'translator' that adds a constant: which network ran is in its output."""

    def __init__(self, by: float) -> None:
        super().__init__()
        self.by = nn.Parameter(torch.tensor(by))

    def forward(self, *inputs: torch.Tensor | None) -> torch.Tensor:
        return inputs[-1] + self.by  # as G (z, x) or as D (x)


class MyTranslator(nn.Module):
    """A user's translator (generator._target_): a 3x3 convolution and tanh."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(shape[0], shape[0], 3, padding=1)

    def forward(self, z: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(labels))


class MyCritic(nn.Module):
    """A user's patch critic (discriminator._target_)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(shape[0], 1, 4, 2, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(x)


def test_users_own_networks_are_built_once_for_each_direction(tmp_path: Path) -> None:
    mine = (
        f"generator._target_={__name__}.MyTranslator",
        f"discriminator._target_={__name__}.MyCritic",
    )
    smoke_run(tmp_path / "run", *UNPAIRED, *mine)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert {"g_ab.conv.weight", "g_ba.conv.weight"} <= state["generator"].keys()
    assert {"d_b.conv.weight", "d_a.conv.weight"} <= state["discriminator"].keys()
    assert "eval/transfer_accuracy" in eval_rows(tmp_path / "run", "eval/cycle_l1")[-1]


def test_both_directions_run_as_one_generator_and_one_critic() -> None:
    a, b = torch.zeros(3, 1, 4, 4), torch.ones(3, 1, 4, 4)
    G = CycleGenerators(Shift(10.0), Shift(-10.0))
    assert torch.equal(G(None, torch.cat([a, b])), torch.cat([a + 10, b - 10]))
    D = CycleCritics(Shift(100.0), Shift(200.0))
    assert torch.equal(D(torch.cat([b, a])), torch.cat([b + 100, a + 200]))
    assert torch.equal(swap_halves(torch.cat([a, b])), torch.cat([b, a]))


def test_a_steps_cycle_and_identity_terms_and_pools_are_cyclegans_on_its_batches(
    tmp_path: Path,
) -> None:
    """One step's loss/cycle and loss/identity, recomputed from the step's own batches with G
    as it was before the step: lambda (|F(G(a)) - a| + |G(F(b)) - b|) and 0.5 lambda
    (|G(b) - b| + |F(a) - a|); the pools then hold the step's fakes of each domain."""
    trainer = smoke_session(tmp_path / "run", *UNPAIRED).trainer
    stats, G = replayed_step(trainer)
    with torch.no_grad():
        real, inputs = trainer.data.next_batch()
        b, a = real.chunk(2)
        assert torch.equal(inputs, torch.cat([a, b]))
        fake_b, fake_a = G.g_ab(None, a), G.g_ba(None, b)
        cycle = (G.g_ba(None, fake_b) - a).abs().mean() + (G.g_ab(None, fake_a) - b).abs().mean()
        identity = (G.g_ab(None, b) - b).abs().mean() + (G.g_ba(None, a) - a).abs().mean()
    assert stats["loss/cycle"] == pytest.approx(10 * float(cycle), rel=1e-5)
    assert stats["loss/identity"] == pytest.approx(5 * float(identity), rel=1e-5)
    pool_b, pool_a = (torch.stack(pool.images) for pool in trainer.term(DomainPools).pools)
    torch.testing.assert_close(pool_b, fake_b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pool_a, fake_a, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_a_smoke_run_logs_the_unpaired_metrics_and_cycle_grids_to_wandb(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = smoke_run(run_dir, *UNPAIRED, "logger=wandb", "logger.mode=offline")
    assert result.best["key"] == "eval/transfer_accuracy"
    assert all({"loss/cycle", "loss/identity"} <= r.keys() for r in eval_rows(run_dir, "loss/d"))
    final = eval_rows(run_dir, "eval/cycle_l1")[-1]
    for key in ("transfer_accuracy", "transfer_accuracy_ab", "transfer_accuracy_ba"):
        assert 0 <= final[f"eval/{key}"] <= 1
    assert final["eval/fd_classifier_ab"] > 0 and final["eval/fd_classifier_ba"] > 0
    logged = load_run(run_dir)
    assert [r for r in logged.history if "eval/cycle_l1" in r][-1]["eval/cycle_l1"] == (
        final["eval/cycle_l1"]
    )
    assert "task=unpaired_translation" in logged.run.tags
    grids = [row for row in logged.history if "samples" in image_keys([row])]
    assert [row["step"] for row in grids] == [3, 6]
    grid = Image.open(run_dir / "samples" / "step_000006.png")
    assert grid.size == (4 * (3 * 32 + 2) + 2, 16 * (32 + 2) + 2)


def test_the_grid_shows_a_to_b_to_a_and_b_to_a_to_b(tmp_path: Path) -> None:
    session = smoke_session(tmp_path / "run", *UNPAIRED)
    fixed, G = session.evaluate.fixed, session.trainer.generator
    a, b, _ = held_out_domains(smoke_config(*UNPAIRED)[0].data)
    inputs = to_signed_unit(torch.cat([a[:32], b[:32]]))
    cells = fixed.samples(G)
    assert torch.equal(cells[..., :32], inputs)
    with torch.no_grad():
        G.eval()
        there = torch.cat([G.g_ab(None, inputs[:32]), G.g_ba(None, inputs[32:])])
        back = torch.cat([G.g_ba(None, there[:32]), G.g_ab(None, there[32:])])
    torch.testing.assert_close(cells[..., 32:64], there)
    torch.testing.assert_close(cells[..., 64:], back)


def test_the_evaluator_counts_the_classifiers_calls_and_a_perfect_cycle(tmp_path: Path) -> None:
    """Identity translators: the cycle is perfect (0), and A -> B's transfer accuracy is the
    fraction of held-out sneakers the classifier itself calls ankle boots."""
    session = smoke_session(tmp_path / "run", *UNPAIRED)
    real_evaluator = session.evaluate.evaluate
    extractor = real_evaluator.extractor
    a, b, split = held_out_domains(smoke_config(*UNPAIRED)[0].data)
    evaluator = UnpairedEvaluator((a, b, split), 300, torch.device("cpu"), extractor, (7, 9))
    metrics = evaluator(CycleGenerators(Shift(0.0), Shift(0.0)))
    assert metrics["cycle_l1"] == 0
    with torch.no_grad():
        called = extractor.logits(to_uint8(to_signed_unit(a[:300]))).argmax(1)
    assert metrics["transfer_accuracy_ab"] == int((called == 9).sum()) / 300
    assert metrics["transfer_accuracy_ab"] < 0.1  # the classifier knows sneakers from boots
    assert metrics["transfer_accuracy"] == pytest.approx(
        (metrics["transfer_accuracy_ab"] + metrics["transfer_accuracy_ba"]) / 2
    )


@pytest.mark.slow
def test_a_resumed_run_continues_the_networks_and_the_pools_exactly(tmp_path: Path) -> None:
    off = ("metrics.enabled=false", "task.pool_size=30")  # the pools fill, then swap images
    smoke_run(tmp_path / "whole", *UNPAIRED, *off)
    smoke_run(tmp_path / "part", *UNPAIRED, *off, "trainer.max_steps=3")
    smoke_run(tmp_path / "part", *UNPAIRED, *off)
    whole, part = (tmp_path / run / "checkpoints" / "last.pt" for run in ("whole", "part"))
    assert_same_weights(whole, part)
    pools = [load_checkpoint(path)["pool"] for path in (whole, part)]
    for side in ("a", "b"):
        assert torch.equal(pools[0][side]["images"], pools[1][side]["images"])


@pytest.mark.slow
def test_ganexp_eval_and_sample_use_the_trained_translators(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    smoke_run(run_dir, *UNPAIRED)
    last = eval_rows(run_dir, "eval/cycle_l1")[-1]
    evaluate.main([f"checkpoint={run_dir}"])
    metrics = json.loads((run_dir / "checkpoints" / "last.metrics.json").read_text())["metrics"]
    for key in ("eval/cycle_l1", "eval/transfer_accuracy_ab", "eval/transfer_accuracy_ba"):
        assert metrics[key] == pytest.approx(last[key], rel=1e-4)
    G = smoke_session(tmp_path / "again", *UNPAIRED, f"resume={run_dir}").trainer.sampler
    assert_translates_a_folder(run_dir, tmp_path, G.g_ba, "direction=ba")


def write_domains(root: Path, counts: dict[str, int]) -> None:
    rng = np.random.default_rng(0)
    for folder, count in counts.items():
        (root / folder).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / folder / f"{i}.jpg")


@pytest.mark.slow
def test_a_cyclegan_folder_trains_and_is_evaluated_on_its_test_domains(tmp_path: Path) -> None:
    root = tmp_path / "domains"
    write_domains(root, {"trainA": 10, "trainB": 7, "testA": 3, "testB": 4})
    run_dir = tmp_path / "run"
    folder = ("data=cyclegan_folder", f"data.root={root}", "data.image_size=16")
    result = smoke_run(run_dir, *UNPAIRED, *folder, "trainer.batch_size=4", "data.limit=null")
    assert result.best["key"] == "eval/cycle_l1"  # no classes, no transfer accuracy
    final = eval_rows(run_dir, "eval/cycle_l1")[-1]
    assert not any("transfer" in key or key.startswith("eval/fd") for key in final)


def test_the_memory_estimate_holds_both_translators_and_critics(tmp_path: Path) -> None:
    cfg, _ = smoke_config(*UNPAIRED)
    assert_estimate_holds(cfg, smoke_session(tmp_path / "run", *UNPAIRED).trainer)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (("data=fashion_edges",), "data.name='fashion_edges': is for task=paired_translation"),
        (("generator=dcgan",), "generator.arch='dcgan': task=unpaired_translation takes"),
        (("data.domain_classes=[7,7]",), "data.domain_classes=[7, 7]: two different"),
        (("data.domain_classes=[7,10]",), "data.domain_classes=[7, 10]: two different"),
        (("task.pool_size=-1",), "task.pool_size=-1: must be >= 0"),
        (("task.cycle_weight=-1",), "task.cycle_weight=-1.0: must be >= 0"),
        (("conditional=true",), "conditional=True: task=unpaired_translation conditions"),
    ],
)
def test_bad_unpaired_settings_are_refused_in_one_line(overrides, expected) -> None:
    message = refusal("experiment=smoke", "logger=none", *UNPAIRED, *overrides)
    assert message.startswith(expected), message


def test_fashion_domains_without_the_task_and_domain_classes_without_them_are_refused() -> None:
    message = refusal("experiment=smoke", "logger=none", "data=fashion_domains")
    assert message.startswith("data.name='fashion_domains': is for task=unpaired_translation")
    message = refusal("experiment=smoke", "logger=none", "data.domain_classes=[1,2]")
    assert message.startswith("data.domain_classes=[1, 2]: is read by data=fashion_domains only")


@pytest.mark.slow
def test_bad_cyclegan_folders_are_refused_in_one_line_before_any_run(tmp_path: Path) -> None:
    root = tmp_path / "domains"
    write_domains(root, {"trainA": 6, "trainB": 6, "testA": 2})
    args = ("experiment=smoke", *UNPAIRED, "data=cyclegan_folder", f"data.root={root}")
    args += ("data.image_size=16", "trainer.batch_size=4")
    assert refused(tmp_path, *args).startswith(
        f"data.root='{root}': domain B has no images: {root}/testB is missing or empty"
    )
    for image in (root / "trainA").iterdir():
        image.unlink()
    assert "domain A has no images" in refused(tmp_path, *args)
    message = refusal(*args, "logger=none", "metrics.features=classifier")
    assert message.startswith("metrics.features='classifier': a folder of images has no classes")
