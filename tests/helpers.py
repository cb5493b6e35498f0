"""Helpers the tests share."""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ganexp.config import RunConfig, validate
from ganexp.engine.checkpoint import load_checkpoint
from ganexp.engine.trainer import Trainer
from ganexp.session.run import RunResult, Session, execute, setup


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op threads set to ``count`` inside, restored after. A float sum's rounding
    depends on how many threads split it, so numbers compared to the last digits are computed
    with the thread count they were recorded with, whatever the machine or test worker has."""
    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def compose_config(*overrides: str) -> DictConfig:
    """The config a command line `ganexp OVERRIDES` would run."""
    with initialize_config_module("ganexp.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


def checkpoint_weights(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint's networks and of their averages, by name."""
    state = load_checkpoint(path)
    kept = ("generator", "discriminator", "generator_ema", "historical_g", "historical_d")
    nets = [net for net in kept if net in state]
    return {f"{net}.{key}": value for net in nets for key, value in state[net].items()}


def assert_same_weights(a: Path, b: Path) -> None:
    """Two checkpoints hold identical networks, tensor for tensor."""
    wa, wb = checkpoint_weights(a), checkpoint_weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def smoke_config(*overrides: str) -> tuple[RunConfig, dict]:
    """The validated config of `ganexp experiment=smoke logger=none OVERRIDES`, and its dict."""
    cfg = compose_config("experiment=smoke", "logger=none", *overrides)
    return validate(cfg), OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def smoke_session(run_dir: Path, *overrides: str) -> Session:
    """A smoke run set up in-process in run_dir, ready to execute."""
    cfg, resolved = smoke_config(*overrides)
    return setup(cfg, resolved, run_dir, name="test", group=None)


def smoke_run(run_dir: Path, *overrides: str) -> RunResult:
    """A smoke run trained in-process in run_dir."""
    return execute(smoke_session(run_dir, *overrides))


class LinearCritic(nn.Module):
    """D(x) = w . x: its input gradient is w everywhere, so its gradient penalty is known."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def features(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return x.flatten(1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.features(x) @ self.weight


def assert_refused_before_training(result, run_dir: Path, expected: str) -> None:
    """A `ganexp` command refused in one line (exit 2) starting ``expected``, with no traceback
    and no run folder."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"ganexp: error: {expected}")
    assert "Traceback" not in result.stderr
    assert not run_dir.exists()


def replayed_step(trainer: Trainer) -> tuple[dict[str, float], nn.Module]:
    """One training step's statistics and a copy of G from before it; the data position and
    the random stream are then put back where the step began, so that drawing a batch (and
    noise) again gives the step's own."""
    generator = copy.deepcopy(trainer.generator)
    data, rng = copy.deepcopy(trainer.data.state_dict()), torch.get_rng_state()
    trainer.run_step()
    stats = trainer.pop_stats()
    trainer.data.load_state_dict(data)
    torch.set_rng_state(rng)
    return stats, generator


def eval_rows(run_dir: Path, key: str) -> list[dict]:
    """The rows of a run's metrics.jsonl that hold ``key``."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [row for row in map(json.loads, lines) if key in row]


def assert_estimate_holds(cfg: RunConfig, trainer: Trainer, *extra: nn.Module) -> None:
    """The memory estimate's weights, gradients and Adam state are what the trainer's networks
    (and ``extra`` ones trained alongside) really hold."""
    from ganexp.session.build import check_buildable
    from ganexp.session.memory import estimate

    nets = (trainer.generator, trainer.discriminator, *extra)
    params = sum(p.numel() * 4 for net in nets for p in net.parameters())
    buffers = sum(b.numel() * b.element_size() for net in nets for b in net.buffers())
    spec = trainer.spec
    need = estimate(cfg, spec, *check_buildable(cfg, spec), tensor_data=True)
    assert need.weights == params + buffers
    assert need.gradients == params and need.optimizer == 2 * params  # Adam


def assert_translates_a_folder(
    run_dir: Path, tmp_path: Path, translator: nn.Module, *args: str
) -> None:
    """`ganexp-sample checkpoint=RUN_DIR mode=translate input=DIR ARGS` writes, for each image
    of DIR, ``translator``'s output on it (to a grey level)."""
    from PIL import Image

    from ganexp.cli import sample
    from ganexp.data.images import to_signed_unit
    from ganexp.models.common import generate

    folder = tmp_path / "inputs"
    folder.mkdir()
    images = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    for i, image in enumerate(images):
        Image.fromarray(image[0].numpy()).save(folder / f"in{i}.png")
    sample.main([f"checkpoint={run_dir}", "mode=translate", f"input={folder}", *args])
    for i in range(2):
        written = Image.open(run_dir / "translated" / f"in{i}.png").convert("L")
        made = generate(translator, torch.zeros(1, 100), to_signed_unit(images[i : i + 1]))
        expected = ((made[0, 0].clamp(-1, 1) + 1) * 127.5).round()
        assert (torch.from_numpy(np.array(written)).float() - expected).abs().max() <= 1


CONF = Path(__file__).resolve().parent.parent / "ganexp" / "conf"


def as_option_yaml(*overrides: str) -> str:
    """Command-line overrides as one YAML of a config group (`# @package _global_`): a group's
    choice (``norm=spectral``) as a defaults override, a key (``trainer.z_dim=8``) as a value.
    Hydra composes ``+case=NAME`` with it as it composes the overrides themselves."""
    import yaml

    defaults, values = [], {}
    for override in overrides:
        key, _, value = override.partition("=")
        if "." not in key and (CONF / key).is_dir():
            defaults.append({f"override /{key}": value})
            continue
        node = values
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = yaml.safe_load(value)
    text = yaml.safe_dump({"defaults": [*defaults, "_self_"], **values}, sort_keys=False)
    return f"# @package _global_\n{text}"


def cli_sweep(folder: Path, cases: dict[str, tuple[str, ...]], *common: str) -> dict[str, Path]:
    """One `ganexp -m` process training every case (a set of overrides, by name) with the
    ``common`` overrides, instead of a `ganexp` process per case (a Python start and the imports
    each): the run folder of each case, by name. The command must succeed; each test then reads
    its own case's folder."""
    from test_sweeps import ganexp_cmd

    conf = folder / "conf" / "case"
    conf.mkdir(parents=True)
    for name, overrides in cases.items():
        (conf / f"{name}.yaml").write_text(as_option_yaml(*overrides))
    sweep = folder / "sweep"
    result = ganexp_cmd(
        "-m",
        *common,
        f"hydra.searchpath=[file://{folder}/conf]",
        f"+case={','.join(cases)}",
        f"hydra.sweep.dir={sweep}",
        cwd=folder,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {name: sweep / str(num) for num, name in enumerate(cases)}
