"""``ganexp-eval checkpoint=PATH``: every metric of a checkpoint, as JSON on stdout and in
``PATH`` with the suffix ``.metrics.json`` (or ``out=FILE``).

ganexp-eval checkpoint=RUN_DIR                  # the run folder's newest checkpoint
ganexp-eval checkpoint=RUN_DIR/checkpoints/best.pt out=metrics.json
ganexp-eval checkpoint=RUN_DIR metrics.num_samples=10000 metrics.features=classifier
ganexp-eval checkpoint=RUN_DIR all=true         # every checkpoint: the curve, after the fact

checkpoint=PATH  a checkpoint file or a run folder (its newest checkpoint)
out=FILE         where the JSON goes (default: beside the checkpoint, .metrics.json)
all=true         every checkpoint of a run folder (its step checkpoints and best.pt): a JSON
                 row each, then eval_all.csv and eval_all.png (the metric curve after the
                 fact, without retraining) in the run folder (or out=DIR)
Any other KEY=VALUE overrides the checkpoint's config (metrics.*, data.root, device=cpu).

The numbers are printed before anything is written: a checkpoint in a read-only folder (or a
full disk) loses the file, never the numbers.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from torch import nn

from ganexp.cli.restore import Restored, parse_args, report_errors, restore
from ganexp.config import RunConfig
from ganexp.data.spec import DataSpec
from ganexp.engine.runfolder import writable_file_error, write_whole
from ganexp.errors import ConfigError, GanexpError, RunFailed

DEFAULTS = {"out": "", "all": False}


def main(argv: list[str] | None = None) -> None:
    from ganexp.session.run import build_evaluator

    target, args, overrides = parse_args(sys.argv[1:] if argv is None else argv, DEFAULTS)
    if args["all"]:
        evaluate_all(target, overrides, args["out"])
        return
    restored = restore(target, overrides)
    out = (
        Path(args["out"]).expanduser()
        if args["out"]
        else restored.path.with_suffix(".metrics.json")
    )
    cfg = replace(restored.cfg, metrics=replace(restored.cfg.metrics, enabled=True))
    spec = evaluation_spec(cfg, restored.spec)
    unwritable = writable_file_error(out)
    if unwritable:
        print(
            f"ganexp-eval: note: cannot write {out} ({unwritable}); the metrics are only printed "
            "(out=FILE writes them elsewhere)",
            file=sys.stderr,
        )
    evaluator = build_evaluator(cfg, spec, restored.device, classifiers(restored))
    if evaluator is None:
        raise ConfigError("checkpoint", str(restored.path), "nothing to evaluate for this data")
    metrics = {f"eval/{k}": v for k, v in evaluator(restored.generator).items()}
    report = {
        "checkpoint": str(restored.path),
        "step": restored.state["step"],
        "metrics": metrics,
        "setup": evaluator.setup(),
    }
    text = json.dumps(report, indent=2)
    print(text, flush=True)
    if unwritable:
        return
    try:
        write_whole(out, lambda f: f.write(f"{text}\n".encode()))
    except RunFailed as error:
        raise GanexpError(f"{error}; the metrics are printed above") from None


def run_checkpoints(target: Path) -> list[Path]:
    """Every step checkpoint of a run folder, and best.pt, oldest first: one per step."""
    from ganexp.engine.checkpoint import BEST, checkpoint_folder, load_checkpoint

    store = checkpoint_folder(target) if target.is_dir() else None
    if store is None:
        raise ConfigError("checkpoint", str(target), "all=true needs a run folder with checkpoints")
    paths = list(reversed(store.steps()))
    best = store.folder / BEST
    if best.is_file():
        steps = {int(p.stem[5:]) for p in paths}
        if load_checkpoint(best, "checkpoint")["step"] not in steps:
            paths.append(best)
    return paths


def evaluate_all(target: Path, overrides: list[str], out: str) -> None:
    """``all=true``: every checkpoint of the run evaluated, without training: one JSON row per
    checkpoint on stdout, and ``eval_all.csv`` and ``eval_all.png`` (the headline against step)
    in the run folder (or ``out=DIR``)."""
    from ganexp.session.run import build_evaluator

    rows, evaluator = [], None
    for path in run_checkpoints(target):
        restored = restore(path, overrides)
        if evaluator is None:  # one evaluator: the real side is computed (or read) once
            cfg = replace(restored.cfg, metrics=replace(restored.cfg.metrics, enabled=True))
            spec = evaluation_spec(cfg, restored.spec)
            evaluator = build_evaluator(cfg, spec, restored.device, classifiers(restored))
            if evaluator is None:
                raise ConfigError("checkpoint", str(path), "nothing to evaluate for this data")
        metrics = {f"eval/{k}": v for k, v in evaluator(restored.generator).items()}
        row = {"checkpoint": path.name, "step": restored.state["step"], **metrics}
        print(json.dumps(row), flush=True)
        rows.append(row)
    rows.sort(key=lambda row: row["step"])
    folder = Path(out).expanduser() if out else target
    headline = evaluator.setup()["headline"]
    write_curve_files(rows, headline, folder)


def write_curve_files(rows: list[dict], headline: str, folder: Path) -> None:
    """``eval_all.csv`` (a row per checkpoint) and ``eval_all.png`` (``headline`` by step)."""
    import csv
    import io

    from ganexp.keys import maximize
    from ganexp.session.sweep import pyplot, save_figure

    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, columns)
    writer.writeheader()
    writer.writerows(rows)
    write_whole(folder / "eval_all.csv", lambda f: f.write(text.getvalue().encode()))
    fig, ax = pyplot().subplots(figsize=(8, 4.5), dpi=100)
    steps = [row["step"] for row in rows]
    ax.plot(steps, [row.get(headline) for row in rows], "o-")
    better = "higher" if maximize(headline) else "lower"
    ax.set_title(f"{headline} of every checkpoint ({better} is better)", fontsize=12)
    ax.set_xlabel("generator step", fontsize=11)
    ax.set_ylabel(headline, fontsize=11)
    ax.grid(alpha=0.3)
    save_figure(fig, folder / "eval_all.png")
    print(
        f"ganexp-eval: wrote {folder / 'eval_all.csv'} and {folder / 'eval_all.png'}",
        file=sys.stderr,
    )


def evaluation_spec(cfg: RunConfig, trained: DataSpec) -> DataSpec:
    """The data as it is now (the overrides applied: ``data.limit``, ``data.root``), checked as
    training checks it: the real images evaluation compares with are counted, not read from the
    checkpoint; the generator's shape must be theirs."""
    from ganexp.data import data_plan
    from ganexp.session.preflight import check_sizes

    now = data_plan(cfg.data)[0]
    if now.shape != trained.shape:
        allowed = f"its images are {list(now.shape)}; the generator makes {list(trained.shape)}"
        raise ConfigError("data.name", cfg.data.name, allowed)
    spec = replace(trained, size=now.size)
    check_sizes(cfg, spec, training=False)
    return spec


def classifiers(restored: Restored) -> tuple[nn.Module, nn.Module] | None:
    """The checkpoint's classifiers its task evaluates (a semi-supervised run's D and
    baseline), on the device, or None."""
    from ganexp.session.build import build_discriminator
    from ganexp.tasks import task_of

    cfg, spec = restored.cfg, restored.spec
    return task_of(cfg).restored_classifiers(
        restored.state, restored.path, lambda: build_discriminator(cfg, spec), restored.device
    )


def cli() -> None:
    report_errors("ganexp-eval", main, __doc__)


if __name__ == "__main__":
    cli()
