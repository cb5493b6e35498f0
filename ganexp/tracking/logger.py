"""Where a run's numbers and pictures go: W&B, ``metrics.jsonl`` and ``samples/``.

``metrics.jsonl`` holds one JSON object per logged step with exactly the scalars sent to W&B, so a
run can be read without W&B. W&B failing (a full disk included) never stops training: one warning,
and the files go on. The files are written with the checkpoint's guarantees: a sample grid whole
or not at all (:func:`ganexp.engine.runfolder.write_whole`), a row of ``metrics.jsonl`` in one
write,
cut back off the file if the write fails, so no partial line is left; a failed write stops the
run with one line, "could not write PATH (reason)".

Resuming. A resumed run cuts ``metrics.jsonl`` back to its checkpoint's step (the steps after it
are logged again), so each (step, key) is in it once. Every W&B row carries our own ``step`` key,
the x-axis of every chart (``define_metric``), rather than W&B's ``step=``: online, W&B drops rows
whose ``step=`` is below its current step, which the re-logged steps would be. Offline, W&B cannot
continue a run file: the resumed process writes a new ``offline-run-*`` folder with the same run
id, and a killed process's file loses its unflushed tail (often everything). So an offline resume
first replays the history up to the checkpoint (``metrics.jsonl`` and the sample grids) into the
new file and renames the earlier folders of the run to ``superseded-offline-run-*``: the one
``offline-run-*`` folder left holds the whole run, for ``wandb sync``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import netrc
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

import torch
from PIL import Image

from ganexp.config import CheckpointUpload, LoggerConfig, LoggerMode
from ganexp.data.images import to_uint8
from ganexp.engine.runfolder import write_whole, writing
from ganexp.keys import maximize

log = logging.getLogger(__name__)

STEP_KEY = "step"  # the x-axis of every W&B chart
REAL_GRID = "real.png"  # samples/: real training images, once per run folder
# summaries W&B keeps per metric family (define_metric); each eval/ key is defined on its own
# the first time it is logged, with the best of its direction (ganexp.keys.maximize)
_SUMMARIES = {
    "loss/*": "last,min",
    "d/*": "last",
    "wasserstein": "last,mean",
    "grad_norm/*": "last,max",
    "perf/*": "mean",
    "lr/*": "last",
}


def has_wandb_credentials() -> bool:
    """An API key in the environment, or a netrc entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(mode: LoggerMode | str) -> str:
    """``auto`` becomes online with credentials, else offline."""
    mode = LoggerMode(mode)
    if mode != LoggerMode.auto:
        return mode.value
    return "online" if has_wandb_credentials() else "offline"


def to_uint8_grid(images: torch.Tensor, nrow: int) -> torch.Tensor:
    """A (H, W, C) uint8 grid of images in [-1, 1] (clamped, then rounded, never wrapped)."""
    from torchvision.utils import make_grid

    grid = make_grid(images.detach().float().cpu(), nrow=nrow, padding=2, pad_value=-1.0)
    return to_uint8(grid).permute(1, 2, 0)


def save_points_plot(
    points: torch.Tensor, centers: torch.Tensor | None, path: Path | BinaryIO
) -> None:
    """A scatter of generated 2-D points over the mixture's mode centers, as a PNG (a file
    object gets one too); 1-D points (the Dirac-GAN's) on the horizontal axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    pts = points.detach().float().cpu()
    if pts.shape[1] == 1:  # on a line: y = 0
        pts = torch.cat([pts, torch.zeros_like(pts)], dim=1)
        centers = None if centers is None else torch.cat([centers, torch.zeros_like(centers)], 1)
    ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5, label="generated")
    if centers is not None:
        ax.scatter(centers[:, 0], centers[:, 1], s=30, marker="x", c="red", label="modes")
        lim = float(centers.abs().max()) * 1.5 + 0.5
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim))
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


class Tracker:
    """Logs scalars and images of one run to metrics.jsonl, samples/ and (if enabled) W&B."""

    def __init__(
        self,
        run_dir: Path,
        cfg: LoggerConfig,
        config: Mapping[str, Any],
        *,
        name: str,
        group: str | None,
        tags: list[str],
        job_type: str = "train",
        resume_id: str | None = None,
        resume_step: int | None = None,
        resumed_dir: Path | None = None,
    ) -> None:
        """``resume_step``: the step of the checkpoint this run continues, from the run folder
        ``resumed_dir`` (by default this one), whose history up to that step it keeps."""
        self.run_dir = run_dir
        self.samples_dir = run_dir / "samples"
        with writing(self.samples_dir):
            self.samples_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = run_dir / "metrics.jsonl"
        self.resume_step = resume_step
        if resume_step is not None:
            source = (resumed_dir or run_dir) / "metrics.jsonl"
            keep_history_until(source, resume_step, self.metrics_path)
        self.history_samples = (resumed_dir or run_dir) / "samples"
        with writing(self.metrics_path):
            # unbuffered: each row is one write, which append_line can take back
            self._jsonl = open(self.metrics_path, "ab", buffering=0)  # noqa: SIM115
        self.run = None
        self._defined: set[str] = set()  # eval/ keys given a define_metric
        self.mode = "disabled" if cfg.name == "none" else resolve_mode(cfg.mode)
        upload = CheckpointUpload(cfg.log_checkpoints)
        self.upload_checkpoints = upload == CheckpointUpload.always or (
            upload == CheckpointUpload.auto and self.mode == "online"
        )
        if self.mode != "disabled":
            self._start_wandb(cfg, config, name, group, tags, job_type, resume_id)

    def _start_wandb(
        self,
        cfg: LoggerConfig,
        config: Mapping[str, Any],
        name: str,
        group: str | None,
        tags: list[str],
        job_type: str,
        resume_id: str | None,
    ) -> None:
        import wandb

        if self.mode == "offline" and LoggerMode(cfg.mode) == LoggerMode.auto:
            print("W&B: no credentials found, logging offline", file=sys.stderr)
        try:
            self.run = wandb.init(
                project=cfg.project,
                entity=cfg.entity,
                group=group,
                job_type=job_type,
                name=name,
                tags=sorted(set(tags))[:64],
                config=dict(config),
                dir=str(self.run_dir),
                mode=self.mode,
                id=resume_id,
                resume="allow" if resume_id else None,
                # several at once: replicas (trainer.replicas) each log a run of their own;
                # wandb.watch's hooks use wandb.run, which only finish_previous sets
                reinit="finish_previous" if cfg.watch else "create_new",
                settings=wandb.Settings(console="off", silent=True),
            )
            self.run.define_metric(STEP_KEY)
            for pattern, summary in _SUMMARIES.items():
                self.run.define_metric(pattern, step_metric=STEP_KEY, summary=summary)
            for pattern in ("hist/*", "samples", "samples_real", "samples_table"):
                self.run.define_metric(pattern, step_metric=STEP_KEY)
            # offline, a resumed run writes a new file; a fork (a new id) is a new run
            if self.resume_step is not None and (self.mode == "offline" or resume_id is None):
                self._replay_history()
        except Exception as ex:  # W&B must never stop training
            print(
                f"W&B: could not start a run ({ex}); logging to metrics.jsonl only", file=sys.stderr
            )
            self.run = None

    def _replay_history(self) -> None:
        """An offline resume or a fork: the history up to the checkpoint into this W&B run, and
        the run's earlier offline folders set aside (see the module's docstring)."""
        current = Path(self.run.dir).parent
        for folder in current.parent.glob(f"offline-run-*-{self.run.id}"):
            if folder != current:
                folder.rename(folder.with_name(f"superseded-{folder.name}"))
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            step = row.pop("step")
            self._define_eval_keys(row)
            self._wandb_log(step, lambda row=row: row)
        for path in sorted(self.history_samples.glob("step_*.png")):
            step = int(path.stem.removeprefix("step_"))
            if step <= self.resume_step:
                self._log_image_file(path, step)

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    @property
    def wandb_on(self) -> bool:
        """Whether a W&B run is recording (work made only for W&B can be skipped otherwise)."""
        return self.run is not None

    @property
    def url(self) -> str | None:
        """The run's page (online runs), else None."""
        return self.run.url if self.run is not None and self.mode == "online" else None

    def watch(self, networks: list[torch.nn.Module], every: int) -> None:
        """Histograms of both networks' gradients every ``every`` backward passes (W&B's own
        hooks; each costs a host copy of every gradient, hence off by default)."""
        if self.run is not None:
            self.run.watch(networks, log="gradients", log_freq=every)

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        """One line of metrics.jsonl and the same scalars to W&B."""
        row = json.dumps({"step": step, **scalars}) + "\n"
        with writing(self.metrics_path):
            append_line(self._jsonl, row.encode())
        self._define_eval_keys(scalars)
        self._wandb_log(step, lambda: dict(scalars))

    def _define_eval_keys(self, scalars: Mapping[str, float]) -> None:
        """Each eval/ key's chart on ``step`` and its summary in the runs table: its last
        value and its best, the max where higher is better, else the min."""
        new = [key for key in scalars if key.startswith("eval/") and key not in self._defined]
        if self.run is None or not new:
            return
        try:
            for key in new:
                summary = "last,max" if maximize(key) else "last,min"
                self.run.define_metric(key, step_metric=STEP_KEY, summary=summary)
                self._defined.add(key)
        except Exception as ex:
            print(f"W&B: could not define {new[0]} ({ex!r})", file=sys.stderr)

    def summarize(self, values: Mapping[str, Any]) -> None:
        """Set keys of the W&B run's summary (the runs table's columns), e.g. the best
        headline value and its step."""
        if self.run is None:
            return
        try:
            self.run.summary.update(dict(values))
        except Exception as ex:
            print(f"W&B: could not update the summary ({ex!r})", file=sys.stderr)

    def log_images(self, step: int, images: torch.Tensor, nrow: int) -> Path:
        """A grid of images in [-1, 1] to samples/step_NNNNNN.png and to W&B as ``samples``."""
        path = self.samples_dir / f"step_{step:06d}.png"
        image = Image.fromarray(to_uint8_grid(images, nrow).squeeze(-1).numpy())
        write_whole(path, lambda f: image.save(f, format="PNG"))
        self._log_image_file(path, step)
        return path

    def has_real_grid(self) -> bool:
        return (self.samples_dir / REAL_GRID).is_file()

    def log_real_grid(self, step: int, images: torch.Tensor, nrow: int) -> None:
        """Real training images in [-1, 1] as samples/real.png and to W&B as ``samples_real``,
        once: the reference the fake grids are looked at against."""
        path = self.samples_dir / REAL_GRID
        image = Image.fromarray(to_uint8_grid(images, nrow).squeeze(-1).numpy())
        write_whole(path, lambda f: image.save(f, format="PNG"))
        if self.run is not None:
            import wandb

            real = wandb.Image(str(path), caption="real training images")
            self._wandb_log(step, lambda: {"samples_real": real})

    def log_points(self, step: int, points: torch.Tensor, centers: torch.Tensor | None) -> Path:
        """A scatter of 2-D samples to samples/step_NNNNNN.png and to W&B as ``samples``."""
        path = self.samples_dir / f"step_{step:06d}.png"
        write_whole(path, lambda f: save_points_plot(points, centers, f))
        self._log_image_file(path, step)
        return path

    def _log_image_file(self, path: Path, step: int) -> None:
        if self.run is None:
            return
        import wandb

        self._wandb_log(step, lambda: {"samples": wandb.Image(str(path), caption=f"step {step}")})

    def log_histograms(self, step: int, values: Mapping[str, torch.Tensor]) -> None:
        """Tensors as W&B histograms (W&B only: metrics.jsonl holds scalars)."""
        if self.run is None:
            return
        import wandb

        # in float64: numpy cannot bin float32 values a few ulps apart (a D whose outputs
        # barely differ, e.g. right after initialization) into 64 finite-sized bins
        data = {k: wandb.Histogram(v.detach().double().cpu().numpy()) for k, v in values.items()}
        self._wandb_log(step, lambda: data)

    def log_sample_table(
        self, step: int, images: torch.Tensor, labels: torch.Tensor | None, names: tuple[str, ...]
    ) -> None:
        """A W&B table of samples, one row each, with its class for a cGAN (W&B only)."""
        if self.run is None:
            return
        import wandb

        def table() -> dict[str, Any]:
            rows = wandb.Table(columns=["step", "class", "sample"])
            pixels = to_uint8(images.float()).cpu().permute(0, 2, 3, 1)  # (N, H, W, C)
            for i, image in enumerate(pixels):
                label = None if labels is None else int(labels[i])
                name = names[label] if label is not None and label < len(names) else label
                rows.add_data(step, name, wandb.Image(image.squeeze(-1).numpy()))
            return {"samples_table": rows}

        self._wandb_log(step, table)

    def log_checkpoint(self, path: Path, step: int, aliases: list[str]) -> None:
        """A checkpoint as a version of the run's ``model-<id>`` artifact (online runs, or
        logger.log_checkpoints=always); an offline run's checkpoints/ folder is the record."""
        if self.run is None or not self.upload_checkpoints:
            return
        import wandb

        try:
            artifact = wandb.Artifact(f"model-{self.run.id}", type="model", metadata={"step": step})
            artifact.add_file(str(path), name=path.name)
            self.run.log_artifact(artifact, aliases=[*aliases, f"step-{step}"])
        except Exception as ex:
            print(f"W&B: could not log checkpoint {path.name} ({ex!r})", file=sys.stderr)

    def _wandb_log(self, step: int, data: Callable[[], dict[str, Any]]) -> None:
        """Log what ``data()`` makes (W&B media are built inside the guard: making one writes
        files, which a full disk refuses)."""
        if self.run is None:
            return
        try:
            self.run.log({STEP_KEY: step, **data()})
        except Exception as ex:
            print(f"W&B: logging failed ({ex!r}); continuing with metrics.jsonl", file=sys.stderr)
            self._abandon_wandb()

    def _abandon_wandb(self) -> None:
        """Drop a broken W&B run; tearing its service down now keeps exit free of tracebacks."""
        import wandb

        self.run = None
        with contextlib.suppress(Exception):
            wandb.teardown()

    def update_config(self, values: dict[str, Any]) -> None:
        """Add ``values`` to the W&B run's config (e.g. how evaluation is done)."""
        if self.run is not None:
            try:
                self.run.config.update(values, allow_val_change=True)
            except Exception as ex:
                print(f"W&B: could not update the config ({ex!r})", file=sys.stderr)

    def mark_preempting(self) -> None:
        """Tell W&B the run stopped early on purpose and will be resumed."""
        if self.run is not None:
            try:
                self.run.mark_preempting()
            except Exception as ex:
                print(f"W&B: could not mark the run preempted ({ex})", file=sys.stderr)

    def finish(self, exit_code: int = 0) -> str:
        """Close the files and the W&B run; return one line saying how to see the W&B run."""
        self._jsonl.close()
        if self.run is None:
            return "off" if self.mode == "disabled" else "failed; see metrics.jsonl"
        offline_dir = Path(self.run.dir).parent if self.mode == "offline" else None
        where = self.url
        try:
            self.run.finish(exit_code=exit_code)
        except Exception as ex:
            print(f"W&B: finishing the run failed ({ex!r})", file=sys.stderr)
            self._abandon_wandb()
            return "failed; see metrics.jsonl"
        self.run = None
        if offline_dir is not None:
            return f"offline; upload with: wandb sync {offline_dir}"
        return f"online: {where}"


def keep_history_until(source: Path, step: int, target: Path) -> None:
    """``target`` becomes the lines of ``source`` (a ``metrics.jsonl``) up to ``step``: those
    after it are logged again by the resumed run, and a last line cut short by a kill is
    dropped. Written atomically; nothing happens when ``source`` does not exist."""
    if not source.is_file():
        return
    kept = []
    for line in source.read_text(encoding="utf-8").splitlines():
        try:
            logged = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            continue
        if logged <= step:
            kept.append(line + "\n")
    write_whole(target, lambda f: f.write("".join(kept).encode()))


def append_line(file: io.RawIOBase, line: bytes) -> None:
    """``line`` at the end of ``file`` (unbuffered, opened to append) in one write; if the
    write fails, the file is cut back to where it ended, so no partial line is left."""
    end = file.seek(0, os.SEEK_END)
    try:
        rest = memoryview(line)
        while rest:  # a short write is followed by one that says why (ENOSPC)
            rest = rest[file.write(rest) :]
    except BaseException:
        with contextlib.suppress(OSError):
            file.truncate(end)
        raise


class NullTracker:
    """The tracker of every process but rank 0 in a multi-process run: it records nothing."""

    run_id = None
    url = None
    wandb_on = False

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        """Rank 0 logs the values, which are averaged over the processes."""

    def has_real_grid(self) -> bool:
        return True  # rank 0 draws the grids

    def summarize(self, values: Mapping[str, Any]) -> None:
        """Rank 0 keeps the run's summary."""

    def update_config(self, values: dict[str, Any]) -> None:
        """Rank 0 keeps the run's config."""

    def mark_preempting(self) -> None:
        """Rank 0 marks the W&B run."""

    def watch(self, networks: list[torch.nn.Module], every: int) -> None:
        """Rank 0 watches the gradients (averaged over the processes by DDP)."""

    def finish(self, exit_code: int = 0) -> str:
        """Rank 0 finishes the W&B run."""
        return "kept by rank 0"
