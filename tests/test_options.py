"""The design-space options through the `ganexp` command: hinge and least-squares losses with
every norm, R1 with any loss, and a user's own loss class from a folder outside the repository."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from test_sweeps import TINY, ganexp_cmd
from wandb_runfile import load_run

NORMS = ("batch", "layer", "instance", "group", "spectral", "none")


def logged(run_dir: Path) -> list[dict]:
    """The training-statistics rows of the W&B run file (what the dashboard plots)."""
    return [row for row in load_run(run_dir).history if "loss/d" in row]


@pytest.mark.slow
def test_hinge_and_lsgan_train_with_every_norm_and_log_to_wandb(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = ganexp_cmd(
        "-m",
        f"norm={','.join(NORMS)}",
        "loss=hinge,lsgan",
        *TINY,
        "logger.mode=offline",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for num in range(2 * len(NORMS)):
        record = json.loads((sweep / str(num) / "job.json").read_text())
        assert record["status"] == "completed", record
        run = load_run(sweep / str(num))
        assert run.config["loss"]["name"] == ("hinge", "lsgan")[num % 2]
        rows = logged(sweep / str(num))
        assert [row["step"] for row in rows] == [1, 2]
        assert "loss/gp" not in rows[-1] and "loss/r1" not in rows[-1]


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
    assert "loss=mylosses.MarginLoss" in run.run.tags
    assert logged(run_dir)[-1]["loss/r1"] > 0


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "+loss.margn=3",
            "loss.margn=3: not a parameter of mylosses.MarginLoss, which takes margin",
        ),
        ("loss._target_=mylosses.Margin", "loss._target_='mylosses.Margin': cannot be imported"),
        (
            "loss._target_=torch.nn.MSELoss",
            "loss._target_='torch.nn.MSELoss': must be a subclass of ganexp.losses.GANLoss",
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
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"ganexp: error: {expected}")
    assert "Traceback" not in result.stderr
    assert not run_dir.exists()
