"""One run, from a validated config to a finished W&B run: builds everything, trains, cleans up."""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganexp.build import build_discriminator, build_generator, build_optimizer
from ganexp.checkpoint import CheckpointStore, load_resume, resume_source, set_rng_state
from ganexp.config import LossName, Norm, RunConfig
from ganexp.data import BatchSource, build_data, data_spec, mode_centers
from ganexp.device import describe, resolve_device
from ganexp.errors import Interrupted
from ganexp.hooks import (
    CheckFinite,
    Checkpoint,
    Evaluate,
    FixedInputs,
    LogScalars,
    SampleGrid,
    generate,
)
from ganexp.losses import build_loss
from ganexp.metrics.toy import mode_stats
from ganexp.tracking import Tracker
from ganexp.train import ProgressBar, Trainer

BN_CRITIC_TAG = "bn-critic-gp"


def warnings_for(cfg: RunConfig) -> dict[str, str]:
    """Legitimate but unsound combinations: W&B tag -> one-line warning."""
    found = {}
    if cfg.loss.name == LossName.wgan_gp and cfg.norm.discriminator == Norm.batch:
        found[BN_CRITIC_TAG] = (
            "batch norm in a WGAN-GP critic mixes samples, so the per-sample gradient penalty "
            "is unsound; consider norm.discriminator=layer"
        )
    return found


def run_tags(cfg: RunConfig) -> list[str]:
    """W&B tags naming the axes of the run."""
    tags = [
        f"norm.g={cfg.norm.generator.value}",
        f"norm.d={cfg.norm.discriminator.value}",
        f"loss={cfg.loss.name.value}",
        f"G={cfg.generator.arch.value}",
        f"D={cfg.discriminator.arch.value}",
        f"data={cfg.data.name}",
    ]
    if cfg.conditional:
        tags.append("cgan")
    return tags + list(cfg.logger.tags)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_evaluate(cfg: RunConfig, data: BatchSource) -> Callable[[Trainer], dict[str, float]]:
    """The metrics of the eval hook for this data."""
    if data.spec.kind != "points":
        return lambda trainer: {}
    centers = mode_centers(cfg.data)
    noise = torch.Generator().manual_seed(cfg.seed + 1)

    def evaluate(trainer: Trainer) -> dict[str, float]:
        z = torch.randn(cfg.metrics.num_samples, cfg.trainer.z_dim, generator=noise)
        samples = generate(trainer, z.to(trainer.device), None)
        return mode_stats(samples, centers, cfg.data.std)

    return evaluate


@dataclass
class Session:
    """A run ready to train: the trainer with its hooks, and where its results go."""

    trainer: Trainer
    tracker: Tracker
    evaluate: Evaluate
    resumed_from: Path | None


def configure_determinism(cfg: RunConfig, device: torch.device) -> None:
    """CPU runs are deterministic as they are; on CUDA, device.deterministic trades speed for it."""
    if device.type == "cuda" and cfg.device.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True)


def setup(
    cfg: RunConfig,
    resolved: dict[str, Any],
    run_dir: Path,
    *,
    name: str,
    group: str | None,
    job_type: str = "train",
) -> Session:
    """Build everything a run needs in ``run_dir``, continuing from a checkpoint if there is one."""
    device = resolve_device(cfg.device.name)
    print(f"ganexp: device={cfg.device.name.value} -> {describe(device)}", file=sys.stderr)
    warned = warnings_for(cfg)
    for message in warned.values():
        print(f"ganexp: warning: {message}", file=sys.stderr)
    configure_determinism(cfg, device)

    resumed = load_resume(resume_source(cfg.resume, run_dir))
    seed_everything(cfg.seed)
    spec = data_spec(cfg.data)
    data = build_data(cfg.data, cfg.trainer.batch_size, device, cfg.seed)
    generator = build_generator(cfg, spec).to(device)
    discriminator = build_discriminator(cfg, spec).to(device)
    trainer = Trainer(
        generator=generator,
        discriminator=discriminator,
        opt_g=build_optimizer(cfg.optim, generator.parameters(), cfg.optim.lr_g),
        opt_d=build_optimizer(cfg.optim, discriminator.parameters(), cfg.optim.lr_d),
        loss=build_loss(cfg.loss),
        data=data,
        spec=spec,
        device=device,
        max_steps=cfg.trainer.max_steps,
        batch_size=cfg.trainer.batch_size,
        n_critic=cfg.trainer.n_critic,
        z_dim=cfg.trainer.z_dim,
        conditional=cfg.conditional,
        skip_nonfinite=cfg.trainer.skip_nonfinite,
    )
    plotted = cfg.trainer.num_samples if spec.kind == "image" else 16 * cfg.trainer.num_samples
    fixed = FixedInputs(trainer, plotted)
    state, resumed_from = resumed if resumed else (None, None)
    if state is not None:
        trainer.load_state_dict(state)
        fixed.load_state_dict(state["fixed"], device)
        set_rng_state(state["rng"])
        print(f"ganexp: resuming from {resumed_from} at step {trainer.step}", file=sys.stderr)

    tracker = Tracker(
        run_dir,
        cfg.logger,
        resolved,
        name=name,
        group=group,
        tags=run_tags(cfg) + list(warned),
        job_type=job_type,
        resume_id=state.get("wandb_id") if state else None,
    )
    store = CheckpointStore(run_dir / "checkpoints", keep=cfg.trainer.keep_checkpoints)
    bar = ProgressBar(cfg.trainer.progress_bar)
    centers = mode_centers(cfg.data) if spec.kind == "points" else None
    evaluate = Evaluate(cfg.trainer.eval_every, tracker, make_evaluate(cfg, data))
    intervals = (cfg.trainer.log_every, cfg.trainer.checkpoint_every)
    trainer.hooks = [
        bar,
        LogScalars(cfg.trainer.log_every, tracker, bar),
        SampleGrid(cfg.trainer.sample_every, tracker, fixed, centers),
        evaluate,
        CheckFinite(intervals, every_step=device.type == "cpu", store=store),
        Checkpoint(cfg.trainer.checkpoint_every, store, fixed, tracker, resolved),
    ]
    return Session(trainer, tracker, evaluate, resumed_from)


@contextmanager
def stop_on_signals(trainer: Trainer) -> Iterator[None]:
    """SIGTERM and SIGINT finish the current step, save a checkpoint and stop; a second SIGINT
    interrupts at once."""

    def request_stop(signum: int, frame: object) -> None:
        trainer.stop_signal = signum
        signal.signal(signal.SIGINT, signal.default_int_handler)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def execute(session: Session) -> dict[str, float]:
    """Train to the end; the W&B run is finished whatever happens. Returns the last metrics."""
    trainer, tracker = session.trainer, session.tracker
    exit_code = 1
    try:
        with stop_on_signals(trainer):
            trainer.train()
        exit_code = 0
    except Interrupted:
        tracker.mark_preempting()
        exit_code = 0
        raise
    finally:
        tracker.finish(exit_code)
    if trainer.skipped_steps:
        print(
            f"ganexp: skipped {trainer.skipped_steps} non-finite optimizer steps", file=sys.stderr
        )
    return session.evaluate.latest


def run(
    cfg: RunConfig,
    resolved: dict[str, Any],
    run_dir: Path,
    *,
    name: str,
    group: str | None,
    job_type: str = "train",
) -> dict[str, float]:
    """Train one run in ``run_dir``; returns the last evaluation's metrics."""
    return execute(setup(cfg, resolved, run_dir, name=name, group=group, job_type=job_type))
