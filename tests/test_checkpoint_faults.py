"""A checkpoint someone hands you, or one damaged on disk, never runs code and never ends in a
traceback: forged configs, files that are not checkpoints, partial and malformed checkpoints,
flipped bytes without the digest, and ganexp-sample / ganexp-eval arguments and outputs."""

from __future__ import annotations

import copy
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from commands import run_command
from helpers import smoke_run
from hydra.utils import instantiate
from PIL import Image

from ganexp.cli import evaluate, sample
from ganexp.engine.checkpoint import load_checkpoint, load_resume, resume_source, save_checkpoint
from ganexp.errors import ConfigError, GanexpError, RunFailed

BIN = Path(sys.executable).parent
TOY = ("data=ring8", "generator=mlp", "discriminator=mlp", "norm=none", "metrics.enabled=false")
ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real toy run with step checkpoints 2 and 4 (last.pt is step 4)."""
    run_dir = tmp_path_factory.mktemp("toy")
    smoke_run(run_dir, *TOY, "trainer.max_steps=4", "trainer.checkpoint_every=2")
    return run_dir


@pytest.fixture
def state(run: Path) -> dict:
    return copy.deepcopy(load_checkpoint(run / "checkpoints" / "last.pt"))


def payload(marker: Path) -> dict:
    """A Hydra node that creates ``marker`` when instantiated."""
    return {"_target_": "os.makedirs", "name": str(marker)}


def forged(tmp_path: Path, state: dict, name: str = "forged.pt") -> Path:
    path = tmp_path / name
    save_checkpoint(state, path)  # with a matching .sha256: only its contents are forged
    return path


def refusal(main, *argv: str) -> str:
    with pytest.raises(ConfigError) as error:
        main(list(argv))
    message = str(error.value)
    assert "\n" not in message
    return message


# --- a checkpoint never chooses code ------------------------------------------------------------


def test_the_payload_used_below_runs_when_instantiated(tmp_path: Path) -> None:
    """So that the refusals below are refusals of live code."""
    instantiate(payload(tmp_path / "ran"))
    assert (tmp_path / "ran").is_dir()


PLACES = {
    "top level": lambda c, p: c.update(evil=p),
    "generator param": lambda c, p: c["generator"].update(layer=p),
    "discriminator param": lambda c, p: c["discriminator"].update(layer=p),
    "nested deeper": lambda c, p: c["loss"].update(extra={"inner": {"deep": p}}),
    "in a list": lambda c, p: c["generator"].update(blocks=[1, {"x": [p]}]),
    "paper rows": lambda c, p: c.update(paper=[p]),
    "data": lambda c, p: c["data"].update(root=p),
    "optim": lambda c, p: c["optim"].update(name=p),
    "trainer": lambda c, p: c["trainer"].update(evil=p),
    "metrics": lambda c, p: c["metrics"].update(evil=p),
    "logger": lambda c, p: c["logger"].update(evil=p),
    "device": lambda c, p: c["device"].update(evil=p),
    "task": lambda c, p: c["task"].update(evil=p),
    "loss slot": lambda c, p: c["loss"].update(_target_="os.makedirs", name=p["name"]),
    "generator slot": lambda c, p: c["generator"].update(_target_="os.makedirs"),
    "norm slot": lambda c, p: c["norm"].update(_target_="os.makedirs"),
}


@pytest.mark.parametrize("place", list(PLACES))
def test_a_checkpoint_naming_code_is_refused_by_sample_and_eval(
    tmp_path: Path, state: dict, place: str
) -> None:
    marker = tmp_path / "payload-ran"
    PLACES[place](state["config"], payload(marker))
    path = forged(tmp_path, state)
    for main in (sample.main, evaluate.main):
        message = refusal(main, f"checkpoint={path}", f"out={tmp_path / 'out'}")
        assert message.startswith(f"checkpoint='{path}'") and "code" in message, message
    assert not marker.exists()


def test_an_interpolation_in_a_checkpoint_is_refused(tmp_path: Path, state: dict) -> None:
    state["config"]["data"]["root"] = "${oc.env:HOME}"
    message = refusal(sample.main, f"checkpoint={forged(tmp_path, state)}")
    assert "interpolation at data.root" in message


def test_a_users_class_in_a_checkpoint_runs_only_when_the_command_line_names_it(
    tmp_path: Path, state: dict
) -> None:
    state["config"]["generator"]["_target_"] = "mynets_absent.Mine"
    path = forged(tmp_path, state)
    message = refusal(sample.main, f"checkpoint={path}")
    assert "names your own classes (generator._target_=mynets_absent.Mine)" in message
    assert message.endswith("name them yourself: generator._target_=mynets_absent.Mine")
    # named: the checkpoint passes, and the class is then looked up as the user's own
    named = refusal(sample.main, f"checkpoint={path}", "generator._target_=mynets_absent.Mine")
    assert named.startswith("generator._target_='mynets_absent.Mine': cannot be imported")


@pytest.mark.slow  # ganexp processes; the same refusals in-process are in the fast tier
def test_the_forged_checkpoint_is_refused_through_the_command_line(
    tmp_path: Path, state: dict
) -> None:
    marker = tmp_path / "payload-ran"
    state["config"]["generator"]["layer"] = [payload(marker)]
    path = forged(tmp_path, state)
    for command in ("ganexp-eval", "ganexp-sample"):
        result = run_command(command, f"checkpoint={path}", timeout=120)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{command}: error: checkpoint=")
        assert "generator.layer.0._target_='os.makedirs'" in lines[0]
    assert not marker.exists()


# --- files that are not checkpoints, partial and malformed ones ---------------------------------


def _png(path: Path) -> None:
    Image.new("L", (4, 4)).save(path, format="PNG")


NOT_CHECKPOINTS = {
    "text": (lambda p: p.write_text("hello\n"), "it is text"),
    "yaml": (lambda p: p.write_text("generator: {}\nstep: 4\n"), "it is text"),
    "png": (_png, "it is a PNG image"),
    "random bytes": (lambda p: p.write_bytes(bytes(range(256)) * 8), "unknown kind"),
    "empty": (lambda p: p.write_bytes(b""), "an empty file"),
    "a pickle": (lambda p: torch.save({}, p, _use_new_zipfile_serialization=False), "pickle"),
}


@pytest.mark.parametrize("kind", list(NOT_CHECKPOINTS))
def test_a_file_that_is_not_a_checkpoint_is_named_for_what_it_is(tmp_path: Path, kind: str):
    write, expected = NOT_CHECKPOINTS[kind]
    path = tmp_path / "file.pt"
    write(path)
    message = refusal(sample.main, f"checkpoint={path}")
    assert "not a ganexp checkpoint" in message and expected in message, message
    assert "code" not in message


MALFORMED = {
    "generator is a tensor": (lambda s: s.update(generator=torch.zeros(3)), "'generator' is a"),
    "generator is a string": (lambda s: s.update(generator="w"), "'generator' is 'w'"),
    "no step": (lambda s: s.pop("step"), "it has no 'step'"),
    "step is text": (lambda s: s.update(step="four"), "'step' is 'four'"),
    "negative step": (lambda s: s.update(step=-5), "'step' is -5"),
    "no opt_g": (lambda s: s.pop("opt_g"), "it has no 'opt_g'"),
    "no rng": (lambda s: s.pop("rng"), "it has no 'rng'"),
    "rng of strings": (lambda s: s.update(rng={"torch": "x"}), "'rng' is a dict"),
    "spec of another shape": (lambda s: s["spec"].update(shape="wide"), "'spec' is a dict"),
    "a list": (lambda s: (s.clear(), s.update(generator={})), "it has no 'discriminator'"),
}


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_a_malformed_checkpoint_is_one_line_before_any_run_folder(
    tmp_path: Path, state: dict, kind: str
) -> None:
    change, expected = MALFORMED[kind]
    change(state)
    path = forged(tmp_path, state)
    with pytest.raises(ConfigError) as error:
        load_resume(resume_source(str(path), tmp_path))
    assert expected in str(error.value) and "\n" not in str(error.value), str(error.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # ganexp processes; the same refusals in-process are in the fast tier
def test_a_malformed_checkpoint_is_refused_through_the_command_line(
    tmp_path: Path, state: dict
) -> None:
    state["step"] = -5
    path = forged(tmp_path, state)
    run_dir = tmp_path / "run"
    args = ["experiment=smoke", "logger=none", *TOY, f"resume={path}", f"hydra.run.dir={run_dir}"]
    result = run_command("ganexp", *args, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    reason = "malformed checkpoint: 'step' is -5, must be an integer >= 0"
    assert last == f"ganexp: error: resume='{path}': {reason}"
    assert not run_dir.exists()


def test_an_optimizer_of_other_parameters_is_one_line_when_loaded(tmp_path: Path, state: dict):
    state["opt_g"]["param_groups"][0]["params"] = [0]  # one parameter where G has several
    path = forged(tmp_path, state)
    with pytest.raises(ConfigError, match=r"malformed checkpoint \(ValueError"):
        smoke_run(tmp_path / "run", *TOY, "trainer.max_steps=6", f"resume={path}")


def test_flipped_bytes_are_caught_without_the_digest(tmp_path: Path, run: Path) -> None:
    path = tmp_path / "copied.pt"
    shutil.copy(run / "checkpoints" / "last.pt", path)  # no .sha256 beside it
    with zipfile.ZipFile(path) as archive:
        member = next(i for i in archive.infolist() if "/data/" in i.filename and i.file_size > 64)
    data = bytearray(path.read_bytes())
    local = member.header_offset  # the local header's own name and extra lengths (torch pads)
    name_len, extra_len = struct.unpack("<HH", data[local + 26 : local + 30])
    offset = local + 30 + name_len + extra_len + 8
    data[offset : offset + 4] = b"\xff\xff\xff\x7f"  # a float32 of 3.4e38 inside a weight
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=r"corrupt checkpoint \(CRC mismatch in .*data/"):
        load_checkpoint(path)


# --- ganexp-sample and ganexp-eval: arguments, fallbacks, where they write ----------------------


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("n=abc", "n='abc': must be an integer"),
        ("seed=1.5", "seed='1.5': must be an integer"),
        ("n=1000000000", "n=1000000000: must be an integer in [1, 4096] for mode=grid"),
        ("seed=-1", "seed=-1: must be an integer in [0, 2**63 - 1]"),
        ("label=-7", "label=-7: a class number, or -1 for every class"),
    ],
)
def test_sample_arguments_of_the_wrong_kind(run: Path, arg: str, expected: str) -> None:
    assert refusal(sample.main, f"checkpoint={run}", arg).startswith(expected)


def test_sample_into_a_folder_it_cannot_write_is_one_line(tmp_path: Path, run: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    message = refusal(sample.main, f"checkpoint={run}", f"out={blocker / 'sub'}")
    assert message.startswith(f"out='{blocker / 'sub'}': cannot write into")


def test_sample_and_eval_fall_back_to_the_newest_checkpoint_that_loads(
    tmp_path: Path, run: Path, capsys
) -> None:
    copied = tmp_path / "run"
    shutil.copytree(run, copied)
    last = copied / "checkpoints" / "last.pt"
    last.unlink()
    last.write_bytes(b"\x00" * 100)  # last.pt and its digest no longer agree
    sample.main([f"checkpoint={copied}", "n=4"])
    assert "skipping last.pt: corrupt checkpoint" in capsys.readouterr().err
    assert (copied / "generated" / "grid_seed0.png").is_file()


def test_sample_outside_a_run_folder_writes_beside_the_checkpoint(tmp_path: Path, run: Path):
    elsewhere = tmp_path / "shared"
    elsewhere.mkdir()
    shutil.copy(run / "checkpoints" / "last.pt", elsewhere / "model.pt")
    sample.main([f"checkpoint={elsewhere / 'model.pt'}", "n=4"])
    assert (elsewhere / "generated" / "grid_seed0.png").is_file()
    assert not (tmp_path / "generated").exists()


@pytest.mark.skipif(not ROOT, reason="mounting a read-only file system needs root")
def test_eval_beside_a_read_only_checkpoint_prints_its_numbers(
    tmp_path: Path, run: Path, capsys
) -> None:
    mount = tmp_path / "ro"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        shutil.copy(run / "checkpoints" / "last.pt", mount / "model.pt")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        evaluate.main([f"checkpoint={mount / 'model.pt'}", "metrics.num_samples=64"])
        captured = capsys.readouterr()
        assert '"eval/' in captured.out and "Read-only file system" in captured.err
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_eval_that_cannot_write_its_file_after_computing_still_shows_the_numbers(
    tmp_path: Path, run: Path, capsys, monkeypatch
) -> None:
    def full_disk(path: Path, write) -> None:
        raise RunFailed(f"could not write {path} (No space left on device)")

    monkeypatch.setattr(evaluate, "write_whole", full_disk)
    with pytest.raises(GanexpError, match=r"No space left on device\); the metrics are printed"):
        evaluate.main([f"checkpoint={run}", "metrics.num_samples=64", f"out={tmp_path / 'm.json'}"])
    assert '"eval/' in capsys.readouterr().out


@pytest.fixture(scope="module")
def image_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke run on 256 Fashion-MNIST images (data.limit=256)."""
    run_dir = tmp_path_factory.mktemp("images")
    smoke_run(run_dir, "metrics.enabled=false", "trainer.max_steps=1")
    return run_dir


def test_eval_counts_the_real_images_as_training_does(image_run: Path) -> None:
    restored = sample.restore(image_run, [])
    cfg = restored.cfg
    limited = refusal(evaluate.main, f"checkpoint={image_run}", "metrics.num_samples=400")
    assert limited.startswith("metrics.num_samples=400: evaluation compares with as many real")
    assert "at most 256" in limited
    from dataclasses import replace

    unlimited = replace(cfg, data=replace(cfg.data, limit=None))
    assert evaluate.evaluation_spec(unlimited, restored.spec).size == 60000


class Payload:
    """Pickles into a call that creates a folder if it is ever unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_hydras_rerun_of_a_pickled_run_folder_config_is_refused(tmp_path: Path) -> None:
    """Hydra's --experimental-rerun unpickles RUN/.hydra/config.pickle: a run folder someone
    hands out could run code through it."""
    marker = tmp_path / "payload-ran"
    pickled = tmp_path / "config.pickle"
    pickled.write_bytes(pickle.dumps(Payload(marker)))
    result = run_command("ganexp", "--experimental-rerun", str(pickled), cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip() == (
        f"ganexp: error: --experimental-rerun='{pickled}': refused: it unpickles a file of a run "
        "folder, which can run code; run the job's overrides again instead "
        "(RUN/.hydra/overrides.yaml)"
    )
    assert not marker.exists()
    pickle.loads(pickled.read_bytes())  # the file really is live
    assert marker.is_dir()
