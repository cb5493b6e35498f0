"""task=semi_supervised: D as a K-class classifier (Salimans et al. 2016), its labelled subset,
its losses against improved-gan's formula, the supervised-only baseline, evaluation, resume and
the inputs it refuses."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import (
    assert_estimate_holds,
    assert_same_weights,
    smoke_config,
    smoke_run,
    smoke_session,
)
from test_bad_input import refusal, refused

from ganexp.cli import evaluate
from ganexp.data import build_labelled, labelled_subset
from ganexp.engine.checkpoint import load_checkpoint
from ganexp.session.build import build_optimizer
from ganexp.tasks.semi_supervised import ClassifierCritic, SemiSupervised, accuracy
from ganexp.tracking.runfile import load_run

SSL = ("task=semi_supervised",)


def salimans_losses(
    logits_lab: torch.Tensor,
    labels: torch.Tensor,
    logits_unl: torch.Tensor,
    logits_gen: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """openai/improved-gan train_mnist_feature_matching.py, written out: (loss_lab, loss_unl)."""
    l_lab = logits_lab.gather(1, labels[:, None]).squeeze(1)
    z_exp_lab = torch.logsumexp(logits_lab, dim=1).mean()
    loss_lab = -l_lab.mean() + z_exp_lab
    l_unl = torch.logsumexp(logits_unl, dim=1)
    l_gen = torch.logsumexp(logits_gen, dim=1)
    loss_unl = -0.5 * l_unl.mean() + 0.5 * F.softplus(l_unl).mean() + 0.5 * F.softplus(l_gen).mean()
    return loss_lab, loss_unl


def test_a_training_steps_losses_are_salimans_formula_on_its_batches(tmp_path: Path) -> None:
    """One step's logged loss/d and loss/supervised, recomputed from D's logits on the step's own
    batches (replayed from the states before it): 2 x loss_unl and 2 x loss_lab."""
    session = smoke_session(tmp_path / "run", *SSL)
    trainer = session.trainer
    task = trainer.term(SemiSupervised)
    critic = copy.deepcopy(trainer.discriminator)
    generator = copy.deepcopy(trainer.generator)
    data, labelled = (
        copy.deepcopy(trainer.data.state_dict()),
        copy.deepcopy(task.labelled.state_dict()),
    )
    rng = torch.get_rng_state()

    trainer.run_step()
    stats = trainer.pop_stats()

    trainer.data.load_state_dict(data)
    task.labelled.load_state_dict(labelled)
    torch.set_rng_state(rng)
    with torch.no_grad():
        real, _ = trainer.data.next_batch()
        fake = generator(trainer.noise(real.shape[0]))
        x_lab, y_lab = task.labelled.next_batch()
        loss_lab, loss_unl = salimans_losses(
            critic.logits(x_lab), y_lab, critic.logits(real), critic.logits(fake)
        )
    assert stats["loss/d"] == pytest.approx(2 * float(loss_unl), rel=1e-5)
    assert stats["loss/supervised"] == pytest.approx(2 * float(loss_lab), rel=1e-5)


class Flat(torch.nn.Module):
    """A critic whose features are its input's pixels."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.feature_width = width

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def test_ds_score_is_the_logsumexp_of_its_class_logits() -> None:
    """D(x) = Z / (Z + 1): sigmoid of the score is that probability of "real"."""
    critic = ClassifierCritic(Flat(4), num_classes=3)
    x = torch.randn(5, 1, 2, 2)
    z = critic.logits(x).exp().sum(1)
    assert torch.allclose(torch.sigmoid(critic(x)), z / (z + 1), atol=1e-6)


def test_accuracy_counts_the_arg_max_class() -> None:
    critic = ClassifierCritic(Flat(3), num_classes=3)
    with torch.no_grad():
        critic.classes.weight.copy_(torch.eye(3))
        critic.classes.bias.zero_()
    images = torch.eye(3)[[0, 1, 2, 2]].view(4, 3, 1, 1)  # classified 0, 1, 2, 2
    assert accuracy(critic, images, torch.tensor([0, 1, 2, 0])) == 0.75
    assert critic.training  # put back in training mode


def test_the_labelled_subset_holds_n_of_each_class_whatever_the_run_seed() -> None:
    cfg, _ = smoke_config(*SSL, "data.labels_per_class=3")
    _, _, indices, spec = labelled_subset(cfg.data)
    assert len(indices) == 3 * spec.num_classes
    first = build_labelled(cfg.data, 30, torch.device("cpu"), seed=0)
    again = build_labelled(cfg.data, 30, torch.device("cpu"), seed=7)
    (x0, y0), (x1, _) = first.next_batch(), again.next_batch()
    assert torch.bincount(y0, minlength=10).tolist() == [3] * 10  # a batch of all 30, shuffled
    # another run seed draws the same 30 examples in another order
    assert sorted(x0.flatten(1).sum(1).tolist()) == sorted(x1.flatten(1).sum(1).tolist())
    other, _ = smoke_config(*SSL, "data.labels_per_class=3", "data.labels_seed=1")
    assert not torch.equal(labelled_subset(other.data)[2], indices)


def test_the_baseline_is_ds_initialization_trained_on_the_labelled_batches_alone(
    tmp_path: Path,
) -> None:
    session = smoke_session(tmp_path / "run", *SSL)
    trainer = session.trainer
    cfg, _ = smoke_config(*SSL)
    alone = copy.deepcopy(trainer.discriminator)
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            alone.state_dict().values(),
            trainer.term(SemiSupervised).baseline.state_dict().values(),
            strict=True,
        )
    )
    labelled = build_labelled(cfg.data, cfg.trainer.batch_size, trainer.device, cfg.seed + 1)
    optimizer = build_optimizer(cfg.optim, alone.parameters(), cfg.optim.lr_d)
    for _ in range(3):
        trainer.run_step()
        x, y = labelled.next_batch()
        loss = F.cross_entropy(alone.logits(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    baseline = trainer.term(SemiSupervised).baseline.state_dict()
    for name, value in alone.state_dict().items():
        assert torch.equal(value, baseline[name]), name
    # D itself has moved elsewhere: it also learns from the unlabelled images and G's
    assert not torch.equal(trainer.discriminator.classes.weight, alone.classes.weight)


def test_a_smoke_run_logs_both_accuracies_and_the_supervised_losses_to_wandb(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    result = smoke_run(run_dir, *SSL, "logger=wandb", "logger.mode=offline")
    assert result.best["key"] == "eval/ssl_accuracy"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [row for row in rows if "eval/ssl_accuracy" in row]
    assert len(evals) == 1 and 0 <= evals[0]["eval/ssl_baseline_accuracy"] <= 1
    row = evals[0]
    assert row["eval/ssl_gain"] == row["eval/ssl_accuracy"] - row["eval/ssl_baseline_accuracy"]
    logged = load_run(run_dir)
    history = [row for row in logged.history if "eval/ssl_accuracy" in row]
    assert history[0]["eval/ssl_accuracy"] == evals[0]["eval/ssl_accuracy"]
    assert any("loss/supervised" in row and "loss/baseline" in row for row in logged.history)
    assert logged.config["eval"]["ssl_split"] == "test split (10000 images)"
    assert "task=semi_supervised" in logged.run.tags


def test_ganexp_eval_of_the_checkpoint_gives_the_runs_last_accuracies(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    smoke_run(run_dir, *SSL, "trainer.max_steps=20")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = [row for row in rows if "eval/ssl_accuracy" in row][-1]
    # D and its baseline classify differently by now: loading one for the other would show
    assert last["eval/ssl_accuracy"] != last["eval/ssl_baseline_accuracy"]
    evaluate.main([f"checkpoint={run_dir}"])
    metrics = json.loads((run_dir / "checkpoints" / "last.metrics.json").read_text())["metrics"]
    for key in ("eval/ssl_accuracy", "eval/ssl_baseline_accuracy"):
        assert metrics[key] == last[key]


def test_a_resumed_run_continues_d_the_baseline_and_the_labelled_batches_exactly(
    tmp_path: Path,
) -> None:
    smoke_run(tmp_path / "whole", *SSL, "metrics.enabled=false")
    smoke_run(tmp_path / "part", *SSL, "metrics.enabled=false", "trainer.max_steps=3")
    smoke_run(tmp_path / "part", *SSL, "metrics.enabled=false")
    whole, part = (tmp_path / name / "checkpoints" / "last.pt" for name in ("whole", "part"))
    assert_same_weights(whole, part)
    a, b = load_checkpoint(whole)["semi_supervised"], load_checkpoint(part)["semi_supervised"]
    for name, value in a["baseline"].items():
        assert torch.equal(value, b["baseline"][name]), name
    assert a["labelled"].keys() == b["labelled"].keys()
    for key, value in a["labelled"].items():  # the labelled batches' position and RNG state
        assert (
            torch.equal(value, b["labelled"][key])
            if torch.is_tensor(value)
            else value == b["labelled"][key]
        )


def test_the_memory_estimate_counts_the_baseline_as_the_run_holds_it(tmp_path: Path) -> None:
    cfg, _ = smoke_config(*SSL)
    trainer = smoke_session(tmp_path / "run", *SSL).trainer
    assert_estimate_holds(cfg, trainer, trainer.term(SemiSupervised).baseline)


def test_the_preset_validates_as_the_papers_setting_with_its_deviations() -> None:
    cfg, _ = smoke_config("experiment=ssl_fashion_mnist")
    assert cfg.task.name == "semi_supervised" and cfg.data.labels_per_class == 10
    assert cfg.loss.generator_loss == "feature_matching"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (("data.labels_per_class=30",), "data.labels_per_class=30: more than exist (class "),
        (("data.labels_per_class=0",), "data.labels_per_class=0: must be an integer >= 1"),
        (
            ("task.name=translation",),
            "task.name='translation': allowed: generation, semi_supervised",
        ),
        (("conditional=true",), "conditional=True: task=semi_supervised makes D a classifier"),
        (("discriminator.pack=2",), "discriminator.pack=2: task=semi_supervised makes D"),
        (("data.num_classes=0",), "task.name='semi_supervised': needs a data set with at least 2"),
        (
            ("trainer.replicas=2", "loss.generator_loss=non_saturating"),
            "task.name='semi_supervised': not vectorized across replicas",
        ),
        (("task.supervised_weight=-1",), "task.supervised_weight=-1.0: must be >= 0"),
    ],
)
def test_bad_semi_supervised_settings_are_refused_in_one_line(overrides, expected) -> None:
    message = refusal("experiment=smoke", "logger=none", *SSL, *overrides)
    assert message.startswith(expected), message


def test_labels_per_class_without_the_task_and_toy_data_are_refused(tmp_path: Path) -> None:
    message = refusal("experiment=smoke", "data.labels_per_class=5")
    assert message == "data.labels_per_class=5: is read by task=semi_supervised only"
    toy = ("data=ring8", "generator=mlp", "discriminator=mlp", "norm=none")
    assert refused(tmp_path, "experiment=smoke", *SSL, *toy).startswith(
        "task.name='semi_supervised': needs a data set with at least 2 classes; data.name=ring8"
    )
