"""Where a run's numbers and pictures go: W&B, ``metrics.jsonl`` and ``samples/``.

``metrics.jsonl`` holds one JSON object per logged step with exactly the scalars sent to W&B, so a
run can be read without W&B. W&B failing never stops training: one warning, and the files go on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import netrc
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from PIL import Image

from ganexp.config import LoggerConfig, LoggerMode

log = logging.getLogger(__name__)

# summaries W&B keeps per metric family (define_metric); lower is better for eval distances
_SUMMARIES = {
    "loss/*": "last,min",
    "d/*": "last",
    "wasserstein": "last,mean",
    "grad_norm/*": "last,max",
    "perf/*": "mean",
    "eval/*": "last,min",
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
    """A (H, W, C) uint8 grid of images in [-1, 1]: clamped, then rounded, never wrapped."""
    from torchvision.utils import make_grid

    grid = make_grid(images.detach().float().cpu(), nrow=nrow, padding=2, pad_value=-1.0)
    return ((grid.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0)


def save_points_plot(points: torch.Tensor, centers: torch.Tensor | None, path: Path) -> None:
    """A scatter of generated 2-D points over the mixture's mode centers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    pts = points.detach().float().cpu()
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
    ) -> None:
        self.run_dir = run_dir
        self.samples_dir = run_dir / "samples"
        self.samples_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self.run = None
        self.mode = "disabled" if cfg.name == "none" else resolve_mode(cfg.mode)
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
                reinit="create_new",
                settings=wandb.Settings(console="off", silent=True),
            )
            for pattern, summary in _SUMMARIES.items():
                self.run.define_metric(pattern, summary=summary)
        except Exception as ex:  # W&B must never stop training
            print(
                f"W&B: could not start a run ({ex}); logging to metrics.jsonl only", file=sys.stderr
            )
            self.run = None

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        """One line of metrics.jsonl and the same scalars to W&B."""
        self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        self._jsonl.flush()
        self._wandb_log(dict(scalars), step)

    def log_images(self, step: int, images: torch.Tensor, nrow: int) -> Path:
        """A grid of images in [-1, 1] to samples/step_NNNNNN.png and to W&B as ``samples``."""
        path = self.samples_dir / f"step_{step:06d}.png"
        Image.fromarray(to_uint8_grid(images, nrow).squeeze(-1).numpy()).save(path)
        self._log_image_file(path, step)
        return path

    def log_points(self, step: int, points: torch.Tensor, centers: torch.Tensor | None) -> Path:
        """A scatter of 2-D samples to samples/step_NNNNNN.png and to W&B as ``samples``."""
        path = self.samples_dir / f"step_{step:06d}.png"
        save_points_plot(points, centers, path)
        self._log_image_file(path, step)
        return path

    def _log_image_file(self, path: Path, step: int) -> None:
        if self.run is None:
            return
        import wandb

        self._wandb_log({"samples": wandb.Image(str(path), caption=f"step {step}")}, step)

    def _wandb_log(self, data: dict[str, Any], step: int) -> None:
        if self.run is None:
            return
        try:
            self.run.log(data, step=step)
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

    def finish(self, exit_code: int = 0) -> None:
        """Close the files and the W&B run; for offline runs, say how to upload them."""
        self._jsonl.close()
        if self.run is None:
            return
        offline_dir = Path(self.run.dir).parent if self.mode == "offline" else None
        try:
            self.run.finish(exit_code=exit_code)
        except Exception as ex:
            print(f"W&B: finishing the run failed ({ex!r})", file=sys.stderr)
            self._abandon_wandb()
            return
        self.run = None
        if offline_dir is not None:
            print(
                f"W&B: offline run saved; upload it with: wandb sync {offline_dir}", file=sys.stderr
            )


class NullTracker:
    """The tracker of every process but rank 0 in a multi-process run: it records nothing."""

    run_id = None

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        """Rank 0 logs the values, which are averaged over the processes."""

    def update_config(self, values: dict[str, Any]) -> None:
        """Rank 0 keeps the run's config."""

    def mark_preempting(self) -> None:
        """Rank 0 marks the W&B run."""

    def finish(self, exit_code: int = 0) -> None:
        """Rank 0 finishes the W&B run."""
