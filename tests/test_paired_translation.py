"""task=paired_translation (Pix2Pix): the L1 term, the held-out grids and metrics, W&B logging,
resume, the pix2pix folder format, ganexp-eval and ganexp-sample, and the inputs it refuses."""

from __future__ import annotations

import json
import math
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
from ganexp.data.images import to_signed_unit
from ganexp.metrics.translation import PairedEvaluator
from ganexp.models.common import generate
from ganexp.parts.losses import input_gradient_norms
from ganexp.session.build import check_buildable
from ganexp.session.memory import estimate
from ganexp.tracking.runfile import image_keys, load_run

PAIRED = ("task=paired_translation",)


def write_pairs(root: Path, counts: dict[str, int], size: int = 16) -> None:
    """A pix2pix folder: ROOT/SPLIT/i.png, each A | B side by side, B the negative of A."""
    rng = np.random.default_rng(0)
    for split, count in counts.items():
        (root / split).mkdir(parents=True)
        for i in range(count):
            a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(np.concatenate([a, 255 - a], axis=1)).save(root / split / f"{i}.png")


def test_the_l1_term_is_lambda_times_the_mean_error_of_the_steps_own_batch(
    tmp_path: Path,
) -> None:
    """One step's logged loss/l1, recomputed from the step's own pair batch and G's output on it
    (replayed from the states before the step, dropout masks included)."""
    trainer = smoke_session(tmp_path / "run", *PAIRED).trainer
    stats, generator = replayed_step(trainer)
    with torch.no_grad():
        target, edges = trainer.data.next_batch()
        fake = generator(trainer.noise(len(target)), edges)  # training mode: dropout on
    assert stats["loss/l1"] == pytest.approx(100 * float((fake - target).abs().mean()), rel=1e-5)
    assert "loss/supervised" not in stats


def test_a_smoke_run_logs_the_paired_metrics_and_input_output_target_grids_to_wandb(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    result = smoke_run(run_dir, *PAIRED, "logger=wandb", "logger.mode=offline")
    assert result.best["key"] == "eval/l1"
    assert all("loss/l1" in row for row in eval_rows(run_dir, "loss/d"))
    final = eval_rows(run_dir, "eval/l1")[-1]
    assert 0 < final["eval/l1"] < 1 and 0 < final["eval/ssim"] < 1
    assert final["eval/psnr"] > 0 and final["eval/fd_classifier"] > 0
    logged = load_run(run_dir)
    history = [row for row in logged.history if "eval/l1" in row]
    assert history[-1]["eval/ssim"] == final["eval/ssim"]
    assert "task=paired_translation" in logged.run.tags
    assert logged.config["eval"]["paired_split"] == "test split (10000 images)"
    grids = [row for row in logged.history if "samples" in image_keys([row])]
    assert [row["step"] for row in grids] == [3, 6]
    # 64 held-out pairs in cells of input | output | target (3 x 32 px), 4 to a row, padding 2
    grid = Image.open(run_dir / "samples" / "step_000006.png")
    assert grid.size == (4 * (3 * 32 + 2) + 2, 16 * (32 + 2) + 2)


def test_the_grid_shows_each_held_out_input_its_translation_and_its_target(
    tmp_path: Path,
) -> None:
    from ganexp.data.translation import held_out_pairs

    session = smoke_session(tmp_path / "run", *PAIRED)
    fixed, G = session.evaluate.fixed, session.trainer.generator
    inputs, targets, _ = held_out_pairs(smoke_config(*PAIRED)[0].data)
    cells = fixed.samples(G)
    assert cells.shape == (64, 1, 32, 96)
    assert torch.equal(cells[..., :32], to_signed_unit(inputs[:64]))
    assert torch.equal(cells[..., 64:], to_signed_unit(targets[:64]))
    assert torch.equal(cells[..., 32:64], generate(G, fixed.noise, to_signed_unit(inputs[:64])))


def test_the_evaluator_gives_hand_values_for_known_translations() -> None:
    """G copies its input: against targets 10 grey levels brighter, l1 is 10/255, PSNR is
    20 log10(255/10) and SSIM is below 1; against the inputs themselves, 0, inf and 1."""

    class Copy(nn.Module):
        def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return labels

    inputs = torch.randint(0, 246, (12, 1, 16, 16), dtype=torch.uint8)
    device = torch.device("cpu")
    brighter = PairedEvaluator((inputs, inputs + 10, "t"), 12, 4, 0, device, None)
    metrics = brighter(Copy())
    assert metrics["l1"] == pytest.approx(10 / 255, rel=1e-5)
    assert metrics["psnr"] == pytest.approx(20 * math.log10(255 / 10), rel=1e-5)
    assert 0.5 < metrics["ssim"] < 1
    same = PairedEvaluator((inputs, inputs.clone(), "t"), 5, 4, 0, device, None)(Copy())
    assert same["l1"] == 0 and same["psnr"] == math.inf
    assert same["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert "fd_classifier" not in same  # no extractor, no distance


def test_a_patch_critics_gradient_penalty_is_that_of_its_mean_patch_score() -> None:
    """D(x) = w . x at every pixel (a 1x1 convolution): its score, the mean over h x w patches,
    has the input gradient w / (h w) at each pixel."""
    critic = nn.Conv2d(2, 1, 1, bias=False)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([3.0, 4.0]).view(1, 2, 1, 1))
    x = torch.randn(5, 2, 6, 6)
    norms = input_gradient_norms(lambda x, labels: critic(x), x, None)
    expected = 5.0 / 36 * 6  # |w| / (h w) at each of the h w pixels: sqrt(36) x 5 / 36
    assert norms.detach().tolist() == pytest.approx([expected] * 5)


@pytest.mark.slow
def test_a_resumed_run_continues_exactly(tmp_path: Path) -> None:
    off = ("metrics.enabled=false",)
    smoke_run(tmp_path / "whole", *PAIRED, *off)
    smoke_run(tmp_path / "part", *PAIRED, *off, "trainer.max_steps=3")
    smoke_run(tmp_path / "part", *PAIRED, *off)
    assert_same_weights(*(tmp_path / run / "checkpoints" / "last.pt" for run in ("whole", "part")))


@pytest.mark.slow
def test_ganexp_eval_and_sample_use_the_trained_translator(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    smoke_run(run_dir, *PAIRED)
    last = eval_rows(run_dir, "eval/l1")[-1]
    evaluate.main([f"checkpoint={run_dir}"])
    metrics = json.loads((run_dir / "checkpoints" / "last.metrics.json").read_text())["metrics"]
    for key in ("eval/l1", "eval/psnr", "eval/ssim", "eval/fd_classifier"):
        assert metrics[key] == last[key]
    G = smoke_session(tmp_path / "again", *PAIRED, f"resume={run_dir}").trainer.sampler
    assert_translates_a_folder(run_dir, tmp_path, G)


def test_a_pix2pix_folder_trains_and_is_evaluated_on_its_test_pairs(tmp_path: Path) -> None:
    root = tmp_path / "pairs"
    write_pairs(root, {"train": 12, "val": 5})
    run_dir = tmp_path / "run"
    folder = ("data=pix2pix_folder", f"data.root={root}", "data.image_size=16")
    smoke_run(run_dir, *PAIRED, *folder, "trainer.batch_size=4", "data.limit=null")
    final = eval_rows(run_dir, "eval/l1")[-1]
    assert {"eval/l1", "eval/psnr", "eval/ssim"} <= final.keys()
    assert not any(key.startswith("eval/fd") for key in final)  # no classifier for a folder


def test_the_memory_estimate_holds_inputs_and_targets_and_the_real_networks(
    tmp_path: Path,
) -> None:
    cfg, _ = smoke_config(*PAIRED)
    trainer = smoke_session(tmp_path / "run", *PAIRED).trainer
    assert_estimate_holds(cfg, trainer)
    spec = trainer.spec
    need = estimate(cfg, spec, *check_buildable(cfg, spec), tensor_data=True)
    assert need.data == 256 * 2 * 32 * 32  # 256 pairs of 1-channel 32 px images, uint8


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ("data=fashion_mnist",),
            "data.name='fashion_mnist': task=paired_translation takes fashion_edges",
        ),
        (("generator=dcgan",), "generator.arch='dcgan': task=paired_translation takes"),
        (("discriminator=dcgan",), "discriminator.arch='dcgan': task=paired_translation takes"),
        (("conditional=true",), "conditional=True: task=paired_translation conditions on"),
        (("discriminator.pack=2",), "discriminator.pack=2: task=paired_translation conditions"),
        (("loss.generator_loss=feature_matching",), "loss.generator_loss='feature_matching'"),
        (("data.augment=diffaug",), "data.augment='diffaug': task=paired_translation"),
        (("norm.generator=virtual_batch",), "norm.generator='virtual_batch': task=paired"),
        (("task.l1_weight=-1",), "task.l1_weight=-1.0: must be >= 0"),
        (("data.num_classes=10",), "data.num_classes=10: data.name=fashion_edges holds"),
        (("data.channels=3",), "data.channels=3: fashion_edges has 1 channel"),
        (
            ("trainer.replicas=2",),
            "task.name='paired_translation': not vectorized across replicas",
        ),
    ],
)
def test_bad_paired_settings_are_refused_in_one_line(overrides, expected) -> None:
    message = refusal("experiment=smoke", "logger=none", *PAIRED, *overrides)
    assert message.startswith(expected), message


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (("data=fashion_edges",), "data.name='fashion_edges': is for task=paired_translation"),
        (("generator=unet",), "generator.arch='unet': is for image-to-image translation"),
        (("discriminator=patch",), "discriminator.arch='patch': is for image-to-image translation"),
    ],
)
def test_pairs_and_translation_networks_without_the_task_are_refused(overrides, expected) -> None:
    message = refusal("experiment=smoke", "logger=none", *overrides)
    assert message.startswith(expected), message


@pytest.mark.slow
def test_bad_pix2pix_folders_are_refused_in_one_line_before_any_run(tmp_path: Path) -> None:
    root = tmp_path / "pairs"
    write_pairs(root, {"train": 6, "test": 2})
    args = ("experiment=smoke", *PAIRED, "data=pix2pix_folder", f"data.root={root}")
    args += ("data.image_size=16", "trainer.batch_size=4")
    Image.new("RGB", (30, 16)).save(root / "train" / "odd.png")  # not A | B
    assert refused(tmp_path, *args).startswith(
        f"data.root='{root}': not a pair: odd.png is 30x16, a pair is A | B, 32x16"
    )
    (root / "train" / "odd.png").unlink()
    for image in (root / "test").iterdir():
        image.unlink()
    assert "no held-out pairs" in refused(tmp_path, *args)
    message = refusal(*args, "logger=none", "metrics.features=classifier")
    assert message.startswith("metrics.features='classifier': a folder of images has no classes")
