"""``ganexp-eval checkpoint=PATH``: every metric of a checkpoint, as JSON on stdout and in
``PATH`` with the suffix ``.metrics.json`` (or ``out=FILE``); or of a folder of images.

ganexp-eval checkpoint=RUN_DIR                  # the run folder's newest checkpoint
ganexp-eval checkpoint=RUN_DIR/checkpoints/best.pt out=metrics.json
ganexp-eval checkpoint=RUN_DIR metrics.num_samples=10000 metrics.features=classifier
ganexp-eval checkpoint=RUN_DIR all=true         # every checkpoint: the curve, after the fact
ganexp-eval fake=DIR real=fashion_mnist         # a folder of images against a data set
ganexp-eval fake=DIR real=DIR2                  # ... or against another folder (image_folder)

checkpoint=PATH  a checkpoint file or a run folder (its newest checkpoint)
out=FILE         where the JSON goes (default: beside the checkpoint, .metrics.json)
fake=, real=     a folder of images (any size: resized to the real data's) scored against a
                 data set of ganexp's (data=NAME) or a folder, with every image of fake
                 (metrics.num_samples=N: the first N); JSON beside the folder (DIR.metrics.json)
all=true         every checkpoint of a run folder (its step checkpoints and best.pt), or of
                 each run of a sweep folder: a JSON row each, then eval_all.csv and
                 eval_all.png (the metric curve after the fact, without retraining) in the
                 folder (or out=DIR)
Any other KEY=VALUE overrides the checkpoint's config (metrics.*, data.root, device=cpu).

The numbers are printed before anything is written: a checkpoint in a read-only folder (or a
full disk) loses the file, never the numbers.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from importlib.resources import files
from pathlib import Path

import torch
from torch import nn

from ganexp.cli.restore import Restored, parse_args, report_errors, restore
from ganexp.config import RunConfig
from ganexp.data.spec import DataSpec
from ganexp.engine.runfolder import writable_file_error, write_whole
from ganexp.errors import ConfigError, GanexpError, RunFailed

DEFAULTS = {"out": "", "all": False, "fake": "", "real": ""}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
MIN_IMAGES = 6  # as metrics.num_samples: density and coverage use 5 neighbours


def main(argv: list[str] | None = None) -> None:
    from ganexp.session.run import build_evaluator

    argv = sys.argv[1:] if argv is None else argv
    target, args, overrides = parse_args(argv, DEFAULTS, required=not _folders_asked(argv))
    if target is None:
        evaluate_folder(args, overrides)
        return
    if args["fake"] or args["real"]:
        raise ConfigError(
            "fake", args["fake"] or None, "evaluates a folder: give it without checkpoint="
        )
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
    print_and_write(report, None if unwritable else out)


def print_and_write(report: dict, out: Path | None) -> None:
    """The JSON report on stdout first, then in ``out``: a file that cannot be written loses
    the file, never the numbers."""
    text = json.dumps(report, indent=2)
    print(text, flush=True)
    if out is None:
        return
    try:
        write_whole(out, lambda f: f.write(f"{text}\n".encode()))
    except RunFailed as error:
        raise GanexpError(f"{error}; the metrics are printed above") from None


def _folders_asked(argv: list[str]) -> bool:
    return any(arg.startswith(("fake=", "real=")) for arg in argv)


def folder_config(real: str, overrides: list[str]) -> RunConfig:
    """The config of a folder's evaluation: ``real`` a data set of ganexp's (``data=NAME``) or a
    folder of images (``data=image_folder``), with the command's overrides."""
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from ganexp.config import CONFIG_MODULE, composition_error, register_schema, validate
    from ganexp.tasks import check as check_task

    register_schema()
    named = Path(str(files(CONFIG_MODULE))) / "data" / f"{real}.yaml"
    data = [f"data={real}"] if named.is_file() else ["data=image_folder", f"data.root={real}"]
    try:
        with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            # nothing trains: no training batch may outnumber a small real folder
            eval_only = ["logger=none", "trainer.batch_size=1"]
            composed = compose("config", overrides=[*data, *eval_only, *overrides])
    except (HydraException, OmegaConfBaseException) as ex:
        raise composition_error(ex, overrides) from ex
    cfg = validate(composed)
    check_task(cfg)
    return cfg


def folder_images(folder: Path, shape: tuple[int, ...], limit: int) -> torch.Tensor:
    """The first ``limit`` image files of ``folder`` (by path, subfolders included) as uint8
    ``[N, C, H, W]`` in the real data's channels and size (resized bicubic, with a note)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not paths:
        raise ConfigError(
            "fake", str(folder), f"holds no image files ({', '.join(IMAGE_SUFFIXES)})"
        )
    channels, height, width = shape
    images, resized = [], set()
    for path in paths:
        try:
            with Image.open(path) as image:
                image = image.convert("L" if channels == 1 else "RGB")
                if image.size != (width, height):
                    resized.add(image.size)
                    image = image.resize((width, height), Image.Resampling.BICUBIC)
                array = np.asarray(image, dtype=np.uint8)
        except (OSError, UnidentifiedImageError, ValueError) as ex:
            raise ConfigError("fake", str(path), f"cannot be read as an image ({ex})") from None
        images.append(torch.from_numpy(array.reshape(height, width, channels).copy()))
    if resized:
        sizes = ", ".join(f"{w}x{h}" for w, h in sorted(resized))
        print(
            f"ganexp-eval: note: fake images of {sizes} resized to the real data's "
            f"{width}x{height} (bicubic)",
            file=sys.stderr,
        )
    return torch.stack(images).permute(0, 3, 1, 2).contiguous()


def evaluate_folder(args: dict, overrides: list[str]) -> None:
    """``fake=DIR real=NAME|DIR``: the images of a folder scored against a data set or another
    folder, with the metrics, floors and JSON a checkpoint's evaluation has."""
    from ganexp.data import data_plan
    from ganexp.engine.device import resolve_device
    from ganexp.metrics.evaluator import BATCH, ImageEvaluator
    from ganexp.session.preflight import check_sizes

    if not args["fake"] or not args["real"]:
        missing = "fake" if not args["fake"] else "real"
        raise ConfigError(
            missing, None, "required: fake=DIR (images) and real=NAME|DIR to score them against"
        )
    fake = Path(args["fake"]).expanduser()
    if not fake.is_dir():
        raise ConfigError("fake", str(fake), "must be a folder of images")
    cfg = folder_config(args["real"], overrides)
    spec = data_plan(cfg.data)[0]
    if spec.kind != "image":
        raise ConfigError("real", args["real"], "must be images (a data set of images or a folder)")
    asked = any(o.startswith("metrics.num_samples=") for o in overrides)
    images = folder_images(fake, spec.shape, cfg.metrics.num_samples if asked else 10**9)
    if len(images) < MIN_IMAGES:
        raise ConfigError(
            "fake",
            str(fake),
            f"holds {len(images)} images; the metrics need at least {MIN_IMAGES} (density and "
            "coverage use 5 neighbours)",
        )
    metrics = replace(cfg.metrics, enabled=True, num_samples=len(images))
    cfg = replace(cfg, metrics=metrics)
    check_sizes(cfg, spec, training=False)
    evaluator = ImageEvaluator(cfg, spec, resolve_device(cfg.device.name))
    batches = (images[i : i + BATCH] for i in range(0, len(images), BATCH))
    results = {f"eval/{k}": v for k, v in evaluator.score(batches).items()}
    report = {
        "fake": str(fake),
        "real": args["real"],
        "metrics": results,
        "setup": evaluator.setup(),
    }
    out = Path(args["out"]).expanduser() if args["out"] else fake.with_suffix(".metrics.json")
    print_and_write(report, out)


def run_checkpoints(run: Path) -> list[Path]:
    """Every step checkpoint of a run folder, and best.pt, oldest first: one per step."""
    from ganexp.engine.checkpoint import BEST, checkpoint_folder, load_checkpoint

    store = checkpoint_folder(run)
    paths = list(reversed(store.steps())) if store is not None else []
    best = store.folder / BEST if store is not None else None
    if best is not None and best.is_file():
        steps = {int(p.stem[5:]) for p in paths}
        if load_checkpoint(best, "checkpoint")["step"] not in steps:
            paths.append(best)
    return paths


def evaluated_runs(target: Path) -> list[Path]:
    """The runs ``all=true`` evaluates: ``target`` if it is a run folder, else the runs of the
    sweep folder it is (each job's, or each replica's)."""
    from ganexp.engine.checkpoint import checkpoint_folder
    from ganexp.session.sweep import collect_jobs

    if not target.is_dir():
        raise ConfigError("checkpoint", str(target), "all=true needs a run or sweep folder")
    if checkpoint_folder(target) is not None:
        return [target]
    runs = [job.path for job in collect_jobs(target) if checkpoint_folder(job.path) is not None]
    if not runs:
        raise ConfigError(
            "checkpoint", str(target), "all=true needs a run folder with checkpoints, or a sweep's"
        )
    return runs


def evaluate_all(target: Path, overrides: list[str], out: str) -> None:
    """``all=true``: every checkpoint of a run (or of each run of a sweep) evaluated, without
    training: one JSON row per checkpoint on stdout, then ``eval_all.csv`` and ``eval_all.png``
    (the headline against step, a line per run) in the folder (or ``out=DIR``)."""
    from ganexp.session.run import build_evaluator

    runs = evaluated_runs(target)
    rows, headline = [], None
    for run in runs:
        evaluator = None
        for path in run_checkpoints(run):
            restored = restore(path, overrides)
            if evaluator is None:  # one per run: its real side is computed (or read) once
                cfg = replace(restored.cfg, metrics=replace(restored.cfg.metrics, enabled=True))
                spec = evaluation_spec(cfg, restored.spec)
                evaluator = build_evaluator(cfg, spec, restored.device, classifiers(restored))
                if evaluator is None:
                    raise ConfigError("checkpoint", str(path), "nothing to evaluate for this data")
                headline = headline or evaluator.setup()["headline"]
            metrics = {f"eval/{k}": v for k, v in evaluator(restored.generator).items()}
            row = {"checkpoint": path.name, "step": restored.state["step"], **metrics}
            if run != target:
                row = {"run": run.relative_to(target).as_posix(), **row}
            print(json.dumps(row), flush=True)
            rows.append(row)
    rows.sort(key=lambda row: (row.get("run", ""), row["step"]))
    write_curve_files(rows, headline, Path(out).expanduser() if out else target)


def write_curve_files(rows: list[dict], headline: str, folder: Path) -> None:
    """``eval_all.csv`` (a row per checkpoint) and ``eval_all.png`` (``headline`` by step, a
    line per run)."""
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
    fig, ax = pyplot().subplots(figsize=(9, 5), dpi=100)
    runs = list(dict.fromkeys(row.get("run") for row in rows))
    for run in runs:
        mine = [row for row in rows if row.get("run") == run]
        ax.plot([r["step"] for r in mine], [r.get(headline) for r in mine], "o-", label=run)
    better = "higher" if maximize(headline) else "lower"
    ax.set_title(f"{headline} of every checkpoint ({better} is better)", fontsize=12)
    ax.set_xlabel("generator step", fontsize=11)
    ax.set_ylabel(headline, fontsize=11)
    ax.grid(alpha=0.3)
    if runs != [None]:
        ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="run")
    save_figure(fig, folder / "eval_all.png")
    written = f"{folder / 'eval_all.csv'} and {folder / 'eval_all.png'}"
    print(f"ganexp-eval: wrote {written}", file=sys.stderr)


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
