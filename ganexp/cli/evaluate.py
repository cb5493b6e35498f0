"""``ganexp-eval checkpoint=PATH``: every metric of a checkpoint, as JSON on stdout and in
``PATH`` with the suffix ``.metrics.json`` (or ``out=FILE``).

ganexp-eval checkpoint=RUN_DIR                  # the run folder's newest checkpoint
ganexp-eval checkpoint=RUN_DIR/checkpoints/best.pt out=metrics.json
ganexp-eval checkpoint=RUN_DIR metrics.num_samples=10000 metrics.features=classifier

checkpoint=PATH  a checkpoint file or a run folder (its newest checkpoint)
out=FILE         where the JSON goes (default: beside the checkpoint, .metrics.json)
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

DEFAULTS = {"out": ""}


def main(argv: list[str] | None = None) -> None:
    from ganexp.session.run import build_evaluator

    target, args, overrides = parse_args(sys.argv[1:] if argv is None else argv, DEFAULTS)
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
