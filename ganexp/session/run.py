"""One run, from a validated config to a finished W&B run: builds everything, trains, cleans up."""

from __future__ import annotations

import copy
import dataclasses
import os
import random
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from ganexp.config import DataConfig, LossName, Norm, RunConfig
from ganexp.data import DataSpec, build_data, data_spec, mode_centers
from ganexp.engine.checkpoint import (
    CheckpointStore,
    load_resume,
    resume_source,
    rng_state,
    set_rng_state,
)
from ganexp.engine.device import describe, resolve_device, resolve_precision
from ganexp.engine.distributed import World, current
from ganexp.engine.hooks import (
    CheckFinite,
    Checkpoint,
    Evaluate,
    Evaluator,
    FixedInputs,
    LogScalars,
    Profile,
    SampleGrid,
)
from ganexp.engine.replicas import ReplicaGroup, get_stream, vectorize
from ganexp.engine.trainer import Hook, Precision, ProgressBar, Trainer, generator_ema
from ganexp.errors import ConfigError, Interrupted
from ganexp.keys import maximize
from ganexp.parts.losses import build_loss
from ganexp.parts.terms import loss_terms
from ganexp.session.build import build_discriminator, build_generator, build_optimizer
from ganexp.session.job import note_step
from ganexp.session.plan import Plan
from ganexp.tasks import task_of
from ganexp.tasks.base import Task
from ganexp.tracking.logger import NullTracker, Tracker

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
        f"loss={cfg.loss._target_ or cfg.loss.name.value}",
        f"G={cfg.generator._target_ or cfg.generator.arch.value}",
        f"D={cfg.discriminator._target_ or cfg.discriminator.arch.value}",
        f"data={cfg.data.name}",
    ]
    if cfg.conditional:
        tags.append("cgan")
    tags += task_of(cfg).tags()
    return tags + list(cfg.logger.tags)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_evaluator(
    cfg: RunConfig,
    spec: DataSpec,
    device: torch.device,
    classifiers: tuple[nn.Module, nn.Module] | None = None,
    real_side: Evaluator | None = None,
    critic: nn.Module | None = None,
) -> Evaluator | None:
    """The metrics of the eval hook for this data and task (:meth:`Task.evaluator
    <ganexp.tasks.base.Task.evaluator>`), or None when evaluation is off. ``classifiers``: the
    task's networks whose accuracies join G's metrics (semi-supervised: D and the baseline).
    ``real_side``: another run's image evaluator to share the real side with (replicas).
    ``critic``: D, whose parameter the Dirac-GAN's state includes (None outside training)."""
    if not cfg.metrics.enabled:
        return None
    from ganexp.metrics.evaluator import DiracEvaluator, ImageEvaluator, ToyEvaluator

    if cfg.data.name == "dirac":
        if critic is None:
            allowed = "its eval/ keys are in the run's metrics.jsonl, evaluated during training"
            raise ConfigError("data.name", "dirac", allowed)
        return DiracEvaluator(critic)
    if spec.kind == "points":
        return ToyEvaluator(cfg, device)
    return task_of(cfg).evaluator(
        device, lambda: ImageEvaluator(cfg, spec, device, real_side), classifiers
    )


@dataclass
class RunResult:
    """What a finished run reports: its length, last and best evaluation, and where its W&B
    run can be seen."""

    steps: int
    final: dict[str, float]
    best: dict[str, Any]
    wandb: str = "off"


@dataclass
class Session:
    """A run ready to train: the trainer with its hooks, and where its results go."""

    trainer: Trainer
    tracker: Tracker | NullTracker
    evaluate: Evaluate | None
    resumed_from: Path | None


def configure_backends(cfg: RunConfig, device: torch.device) -> None:
    """CUDA: TF32 matmuls and cudnn autotuning, or with device.deterministic the same results
    run to run instead (slower). CPU runs are deterministic as they are."""
    if device.type != "cuda":
        return
    deterministic = cfg.device.deterministic
    torch.backends.cuda.matmul.allow_tf32 = not deterministic
    torch.backends.cudnn.allow_tf32 = not deterministic
    torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)


def use_channels_last(cfg: RunConfig, device: torch.device, spec: DataSpec) -> bool:
    """device.channels_last, or (null) on for images on the CPU and CUDA."""
    if cfg.device.channels_last is not None:
        return cfg.device.channels_last
    return spec.kind == "image" and device.type in ("cpu", "cuda")


def compile_networks(networks: list[nn.Module], probe: Callable[[], None]) -> None:
    """torch.compile each network in place (state_dict keys unchanged); if compiling fails on
    ``probe`` (one training step), say so in one line and go on uncompiled."""
    for net in networks:
        net.compile()
    try:
        probe()
    except Exception as ex:
        first = str(ex).strip().splitlines()[0] if str(ex).strip() else type(ex).__name__
        print(
            f"ganexp: warning: torch.compile failed ({first}); running uncompiled", file=sys.stderr
        )
        for net in networks:
            net._compiled_call_impl = None  # nn.Module.compile's own switch


def _say(world: World, message: str) -> None:
    """A line on stderr, from rank 0 only when there are several processes."""
    if world.is_main:
        print(message, file=sys.stderr)


def _own_state(state: dict[str, Any], world: World) -> dict[str, Any]:
    """This process's random and data states in a checkpoint. One written by another number of
    processes continues the shared data order, but not the other processes' random streams."""
    ranks = state.get("ranks") or []
    if len(ranks) == world.size:
        return ranks[world.rank]
    if world.distributed or ranks:
        _say(
            world,
            f"ganexp: note: the checkpoint comes from {max(len(ranks), 1)} process(es), this run "
            f"has {world.size}; random draws do not continue exactly",
        )
    if world.is_main or not ranks:
        return {"rng": state["rng"], "data": state["data"]}
    return {"rng": None, "data": state["data"]}


def _optimizer_like_d(cfg: RunConfig, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """An optimizer with D's settings, for a task's own networks (the semi-supervised
    baseline)."""
    return build_optimizer(cfg.optim, params, cfg.optim.lr_d)


def _load_resumed(
    state: dict[str, Any], path: Path, trainer: Trainer, fixed: FixedInputs, world: World
) -> dict[str, Any]:
    """Put the checkpoint's state into the trainer and the fixed inputs; returns this process's
    random and data states. A checkpoint whose entries have the right types but not the right
    contents (an optimizer of other parameters, a data position of another sampler) is one
    ConfigError line, not a traceback."""
    try:
        trainer.load_state_dict(state)
        own = _own_state(state, world)
        trainer.data.load_state_dict(own["data"])
        fixed.load_state_dict(state["fixed"], trainer.device)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as ex:
        first = str(ex).strip().splitlines()[0] if str(ex).strip() else ""
        reason = f"{type(ex).__name__}: {first}" if first else type(ex).__name__
        raise ConfigError("resume", str(path), f"malformed checkpoint ({reason})") from None
    return own


def build_trainer(cfg: RunConfig, task: Task, device: torch.device, world: World) -> Trainer:
    """The run's data, networks, optimizers, loss and terms, seeded, on ``device``."""
    seed_everything(cfg.seed)
    spec = data_spec(cfg.data)
    data = build_data(cfg.data, cfg.trainer.batch_size, device, cfg.seed, world)
    channels_last = use_channels_last(cfg, device, spec)
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    sync_bn = world.distributed and cfg.norm.sync_batchnorm
    generator = world.prepare(build_generator(cfg, spec), sync_bn)
    generator = generator.to(device, memory_format=memory_format)
    discriminator = world.prepare(build_discriminator(cfg, spec), sync_bn)
    discriminator = discriminator.to(device, memory_format=memory_format)
    if world.distributed:  # same initial weights everywhere, then each its own noise
        seed_everything(cfg.seed + world.rank)
    loss = build_loss(cfg.loss)
    return Trainer(
        generator=generator,
        discriminator=discriminator,
        opt_g=build_optimizer(cfg.optim, generator.parameters(), cfg.optim.lr_g),
        opt_d=build_optimizer(cfg.optim, discriminator.parameters(), cfg.optim.lr_d),
        loss=loss,
        data=data,
        spec=spec,
        device=device,
        max_steps=cfg.trainer.max_steps,
        batch_size=cfg.trainer.batch_size,
        n_critic=cfg.trainer.n_critic,
        z_dim=cfg.trainer.z_dim,
        conditional=task.conditional,  # a cGAN's labels, or translation's input image
        precision=Precision(device, resolve_precision(cfg.device.precision, device)),
        channels_last=channels_last,
        skip_nonfinite=cfg.trainer.skip_nonfinite,
        simultaneous=cfg.trainer.simultaneous,
        instance_noise=cfg.loss.instance_noise,
        consensus=cfg.loss.consensus_weight,
        unrolled_steps=cfg.loss.unrolled_steps,
        ema=generator_ema(generator, cfg.trainer.ema_decay) if cfg.trainer.ema_decay else None,
        terms=loss_terms(cfg.loss, loss, generator, discriminator)
        + task.terms(discriminator, device, world, partial(_optimizer_like_d, cfg)),
        world=world,
    )


def build_hooks(
    cfg: RunConfig,
    resolved: dict[str, Any],
    run_dir: Path,
    trainer: Trainer,
    task: Task,
    tracker: Tracker | NullTracker,
    fixed: FixedInputs,
    real_side: Evaluator | None,
) -> tuple[list[Hook], Evaluate | None]:
    """The run's hooks in their order, and its evaluation hook (None: evaluation is off).
    Rank 0 alone draws samples and evaluates; the other hooks run in every process."""
    world, device, spec = trainer.world, trainer.device, trainer.spec
    store = CheckpointStore(run_dir / "checkpoints", keep=cfg.trainer.keep_checkpoints)
    bar = ProgressBar(cfg.trainer.progress_bar and world.is_main)
    centers = mode_centers(cfg.data) if spec.kind == "points" else None
    checkpoint = Checkpoint(cfg.trainer.checkpoint_every, store, fixed, tracker, resolved)
    classifiers = task.classifiers(trainer.discriminator, trainer.terms)
    evaluator = None
    if world.is_main:
        evaluator = build_evaluator(
            cfg, spec, device, classifiers, real_side, critic=trainer.discriminator
        )
    evaluate = None
    if evaluator is not None:
        setup_record = evaluator.setup()
        print(
            f"ganexp: evaluation: {setup_record.get('features_reason', 'toy mode statistics')}",
            file=sys.stderr,
        )
        tracker.update_config({"eval": setup_record})
        every = cfg.trainer.eval_every
        evaluate = Evaluate(
            every, tracker, evaluator, checkpoint, fixed, spec.class_names, setup_record
        )
    intervals = (cfg.trainer.log_every, cfg.trainer.checkpoint_every)
    # rank 0 alone draws samples and evaluates; the other hooks run in every process
    real = None
    if spec.kind == "image" and not task.translates:  # a translation's grids show its targets
        real = partial(real_images, cfg.data)
    grid = SampleGrid(cfg.trainer.sample_every, tracker, fixed, centers, real)
    grids = [grid] if world.is_main else []
    profile = [Profile(run_dir / "profile")] if cfg.trainer.profile and world.is_main else []
    hooks = [
        *profile,
        bar,
        LogScalars(cfg.trainer.log_every, tracker, bar),
        *grids,
        CheckFinite(intervals, every_step=device.type == "cpu", store=store),
        *([evaluate] if evaluate else []),
        checkpoint,
    ]
    return hooks, evaluate


def real_images(data: DataConfig, n: int) -> torch.Tensor:
    """``n`` real training images in [-1, 1] (a grid's reference), drawn by a sampler of their
    own; every random stream of the run is as it was before (the numerics do not move)."""
    from ganexp.metrics.evaluator import REFERENCE_SEED  # its distances import at first use

    state = rng_state()
    try:
        return build_data(data, n, torch.device("cpu"), REFERENCE_SEED).next_batch()[0]
    finally:
        set_rng_state(state)


def forked(checkpoint: Path | None, run_dir: Path) -> bool:
    """Whether a run continues a checkpoint of another folder (a fork) rather than its own."""
    if checkpoint is None:
        return False
    return checkpoint.resolve().parent.parent != run_dir.resolve()


def setup(
    cfg: RunConfig,
    resolved: dict[str, Any],
    run_dir: Path,
    *,
    name: str,
    group: str | None,
    job_type: str = "train",
    real_side: Evaluator | None = None,
    resumed: tuple[dict[str, Any], Path] | Literal["read"] | None = "read",
) -> Session:
    """Build everything a run needs in ``run_dir``, continuing from a checkpoint if there is one.
    ``real_side``: an evaluator whose real side this run's shares (:func:`build_evaluator`).
    ``resumed``: the checkpoint its plan read ((state, path), or None: none), or "read" it here.

    With several processes (torchrun) each builds the same networks, trains through DDP on its
    part of every batch, and only rank 0 writes files, samples, evaluations and the W&B run.
    """
    world = current()
    device = world.device(resolve_device(cfg.device.name))
    where = f" x {world.size} processes" if world.distributed else ""
    _say(world, f"ganexp: device={cfg.device.name.value} -> {describe(device)}{where}")
    warned = warnings_for(cfg)
    for message in warned.values():
        _say(world, f"ganexp: warning: {message}")
    configure_backends(cfg, device)

    task = task_of(cfg)
    if resumed == "read":
        resumed = load_resume(resume_source(cfg.resume, run_dir))
    trainer = build_trainer(cfg, task, device, world)
    spec, generator, discriminator = trainer.spec, trainer.generator, trainer.discriminator
    if world.distributed:
        trainer.distribute(world.parallel)
    plotted = cfg.trainer.num_samples if spec.kind == "image" else 16 * cfg.trainer.num_samples
    fixed = FixedInputs(trainer, plotted, task)
    state, resumed_from = resumed if resumed else (None, None)
    own = None
    if state is not None:
        own = _load_resumed(state, resumed_from, trainer, fixed, world)
        _say(world, f"ganexp: resuming from {resumed_from} at step {trainer.step}")

    tracker = NullTracker()
    if world.is_main:
        tracker = Tracker(
            run_dir,
            cfg.logger,
            resolved,
            name=name,
            group=group,
            tags=run_tags(cfg) + list(warned),
            job_type=job_type,
            # continuing a run in its own folder keeps its W&B run; a fork starts a new one
            resume_id=state.get("wandb_id")
            if state and not forked(resumed_from, run_dir)
            else None,
            resume_step=trainer.step if state else None,
            resumed_dir=resumed_from.parent.parent if resumed_from else None,
        )
    trainer.hooks, evaluate = build_hooks(
        cfg, resolved, run_dir, trainer, task, tracker, fixed, real_side
    )
    if state is not None:
        for hook in trainer.hooks:
            hook.load_state_dict(state)
    if cfg.device.compile:
        compile_networks([generator, discriminator], lambda: _probe_step(trainer))
    if cfg.logger.watch:
        tracker.watch([generator, discriminator], cfg.trainer.log_every)
    if own is not None and own["rng"] is not None:  # last: the evaluator draws from the RNG
        set_rng_state(own["rng"])
    return Session(trainer, tracker, evaluate, resumed_from)


def _probe_step(trainer: Trainer) -> None:
    """One training step that leaves no trace: weights, optimizer and RNG are restored after."""
    saved = copy.deepcopy(trainer.state_dict())
    with torch.random.fork_rng(devices=[trainer.device] if trainer.device.type == "cuda" else []):
        trainer.run_step()
    trainer.load_state_dict(saved)
    trainer.pop_stats()


@contextmanager
def stop_on_signals(trainer: Trainer) -> Iterator[None]:
    """SIGTERM and SIGINT finish the current step, save a checkpoint and stop; a second SIGINT
    interrupts at once. Under submitit, its SIGUSR2 (time limit near) does the same, and the
    entrypoint then hands the signal back to submitit, which requeues the job."""

    def request_stop(signum: int, frame: object) -> None:
        trainer.signal_received = signum
        signal.signal(signal.SIGINT, signal.default_int_handler)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stops = [signal.SIGTERM, signal.SIGINT]
    if callable(signal.getsignal(signal.SIGUSR2)):  # submitit's time-limit requeue (SLURM)
        stops.append(signal.SIGUSR2)
    previous = {sig: signal.signal(sig, request_stop) for sig in stops}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def execute(session: Session) -> RunResult:
    """Train to the end; the W&B run is finished whatever happens. Whatever stops the run
    early carries the last step it completed, for job.json
    (:func:`ganexp.session.job.noted_step`)."""
    try:
        return execute_sessions([session])[0]
    except BaseException as stop:
        note_step(stop, session.trainer.step)
        raise


def execute_sessions(sessions: list[Session]) -> list[RunResult]:
    """Train the sessions: the first one's loop trains them all (one run, or replicas through
    their step strategy); every W&B run is finished whatever happens. Stop signals reach the
    first session's trainer."""
    exit_code = 1
    completed = False
    try:
        with stop_on_signals(sessions[0].trainer):
            sessions[0].trainer.train()
        exit_code = 0
        completed = True
    except Interrupted:
        for session in sessions:
            session.tracker.mark_preempting()
        exit_code = 0
        raise
    finally:
        links = [session.tracker.finish(exit_code) for session in sessions]
        if not completed:  # a completed run says it in its report
            for link in links:
                _say(sessions[0].trainer.world, f"W&B: {link}")
    results = []
    for session, wandb in zip(sessions, links, strict=True):
        trainer, evaluate = session.trainer, session.evaluate
        if trainer.skipped_steps:
            skipped = trainer.skipped_steps
            print(f"ganexp: skipped {skipped} non-finite optimizer steps", file=sys.stderr)
        latest, best = (evaluate.latest, evaluate.best) if evaluate else ({}, {})
        results.append(RunResult(trainer.step, latest, best, wandb))
    return results


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _value(value: float) -> str:
    return f"{value:.4g}"


def report(result: RunResult, run_dir: Path, wall_time_s: float) -> str:
    """The block a finished run ends with: what it made, where, and how good it is."""
    samples = sorted((run_dir / "samples").glob("step_*.png"))
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt"))
    lines = [
        f"ganexp: done: {result.steps} steps in {_duration(wall_time_s)}",
        f"  samples      {run_dir / 'samples'}/"
        + (f" (last: {samples[-1].name})" if samples else " (none)"),
        f"  checkpoints  {run_dir / 'checkpoints'}/ ({', '.join(checkpoints) or 'none'})",
        f"  metrics      {run_dir / 'metrics.jsonl'}",
    ]
    key = result.best.get("key")
    if key:
        final = result.final.get(key)
        floor = result.final.get(f"{key}_floor")
        shown = [
            f"final {_value(final)}" if final is not None else "final n/a",
            f"best {_value(result.best['value'])} at step {result.best['step']}",
        ]
        if floor is not None:  # what real data scores against real data: the reachable end
            bound = "ceiling" if maximize(key) else "floor"
            shown.append(f"{bound} {_value(floor)} (real data, scored as the samples are)")
        lines.append(f"  {key}  " + ", ".join(shown))
    else:
        lines.append("  evaluation   off (metrics.enabled=false)")
    lines.append(f"  W&B          {result.wandb}")
    return "\n".join(lines)


def run(
    plan: Plan, run_dir: Path, *, name: str, group: str | None, job_type: str = "train"
) -> RunResult:
    """Train one run in ``run_dir`` from its checked plan (its checkpoint already read)."""
    return execute(
        setup(
            plan.cfg,
            plan.resolved,
            run_dir,
            name=name,
            group=group,
            job_type=job_type,
            resumed=plan.resumed,
        )
    )


def replica_dir(run_dir: Path, k: int) -> Path:
    return run_dir / f"replica_{k}"


def replica_config(
    cfg: RunConfig, resolved: dict[str, Any], k: int
) -> tuple[RunConfig, dict[str, Any]]:
    """Replica k's config: a separate run's with seed ``seed + k`` (and one replica), so its
    checkpoint, config.yaml and W&B config are those of that run."""
    trainer = dataclasses.replace(cfg.trainer, replicas=1)
    own = dataclasses.replace(cfg, seed=cfg.seed + k, trainer=trainer)
    plain = copy.deepcopy(resolved)
    plain["seed"] = cfg.seed + k
    plain["trainer"]["replicas"] = 1
    return own, plain


def build_replicas(
    cfg: RunConfig, resolved: dict[str, Any], run_dir: Path, *, name: str, group: str | None
) -> tuple[list[Session], ReplicaGroup]:
    """Each replica's session, set up as its separate run would be in ``run_dir/replica_k/``
    (resumed from its own checkpoint if it has one), and the group that trains them."""
    if current().distributed:
        raise ConfigError("trainer.replicas", cfg.trainer.replicas, "is for one process")
    sessions, streams = [], []
    for k in range(cfg.trainer.replicas):
        own, plain = replica_config(cfg, resolved, k)
        folder = replica_dir(run_dir, k)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.yaml").write_text(OmegaConf.to_yaml(plain))
        # replica k evaluates against replica 0's real side (extractor, reference, k-NN radii)
        first = sessions[0].evaluate if sessions else None
        shared = first.evaluate if first is not None else None
        session = setup(own, plain, folder, name=f"{name}/r{k}", group=group, real_side=shared)
        if session.trainer.precision.dtype is not None:
            allowed = "replicas train in fp32: set device.precision=fp32"
            raise ConfigError("device.precision", cfg.device.precision, allowed)
        sessions.append(session)
        streams.append(get_stream())
    trainers = [session.trainer for session in sessions]
    first = trainers[0]
    stacked = vectorize((first.generator, first.discriminator), first.device)
    return sessions, ReplicaGroup(trainers, streams, stacked)


def train_replicas(
    cfg: RunConfig, resolved: dict[str, Any], run_dir: Path, *, name: str, group: str | None
) -> list[tuple[RunResult | None, str | None]]:
    """Train ``trainer.replicas`` runs in ``run_dir/replica_k/`` in one process; each
    replica's (result, error): a replica that failed alone has no result and its error."""
    sessions, replicas = build_replicas(cfg, resolved, run_dir, name=name, group=group)
    try:
        results = execute_sessions(sessions)
    except BaseException as stop:  # every replica stopped at the group's step
        note_step(stop, replicas.step)
        raise
    return [
        (None, replicas.failed[k]) if k in replicas.failed else (result, None)
        for k, result in enumerate(results)
    ]
