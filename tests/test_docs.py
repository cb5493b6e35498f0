"""The docs stay true: the config reference is current, links resolve, and the commands run.

Which commands run (the rule the pages promise, docs/development.md):

- every command of a ```bash block in README.md and docs/*.md, one test each (a command shown
  on several pages once), in a subprocess with the venv's bin/ first on PATH, in one temporary
  folder, and must exit 0;
- unless :data:`SKIPPED` names it, with the reason (a GPU, a cluster, the network, hours, a
  ``make`` target, or in smoke mode a repeat of a run another command makes); a SKIPPED entry
  that no page shows any more fails, so the table stays honest;
- a ```python or ```yaml block whose opening comment lines name a file (``# mylosses.py``,
  ``# conf/loss/mine.yaml``) is written to that file in the folder first;
- ```console and ```text blocks (shown output, error examples) are never run.

In smoke mode (:func:`smoke_command`): a ``ganexp`` command gets ``debug=smoke`` (unless it names
a ``debug`` option), ``logger=none`` (unless it sets a ``logger`` key, then W&B runs offline, as
tests/conftest.py sets it up) and its own ``hydra.run.dir`` (or ``hydra.sweep.dir`` with
``-m``); keys that only set a run's length (:data:`SMOKE_OWNED`) are dropped so that smoke's
values hold, and an Optuna search runs 2 trials. ``ganexp-sample`` / ``ganexp-eval`` run against a
checkpoint of a documented run (:data:`REUSABLE`; trained first when that run did not run): a
Pix2Pix one for ``mode=translate``, a CycleGAN one with ``direction=ba``; ``ganexp-inspect``
reads a smoke run that logged to W&B offline. ``DIR`` placeholders become small folders of
images the test writes.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import re
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from commands import ENTRY_POINTS, run_command
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent

# Documented commands the test does not run, and why.
SKIPPED: dict[str, str] = {
    "make train": "installs, then trains the default experiment for about 5 minutes",
    "make test": "runs the test suite this test belongs to",
    "make test-all": "runs the test suite this test belongs to",
    "make lint": "a development target, run by CI",
    "make format": "rewrites the repository's files",
    "wandb sync outputs/DATE/TIME/wandb/offline-run-*": "uploads to W&B: needs the network",
    "ganexp hydra.run.dir=RUN trainer.max_steps=2000": (
        "continuing is a run started twice in one folder: tests/test_reliability.py"
    ),
    "wandb sweep sweeps/wandb_sweep.yaml": "a W&B sweep: needs the network",
    "wandb agent ENTITY/PROJECT/SWEEP_ID": "a W&B sweep: needs the network",
    "torchrun --standalone --nproc_per_node=4 -m ganexp loss=wgan_gp norm.discriminator=layer": (
        "four training processes; tests/test_distributed.py runs two under torchrun"
    ),
    "torchrun --standalone --nproc_per_node=4 --no-python ganexp ...": (
        "four training processes, with '...' for the overrides"
    ),
    "torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 "
    "--rdzv-id=gan42 -m ganexp hydra.run.dir=/shared/runs/gan42 loss=wgan_gp": (
        "two nodes of 8 GPUs each"
    ),
    "ganexp -m hydra/launcher=slurm hydra.launcher.nodes=2 hydra.launcher.tasks_per_node=8 "
    "hydra.launcher.gpus_per_node=8 hydra.launcher.partition=gpu loss=bce,wgan_gp": (
        "a Slurm cluster with GPUs"
    ),
    "python -m ganexp.metrics.train_classifier data=fashion_mnist "
    "out=ganexp/assets/classifier_fashion_mnist.pt": (
        "retrains the shipped classifier (minutes) and overwrites it in the package"
    ),
    **{
        single: (
            "in smoke mode the first job of the preset's `-m` sweep shown with it, which runs "
            "(debug=smoke cuts a preset's seeds to seed 0)"
        )
        for single in (
            "ganexp experiment=ssl_fashion_mnist",
            "ganexp experiment=pix2pix_fashion_edges",
            "ganexp experiment=cyclegan_fashion_sneaker_boot",
            "ganexp experiment=pacgan_ring_short trainer.replicas=5",
        )
    },
    "ganexp experiment=smoke": (
        "in smoke mode the same run as plain `ganexp` (experiment=smoke is the default run with "
        "debug=smoke), which runs"
    ),
    "ganexp -m norm=batch,layer,instance,group loss=bce,wgan_clip,wgan_gp": (
        "the same 12-job sweep runs in tests/test_sweeps.py; the tour's 4-job norm x loss sweep "
        "runs here"
    ),
}
# Keys that only set a run's length or sample count: dropped, so that debug=smoke's values hold.
SMOKE_OWNED = ("trainer.max_steps", "metrics.num_samples", "hydra.sweeper.n_trials")
# Commands that need more than debug=smoke gives, and what they get.
ADJUSTED: dict[str, tuple[str, ...]] = {
    # 50 labels of each class: more than smoke's 256 examples hold (about 25 a class)
    "ganexp task=semi_supervised data.labels_per_class=50": ("data.limit=1000",),
    # the test's domains are 32x32 images: trained at their size, not resized to the folder's 64
    "ganexp task=unpaired_translation data=cyclegan_folder data.root=DIR": ("data.image_size=32",),
}
GANEXP = ("ganexp", "python -m ganexp")
# documented runs whose run folder (a sweep's first job's) serves as the checkpoint
# ganexp-sample / ganexp-eval read
REUSABLE = {
    "default": ("ganexp", "ganexp experiment=smoke"),
    "pix2pix": ("ganexp -m experiment=pix2pix_fashion_edges",),
    "cyclegan": ("ganexp -m experiment=cyclegan_fashion_sneaker_boot",),
}
CHECKPOINT_TOOLS = ("ganexp-sample", "ganexp-eval")
FILE_COMMENT = re.compile(r"^#\s*([\w./-]+\.(?:py|yaml))\b")


@dataclass(frozen=True)
class DocCommand:
    """One command of a ```bash block: where it is, and the command without its comment."""

    page: str
    line: int
    command: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def _blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """(language, line of the first content line, content lines) of each fenced block."""
    blocks, lang, start, body = [], None, 0, []
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            if lang is None:
                lang, start, body = line[3:].strip(), number + 1, []
            else:
                blocks.append((lang, start, body))
                lang = None
        elif lang is not None:
            body.append(line)
    assert lang is None, "a fenced block is not closed"
    return blocks


def _page_name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def doc_commands() -> list[DocCommand]:
    """Every command of every ```bash block of the pages, continuation lines joined."""
    found = []
    for page in PAGES:
        for lang, start, body in _blocks(page.read_text()):
            if lang != "bash":
                continue
            pending, first = "", start
            for offset, raw in enumerate(body):
                line = re.sub(r"(^|\s+)#.*$", "", raw).rstrip()
                if not pending:
                    first = start + offset
                if line.endswith("\\"):
                    pending += line[:-1].strip() + " "
                    continue
                command = " ".join((pending + line).split())
                pending = ""
                if command:
                    found.append(DocCommand(_page_name(page), first, command))
    return found


def doc_files() -> dict[str, str]:
    """Relative path -> text of each ```python / ```yaml block that names its file."""
    files = {}
    for page in PAGES:
        for lang, _, body in _blocks(page.read_text()):
            if lang not in ("python", "yaml"):
                continue
            header = itertools.takewhile(lambda line: line.startswith("#"), body)
            names = [m.group(1) for line in header if (m := FILE_COMMENT.match(line))]
            if names:
                files[names[0]] = "\n".join(body) + "\n"
    return files


COMMANDS = doc_commands()
# a command several pages show runs once, under its first place
_first: dict[str, DocCommand] = {}
for _doc in COMMANDS:
    _first.setdefault(_doc.command, _doc)
UNIQUE = list(_first.values())


def _key(token: str) -> str:
    return token.split("=", 1)[0] if "=" in token else ""


def _save_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _noise(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.integers(0, 256, shape, dtype=np.uint8)


class Workspace:
    """The folder the commands run in, the folders their DIR placeholders become, and the
    checkpoints ganexp-sample / ganexp-eval read, made when first needed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runs = 0
        self.folders: dict[str, Path] = {}
        self.checkpoints: dict[str, Path] = {}
        self.completed: dict[str, Path] = {}  # documented command -> the run folder it made
        for name, text in doc_files().items():
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)

    def fresh(self, kind: str) -> Path:
        self.runs += 1
        return self.root / "out" / f"{kind}-{self.runs}"

    def folder(self, kind: str) -> Path:
        """A small folder of images in the layout ``kind`` reads."""
        if kind in self.folders:
            return self.folders[kind]
        rng = np.random.default_rng(0)
        where = self.root / "data" / kind
        if kind == "images":  # images to translate (input=DIR) or to score (fake=DIR)
            for i in range(8):
                _save_png(where / f"in{i}.png", _noise(rng, 32, 32))
        elif kind == "pix2pix":  # each file A | B side by side
            for split, count in (("train", 64), ("test", 8)):
                for i in range(count):
                    _save_png(where / split / f"{i}.png", _noise(rng, 32, 64, 3))
        elif kind == "cyclegan":
            for split, count in (("train", 64), ("test", 8)):
                for domain in "AB":
                    for i in range(count):
                        _save_png(where / f"{split}{domain}" / f"{i}.png", _noise(rng, 32, 32, 3))
        else:
            raise AssertionError(kind)
        self.folders[kind] = where
        return where

    def checkpoint(self, kind: str) -> Path:
        """The run folder of a smoke run of ``kind``: default, pix2pix or cyclegan."""
        if kind in self.checkpoints:
            return self.checkpoints[kind]
        for command in REUSABLE[kind]:  # a documented run that made one already
            if command in self.completed:
                self.checkpoints[kind] = self.completed[command]
                return self.checkpoints[kind]
        preset = {
            "default": "experiment=smoke",
            "pix2pix": "experiment=pix2pix_fashion_edges",
            "cyclegan": "experiment=cyclegan_fashion_sneaker_boot",
        }[kind]
        run_dir = self.fresh(f"checkpoint-{kind}")
        command = f"ganexp {preset} debug=smoke logger=none hydra.run.dir={run_dir}"
        result = run(command, self.root)
        assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}"
        self.checkpoints[kind] = run_dir
        return run_dir

    def wandb_run(self) -> Path:
        """The run folder of a smoke run that logged to W&B offline (for ganexp-inspect)."""
        if "wandb" not in self.checkpoints:
            run_dir = self.fresh("wandb-run")
            command = (
                f"ganexp experiment=smoke debug=smoke logger.mode=offline hydra.run.dir={run_dir}"
            )
            result = run(command, self.root)
            assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}"
            self.checkpoints["wandb"] = run_dir
        return self.checkpoints["wandb"]


def run(command: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """``bash -c COMMAND`` in cwd, the venv's bin/ first on PATH, one torch thread (the
    machine is shared). A plain ganexp command (no shell syntax) runs as tests/commands.py runs
    it: the same entry point, forked from a process that did its imports."""
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
        # the user's own modules (mylosses.py, mynets.py) import, as from the folder they are in
        "PYTHONPATH": os.pathsep.join([str(cwd), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    program, *args = command.split()
    if program in ENTRY_POINTS and not re.search(r"[|&;<>()$`\\\"'*?~]", command):
        return run_command(program, *args, cwd=cwd, env=env, timeout=timeout, merge_stderr=True)
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


def _placeholders(tokens: list[str], ws: Workspace) -> list[str]:
    data = next((t.split("=", 1)[1] for t in tokens if _key(t) == "data"), "")
    folder = {"pix2pix_folder": "pix2pix", "cyclegan_folder": "cyclegan"}.get(data)
    out = []
    for token in tokens:
        if token == "data.root=DIR":
            assert folder, f"no folder to stand for DIR with data={data}"
            token = f"data.root={ws.folder(folder)}"
        elif token in ("input=DIR", "fake=DIR"):
            token = f"{_key(token)}={ws.folder('images')}"
        elif token == "resume=RUN":  # a fork of a documented run
            token = f"resume={ws.checkpoint('default')}"
        out.append(token)
    return out


def smoke_command(command: str, ws: Workspace) -> tuple[str, Path | None]:
    """The documented command as the test runs it (see the module's docstring), and the run
    folder it makes (a sweep's: its first job's; None for a checkpoint tool)."""
    assert not re.search(r"[\"']", command), f"quote the rule for quotes first: {command}"
    tokens = command.split()
    if command.startswith("ganexp-inspect"):  # RUN: a run that logged to W&B
        program, *rest = tokens
        run_dir = ws.wandb_run()
        return " ".join([program, *(t if "=" in t else str(run_dir) for t in rest)]), None
    if command.startswith(CHECKPOINT_TOOLS):
        kind = "default"
        if "mode=translate" in tokens:
            kind = "cyclegan" if "direction=ba" in tokens else "pix2pix"
        run_dir = ws.checkpoint(kind)
        out = []
        for token in _placeholders(tokens, ws):
            if _key(token) == "checkpoint":
                value = token.split("=", 1)[1]
                name = Path(value).name
                target = run_dir / "checkpoints" / name if name.endswith(".pt") else run_dir
                token = f"checkpoint={target}"
            elif _key(token) in SMOKE_OWNED:
                continue
            out.append(token)
        return " ".join(out), None
    assert command.startswith(GANEXP), f"no rule to run {command!r}: add one, or to SKIPPED"
    keys = {_key(t) for t in tokens}
    out = [t for t in _placeholders(tokens, ws) if _key(t) not in SMOKE_OWNED]
    out += list(ADJUSTED.get(command, ()))
    if "debug" not in keys:
        out.append("debug=smoke")
    if not any(k == "logger" or k.startswith("logger.") for k in keys):
        out.append("logger=none")
    if "hparams_search" in keys:
        out.append("hydra.sweeper.n_trials=2")
    if "-m" in tokens or "--multirun" in tokens:
        sweep_dir = ws.fresh("sweep")
        return " ".join([*out, f"hydra.sweep.dir={sweep_dir}"]), sweep_dir / "0"
    run_dir = ws.fresh("run")
    return " ".join([*out, f"hydra.run.dir={run_dir}"]), run_dir


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("docs"))


@pytest.mark.slow
@pytest.mark.parametrize("doc", UNIQUE, ids=[c.id for c in UNIQUE])
def test_a_documented_command_runs(doc: DocCommand, workspace: Workspace) -> None:
    if doc.command in SKIPPED:
        pytest.skip(SKIPPED[doc.command])
    command, run_dir = smoke_command(doc.command, workspace)
    result = run(command, workspace.root)
    assert result.returncode == 0, f"{doc.id}: {command}\n{result.stdout[-4000:]}"
    if run_dir is not None:
        workspace.completed[doc.command] = run_dir


def test_every_skipped_command_is_still_documented() -> None:
    shown = {c.command for c in COMMANDS}
    assert not set(SKIPPED) - shown, "SKIPPED names commands no page shows any more"
    assert not set(ADJUSTED) - shown, "ADJUSTED names commands no page shows any more"


def test_the_pages_show_commands_and_the_files_they_need() -> None:
    commands = {c.command for c in COMMANDS}
    assert "ganexp" in commands and any(c.startswith("ganexp-eval") for c in commands)
    assert {"mylosses.py", "mynets.py", "conf/loss/mine.yaml"} <= set(doc_files())


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    outside, anchors = True, set()
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            outside = not outside
        elif outside and (match := re.match(r"^#{1,6} (.*)", line)):
            anchors.add(_slug(match.group(1)))
    return anchors


def test_every_link_between_the_pages_resolves() -> None:
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{_page_name(page)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{_page_name(page)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_the_readme_is_a_start_page() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


def _reference_script() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(
        "config_reference", ROOT / "scripts" / "config_reference.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_config_reference_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "config_reference.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_the_reference_check_fails_on_a_schema_it_was_not_made_from(tmp_path: Path) -> None:
    """A field added to the schema's source changes the page, and --check says it is stale."""
    reference = _reference_script()
    module, source = reference.schema_module()
    anchor = "class RunConfig:\n"
    assert anchor in source
    changed = source.replace(
        anchor, anchor + "    docs_probe: int = 7  # a key only this test adds\n", 1
    )
    fake = types.ModuleType(f"{module.__name__}_docs_probe")
    fake.__package__ = module.__package__
    sys.modules[fake.__name__] = fake
    try:
        exec(compile(changed, "<changed schema>", "exec"), fake.__dict__)
        before = reference.render(module, source, None)
        after = reference.render(fake, changed, None)
        from_another_schema = reference.render(fake, changed, reference.conf_dir())
    finally:
        del sys.modules[fake.__name__]
    assert before != after
    assert "| `docs_probe` | int | `7` | a key only this test adds |" in after
    page = tmp_path / "config-reference.md"
    page.write_text(from_another_schema)
    assert reference.main(["--check", "--output", str(page)]) == 1  # made from another schema
    page.write_text(reference.build())
    assert reference.main(["--check", "--output", str(page)]) == 0


def test_the_reference_refuses_an_allowed_values_tuple_that_is_gone() -> None:
    reference = _reference_script()
    module, source = reference.schema_module()
    fake = types.ModuleType(module.__name__)  # the real module, less its DATASETS tuple
    fake.__dict__.update({k: v for k, v in vars(module).items() if k != "DATASETS"})
    with pytest.raises(reference.ReferenceError, match="DATASETS"):
        reference.render(fake, source, None)
