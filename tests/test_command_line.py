"""The command line explains itself: ``--help`` of each command, ``--dry-run``, a sweep preset
run without ``-m``, ``--cfg`` with ``-m``, and keys nothing would read."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from commands import run_command
from hydra import compose, initialize_config_module

from ganexp.cli import evaluate, sample, train
from ganexp.cli.help import CONF, groups, help_text, presets
from ganexp.errors import ConfigError
from ganexp.session.preflight import job_overrides, preflight

SMOKE = ("experiment=smoke", "logger=none", "metrics.enabled=false")


def test_help_lists_every_option_of_every_group_and_every_preset() -> None:
    text = help_text()
    assert "Hydra" not in text.split("--hydra-help")[0]  # not Hydra's own help
    lines = text.splitlines()
    listed: dict[str, list[str]] = {}  # each group's line and its indented continuations
    for line in lines[lines.index("config groups (GROUP=OPTION; * the default):") + 1 :]:
        if not line:
            break
        if not line.startswith("   "):
            group, _, line = line.strip().partition(" ")
        listed.setdefault(group, []).extend(o.strip() for o in line.split(",") if o.strip())
    for group, options in groups().items():
        if group != "experiment":
            assert [o.rstrip("*") for o in listed[group]] == options, group
    for name, (sentence, jobs) in presets().items():
        header = (CONF / "experiment" / f"{name}.yaml").read_text()
        assert sentence.split()[0] in header and sentence.endswith((".", "?")), name
        assert len(sentence) < 300, name  # a sentence, not the whole header
        label = f"  {name} [{jobs} jobs]" if jobs > 1 else f"  {name} "
        assert any(line.startswith(label) for line in lines), name
    assert listed["norm"][0] == "batch*" and listed["loss"][0] == "bce*"  # the defaults marked


def test_a_presets_first_sentence_skips_abbreviations() -> None:
    sentence = presets()["ssl_fashion_mnist"][0]
    assert sentence.startswith("Semi-supervised GAN (Salimans et al. 2016, sec. 5) on")
    assert presets()["norm_study"] == (
        "What does the critic's normalization do, under BCE and under WGAN-GP?",
        24,
    )


def ganexp_main(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """``ganexp ARGV`` through its entry point in this process: the exit code."""
    monkeypatch.setattr(sys, "argv", ["ganexp", *argv])
    try:
        train.main()
    except SystemExit as stop:
        return stop.code
    return 0


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_each_command_has_a_help_of_its_own(
    flag: str, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert ganexp_main([flag, "norm=layer"], monkeypatch) == 0
    shown = capsys.readouterr()
    assert (shown.out, shown.err) == (help_text(), "")
    for program, module in (("ganexp-sample", sample), ("ganexp-eval", evaluate)):
        monkeypatch.setattr(sys, "argv", [program, flag])
        module.cli()
        shown = capsys.readouterr()
        assert shown.err == ""
        assert shown.out.startswith(f"``{program} checkpoint=PATH``")
        assert "checkpoint=PATH  a checkpoint file or a run folder" in shown.out


def test_a_dry_run_lists_each_job_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = [*SMOKE, "norm=batch,layer", "seed=0,1"]
    assert ganexp_main(["--dry-run", "-m", *args], monkeypatch) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "ganexp: dry run: 4 jobs; nothing was run or written"
    expected = job_overrides(args, True, {"seed": "0"})  # smoke's own sweep: seed 0
    assert [line.split(maxsplit=1) for line in lines[1:]] == [
        [str(num), " ".join(job)] for num, job in enumerate(expected)
    ]
    assert not any(tmp_path.iterdir())  # no outputs/, no multirun/


def test_a_dry_run_refuses_what_the_run_would(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert ganexp_main(["--dry-run", *SMOKE, "norm=batchy"], monkeypatch) == 2
    shown = capsys.readouterr()
    assert shown.out == ""
    assert shown.err.strip().splitlines() == [
        "ganexp: error: norm='batchy': allowed: batch, group, instance, layer, none, spectral, "
        "virtual_batch"
    ]
    assert not any(tmp_path.iterdir())


def test_cfg_with_a_sweep_is_one_line_that_points_to_the_dry_run(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert ganexp_main(["-m", "--cfg", "job", "seed=0,1"], monkeypatch) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("ganexp: error: --cfg='job': shows the config of one run, not of a ")
    assert "--dry-run" in line
    assert not any(tmp_path.iterdir())


@pytest.mark.slow  # three commands, as a user types them
def test_the_commands_explain_themselves_as_typed(tmp_path: Path) -> None:
    shown = run_command("ganexp", "--help", cwd=tmp_path, timeout=120)
    assert (shown.returncode, shown.stdout, shown.stderr) == (0, help_text(), "")
    for program in ("ganexp-sample", "ganexp-eval", "ganexp-inspect"):
        shown = run_command(program, "-h", cwd=tmp_path, timeout=120)
        assert shown.returncode == 0 and shown.stderr == "", shown.stderr
        assert shown.stdout.startswith(f"``{program} ")
    dry = run_command("ganexp", "--dry-run", "-m", *SMOKE, "seed=0,1", cwd=tmp_path, timeout=300)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[0] == "ganexp: dry run: 2 jobs; nothing was run or written"
    refused = run_command("ganexp", "-m", "--cfg", "job", "seed=0,1", cwd=tmp_path, timeout=120)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert not any(tmp_path.iterdir())


def test_a_sweep_preset_without_m_says_it_runs_one_job(capsys: pytest.CaptureFixture) -> None:
    preflight(["experiment=norm_study", "debug=smoke", "logger=none"])
    notes = [line for line in capsys.readouterr().err.splitlines() if "is a sweep" in line]
    assert notes == [  # 8, not 24: debug=smoke cuts the preset's seeds to seed 0
        "ganexp: note: experiment=norm_study is a sweep of 8 jobs over norm.discriminator, loss, "
        "seed; without -m this runs one job with its own settings. Run all 8 with ganexp -m "
        "experiment=norm_study debug=smoke logger=none (--dry-run lists them)"
    ]
    preflight([*SMOKE, "trainer.max_steps=2"])  # a preset of one job: no note
    assert "is a sweep" not in capsys.readouterr().err


def test_a_loss_key_no_job_reads_is_refused_not_ignored() -> None:
    with pytest.raises(ConfigError) as error:
        preflight([*SMOKE, "loss=bce", "loss.gp_weight=3"])
    assert str(error.value) == (
        "loss.gp_weight=3.0: only loss=wgan_gp reads it (or a user's loss whose constructor "
        "takes gp_weight); nothing reads it under loss=bce"
    )
    with pytest.raises(ConfigError) as error:
        preflight(["-m", *SMOKE, "loss=hinge,lsgan", "loss.clip_value=0.1"])
    assert error.value.key == "loss.clip_value"
    assert str(error.value).endswith("nothing reads it under loss=hinge, loss=lsgan")
    # one job of the sweep reads it: it is for that job
    assert len(preflight(["-m", *SMOKE, "loss=bce,wgan_gp", "loss.gp_weight=3"])) == 2
    # a preset setting it for every loss it sweeps is not the command line's doing
    with initialize_config_module("ganexp.conf", version_base="1.3"):
        toy = compose("config", overrides=["experiment=wgan_toy", "loss=bce"])
    assert toy.loss.gp_weight == 0.1
    assert len(preflight(["experiment=wgan_toy", "loss=bce", "debug=smoke", "logger=none"])) == 1


def test_a_users_module_that_is_nowhere_says_where_ganexp_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as error:
        preflight([*SMOKE, "loss._target_=nowhere_losses.Mine"])
    assert str(error.value) == (
        "loss._target_='nowhere_losses.Mine': cannot be imported (No module named "
        f"'nowhere_losses'; ganexp imports a user's module from the working folder ({tmp_path}) "
        "or PYTHONPATH: run it from the folder that holds nowhere_losses.py or nowhere_losses/, "
        "or add that folder to PYTHONPATH)"
    )
