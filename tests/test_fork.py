"""A fork: ``ganexp resume=RUN`` into a new folder takes RUN's config for every key the command
line does not set, starts a new W&B run with RUN's history, and never takes a class from a file."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import yaml
from commands import run_command
from helpers import compose_config, smoke_run
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from ganexp.engine.checkpoint import load_checkpoint, save_checkpoint
from ganexp.errors import ConfigError
from ganexp.session.fork import NOT_INHERITED, _value, fork_overrides
from ganexp.session.preflight import _flat
from ganexp.tracking.runfile import load_run

# an experiment far from the defaults: another loss (with its optimizer and critic steps), a
# norm, widths, a cGAN, a preset
ORIGINAL = (
    "norm.discriminator=layer",
    "loss=wgan_gp",
    "loss.gp_weight=5",
    "generator.width=8",
    "conditional=true",
    "trainer.max_steps=4",
    "trainer.eval_every=2",
    "metrics.num_samples=100",
)


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("original")
    smoke_run(run_dir, *ORIGINAL, "logger=wandb", "logger.mode=offline")
    return run_dir


def flat_config(*overrides: str) -> dict:
    cfg = compose_config(*overrides)
    return _flat(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))


@pytest.mark.slow  # trains the run it forks (W&B offline)
def test_a_fork_composes_to_its_checkpoints_config(original: Path) -> None:
    saved = _flat(load_checkpoint(original / "checkpoints" / "last.pt")["config"])
    command = [f"resume={original}", "trainer.max_steps=8"]
    inherited = fork_overrides(command)
    assert "norm.discriminator='layer'" in inherited and "loss.gp_weight=5.0" in inherited
    forked = flat_config(*command, *inherited)
    for key, value in saved.items():
        if key.startswith(NOT_INHERITED):
            continue
        expected = 8 if key == "trainer.max_steps" else value  # the command line's own key
        assert forked[key] == expected, key
    assert fork_overrides(["trainer.max_steps=8"]) == []  # no resume=: nothing to take


@pytest.mark.slow  # trains the run it forks (W&B offline)
def test_a_class_named_in_the_checkpoint_is_refused_not_imported(
    original: Path, tmp_path: Path
) -> None:
    state = load_checkpoint(original / "checkpoints" / "last.pt")
    forged = copy.deepcopy(state)
    forged["config"]["loss"]["_target_"] = "os.system"
    path = tmp_path / "forged.pt"
    save_checkpoint(forged, path)
    with pytest.raises(ConfigError) as error:
        fork_overrides([f"resume={path}"])
    assert error.value.key == "loss._target_"
    assert str(error.value).startswith(
        "loss._target_='os.system': the checkpoint's class is not taken from a file"
    )
    # named on the command line, it is the user's own choice
    assert "loss._target_" not in " ".join(fork_overrides([f"resume={path}", "loss=hinge"]))


@pytest.mark.parametrize(
    "value",
    [None, True, 3, 2.5e-4, math.inf, "a,b", "it's \\ here", "x\\'y", "end\\", [{"n": [3]}]],
)
def test_a_value_survives_hydras_override_grammar(value: object) -> None:
    (parsed,) = OverridesParser.create().parse_overrides([f"key={_value(value)}"])
    assert parsed.value() == value


@pytest.mark.slow  # two ganexp commands
def test_the_fork_command_trains_its_checkpoints_experiment_in_a_new_w_and_b_run(
    original: Path, tmp_path: Path
) -> None:
    fork = tmp_path / "fork"
    args = [f"resume={original}", "trainer.max_steps=6", f"hydra.run.dir={fork}"]
    result = run_command("ganexp", *args, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"ganexp: note: a fork of {original}: " in result.stderr
    assert f"resuming from {original / 'checkpoints' / 'last.pt'} at step 4" in result.stderr
    then = load_checkpoint(original / "checkpoints" / "last.pt")["config"]
    now = yaml.safe_load((fork / "config.yaml").read_text())
    assert now["loss"] == then["loss"] and now["norm"] == then["norm"]
    assert now["trainer"] == then["trainer"] | {"max_steps": 6}
    before, after = load_run(original), load_run(fork)
    assert after.run.run_id != before.run.run_id  # a new W&B run ...
    assert after.run.display_name == ",".join(args[:2])  # named by what the user typed
    steps = [row["step"] for row in after.history if "loss/d" in row]
    assert steps == [2, 4, 6]  # ... holding the history it continues
    assert load_checkpoint(fork / "checkpoints" / "last.pt")["wandb_id"] == after.run.run_id
