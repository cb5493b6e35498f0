"""``ganexp --help``: what ganexp is, each config group with its options, and each preset with
the line that says what it shows. Read from the config tree itself (``ganexp/conf``), so it
cannot drift from what composes; Hydra's own help stays under ``--hydra-help``."""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

from omegaconf import OmegaConf

from ganexp.config import CONFIG_MODULE

CONF = Path(str(files(CONFIG_MODULE)))
# groups a run is composed from, in the order a user meets them; the rest follow by name
FIRST = ("experiment", "generator", "discriminator", "norm", "loss", "data", "task", "device")
NOT_SHOWN = {"hydra"}
WIDTH = 100
ABBREVIATIONS = {"al", "e.g", "i.e", "vs", "sec", "fig", "eq", "tab", "cf"}

USAGE = """\
ganexp: a GAN experiment runner. A run is composed from config groups (GROUP=OPTION) and keys
(KEY=VALUE), trained, logged to Weights & Biases (offline without credentials) and kept in a run
folder (outputs/DATE/TIME: config, checkpoints, samples, metrics.jsonl).

usage: ganexp [-m] [--dry-run] [GROUP=OPTION | KEY=VALUE ...]

  ganexp                                   the default run: DCGAN, Fashion-MNIST, BCE, batch norm
  ganexp norm=layer loss=wgan_gp           compose groups
  ganexp -m norm=batch,layer seed=0,1,2    a sweep: one job per combination, then summary.md
  ganexp -m experiment=norm_study          a preset's whole sweep
  ganexp --dry-run -m experiment=norm_study   list a sweep's jobs; run nothing
  ganexp hydra.run.dir=RUN                 the same command again continues RUN
  ganexp resume=RUN ...                    RUN's weights in a new folder (the same experiment)
  ganexp --cfg job norm=layer              print the composed config; run nothing
  ganexp-sample checkpoint=RUN / ganexp-eval checkpoint=RUN   samples / metrics of a run
  ganexp-inspect RUN                       what a run logged to W&B (offline run files too)

flags: -m (--multirun) sweep; --dry-run with -m: list the jobs; --cfg job: the config;
       --hydra-help: Hydra's own help. Every key with its default: docs/config-reference.md
"""


def _first_sentence(path: Path) -> str:
    """The header comment of a config file up to its first full stop (or question mark); an
    abbreviation's stop ("et al.", "e.g.") does not end a sentence."""
    words: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith("# @package"):
            continue
        if not line.startswith("#"):
            break
        words.append(line.lstrip("#").strip())
    text = " ".join(words)
    for end in re.finditer(r"[.?](?=\s|$)", text):
        if text[: end.start()].split()[-1].lower() not in ABBREVIATIONS:
            return text[: end.end()]
    return text


def _defaults() -> dict[str, str]:
    """Each group's default option, from the primary config's defaults list."""
    chosen: dict[str, str] = {}
    for entry in OmegaConf.load(CONF / "config.yaml").defaults:
        if isinstance(entry, str) or entry is None:
            continue
        for group, option in entry.items():
            if option is not None:
                chosen[str(group)] = str(option)
    return chosen


def _sweep_params(preset: Path) -> dict[str, str]:
    """``hydra.sweeper.params`` of a preset, with those of the presets it extends (its defaults
    list) under its own, as Hydra merges them."""
    cfg = OmegaConf.load(preset)
    params: dict[str, str] = {}
    for entry in cfg.get("defaults") or []:
        parent = CONF / "experiment" / f"{str(entry).removeprefix('/experiment/')}.yaml"
        if isinstance(entry, str) and parent.exists():
            params |= _sweep_params(parent)
    own = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    return params | {str(k): str(v) for k, v in own.items()}


def sweep_jobs(preset: Path) -> int:
    """How many jobs ``-m experiment=PRESET`` runs (its sweep's product); 1 if it has none."""
    from ganexp.session.preflight import job_overrides

    params = _sweep_params(preset)
    return len(job_overrides([], True, params)) if params else 1


def _wrapped(label: str, text: str, indent: int = 24) -> list[str]:
    lines, line = [], f"  {label:<{indent - 3}} "
    for word in text.split():
        if len(line) + len(word) + 1 > WIDTH and line.strip() != label:
            lines.append(line.rstrip())
            line = " " * indent
        line += word + " "
    return [*lines, line.rstrip()]


def groups() -> dict[str, list[str]]:
    """Every config group a user chooses from and its options (file names), groups in FIRST's
    order, then by name."""
    found = {
        p.name: sorted(f.stem for f in p.glob("*.yaml"))
        for p in CONF.iterdir()
        if p.is_dir() and p.name not in NOT_SHOWN and not p.name.startswith("_")
    }
    order = [g for g in FIRST if g in found] + sorted(set(found) - set(FIRST))
    return {group: found[group] for group in order}


def presets() -> dict[str, tuple[str, int]]:
    """Each experiment preset: the first sentence of its header and its sweep's job count."""
    return {
        path.stem: (_first_sentence(path), sweep_jobs(path))
        for path in sorted((CONF / "experiment").glob("*.yaml"))
    }


def help_text() -> str:
    defaults = _defaults()
    out = [USAGE, "config groups (GROUP=OPTION; * the default):"]
    for group, options in groups().items():
        if group == "experiment":
            continue
        shown = [f"{o}*" if defaults.get(group) == o else o for o in options]
        out += _wrapped(group, ", ".join(shown))
    out += _wrapped("hydra/launcher", "basic*, joblib, submitit_local, submitit_slurm, slurm")
    out += ["", "experiment presets (experiment=NAME; a sweep runs whole with -m):"]
    for name, (what, jobs) in presets().items():
        label = f"{name} [{jobs} jobs]" if jobs > 1 else name
        out += _wrapped(label, what, indent=42)
    return "\n".join(out) + "\n"
