"""The hooks of a run: logging, sample grids, evaluation and checkpoints, each on its interval."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ganexp.engine.checkpoint import BEST, CheckpointStore, rng_state
from ganexp.engine.trainer import Hook, ProgressBar, Trainer, grad_norm
from ganexp.errors import RunFailed, StopRequested
from ganexp.tasks.base import Task
from ganexp.tracking.logger import Tracker

PENDING_EVAL = "pending_eval"  # checkpoint key: the step whose evaluation a signal cut short
LATEST_EVAL = "latest_eval"  # checkpoint key: the last evaluation's metrics


class LogScalars(Hook):
    """Every ``every`` steps: the step statistics (means over the interval), gradient norms,
    learning rates and throughput, to metrics.jsonl, W&B and the progress bar; and to W&B,
    histograms of D's outputs on the last real and fake batches (``hist/d_real``,
    ``hist/d_fake``): how far apart D puts real and fake."""

    def __init__(self, every: int, tracker: Tracker, bar: ProgressBar) -> None:
        self.every = every
        self.tracker = tracker
        self.bar = bar

    def before_train(self, trainer: Trainer) -> None:
        self._mark(trainer)

    def _mark(self, trainer: Trainer) -> None:
        self._time = time.perf_counter()
        self._images = trainer.images_seen

    def after_step(self, trainer: Trainer) -> None:
        if not self.due(trainer):
            return
        norms = torch.stack([grad_norm(trainer.generator), grad_norm(trainer.discriminator)])
        scalars = trainer.pop_stats()  # the one host-device sync of this step
        g_norm, d_norm = norms.tolist()
        elapsed = time.perf_counter() - self._time
        scalars |= {
            "grad_norm/g": g_norm,
            "grad_norm/d": d_norm,
            "lr/g": trainer.opt_g.param_groups[0]["lr"],
            "lr/d": trainer.opt_d.param_groups[0]["lr"],
            "perf/img_per_s": (trainer.images_seen - self._images) / max(elapsed, 1e-9),
        }
        self.tracker.log(trainer.step, scalars)
        if trainer.d_outputs is not None and self.tracker.wandb_on:
            real, fake = (trainer.loss.outputs(out) for out in trainer.d_outputs)
            self.tracker.log_histograms(trainer.step, {"hist/d_real": real, "hist/d_fake": fake})
        self.bar.show(scalars)
        self._mark(trainer)


class FixedInputs:
    """The noise (and labels, one row per class for a cGAN) behind every sample grid of a run;
    for a task that translates, held-out input images (where a cGAN's labels go) and, paired,
    their targets (:meth:`Task.held_out <ganexp.tasks.base.Task.held_out>`). The task draws
    each grid's cells (:meth:`Task.show <ganexp.tasks.base.Task.show>`)."""

    def __init__(self, trainer: Trainer, count: int, task: Task) -> None:
        """``count`` samples, or of held-out inputs, the first ``count`` (unpaired: inputs
        ``A | B`` of equal halves)."""
        self.task = task
        classes = trainer.spec.num_classes if trainer.conditional else 0
        self.targets: torch.Tensor | None = None
        self.cycle = False  # kept in checkpoints: the grid shows translations back
        held_out = task.held_out(count)
        if held_out is not None:
            inputs, targets = held_out
            self.labels = inputs[:count].to(trainer.device)  # the input images
            self.targets = None if targets is None else targets[:count].to(trainer.device)
            self.cycle = targets is None
            self.nrow = task.grid_columns(len(self.labels))
        elif classes:
            per_class = max(1, count // classes)
            self.nrow = per_class
            self.labels = torch.arange(classes, device=trainer.device).repeat_interleave(per_class)
        else:
            self.nrow = task.grid_columns(count)
            self.labels = None
        n = len(self.labels) if self.labels is not None else count
        generator = torch.Generator(device="cpu").manual_seed(0x5EED)
        self.noise = torch.randn(n, trainer.z_dim, generator=generator).to(trainer.device)

    def samples(self, G: nn.Module) -> torch.Tensor:
        """G's samples of the fixed inputs, as the task shows them; for translation, each is
        input | output | target side by side, or unpaired, A -> B -> A and B -> A -> B."""
        return self.task.show(G, self.noise, self.labels, self.targets)

    @property
    def classes(self) -> torch.Tensor | None:
        """The class of each sample (a cGAN's), or None."""
        return None if self.task.translates else self.labels

    def state_dict(self) -> dict[str, Any]:
        def cpu(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.cpu()

        return {
            "noise": self.noise.cpu(),
            "labels": cpu(self.labels),
            "targets": cpu(self.targets),
            "cycle": self.cycle,
        }

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        def to(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        self.noise = state["noise"].to(device)
        self.labels = to(state["labels"])
        self.targets = to(state.get("targets"))
        self.cycle = state.get("cycle", False)


class SampleGrid(Hook):
    """Every ``every`` steps: the fixed-noise samples as samples/step_NNNNNN.png and to W&B.
    With ``real`` (image generation), once per run folder before the first: a grid of real
    training images beside them (samples/real.png, W&B ``samples_real``)."""

    def __init__(
        self,
        every: int,
        tracker: Tracker,
        fixed: FixedInputs,
        centers: torch.Tensor | None = None,
        real: Callable[[int], torch.Tensor] | None = None,
    ) -> None:
        self.every = every
        self.tracker = tracker
        self.fixed = fixed
        self.centers = centers
        self.real = real

    def after_step(self, trainer: Trainer) -> None:
        if not self.due(trainer):
            return
        if self.real is not None and not self.tracker.has_real_grid():
            self.tracker.log_real_grid(
                trainer.step, self.real(len(self.fixed.noise)), self.fixed.nrow
            )
        samples = self.fixed.samples(trainer.sampler)
        if trainer.spec.kind == "points":
            self.tracker.log_points(trainer.step, samples, self.centers)
        else:
            self.tracker.log_images(trainer.step, samples, self.fixed.nrow)


class Evaluator(Protocol):
    """Computes ``eval/`` metrics of the current generator; names the headline one."""

    headline: str
    maximize: bool

    def setup(self) -> dict[str, Any]:
        """What the run config should record about the evaluation."""

    def __call__(
        self, generator: nn.Module, should_stop: Callable[[], bool] | None = None
    ) -> dict[str, float]:
        """The metrics; ``should_stop`` is asked between batches (StopRequested on a yes)."""


class CheckFinite(Hook):
    """Stops the run at a non-finite loss or weight, naming the step and the tensor, before a
    checkpoint could save it. Runs on every logging and checkpoint step, and on every step on
    the CPU, where reading a value back costs nothing. With several processes all of them stop
    together, with the first report in rank order."""

    def __init__(self, intervals: tuple[int, ...], every_step: bool, store: CheckpointStore):
        self.intervals = intervals
        self.every_step = every_step
        self.store = store

    def after_step(self, trainer: Trainer) -> None:
        # weights are scanned before anything is saved (log/checkpoint/last/stopping steps);
        # on the CPU the cheap loss flag is also read on every other step
        scan = bool(trainer.stop_signal) or trainer.step == trainer.max_steps
        scan = scan or any(trainer.step % every == 0 for every in self.intervals)
        if not (scan or self.every_step):
            return
        found = trainer.nonfinite(weights=scan)
        world = trainer.world
        if world.max(int(found is not None)):
            found = next(report for report in world.gather(found) if report is not None)
            step, names = found
            last = self.store.last if self.store.last.exists() else None
            kept = f"last good checkpoint: {last}" if last else "no checkpoint was written yet"
            raise RunFailed(
                f"non-finite {', '.join(names)} at step {step}; {kept} "
                "(trainer.skip_nonfinite=true skips such steps instead)"
            )


class Evaluate(Hook):
    """Every ``every`` steps (0: only at the last step): the evaluator's metrics as ``eval/...``
    keys, and a W&B table of the fixed-noise samples. Keeps checkpoints/best.pt by the headline
    metric. Its state (the best value, the last evaluation, one a signal cut short, the
    evaluator's setup) goes into every checkpoint; the Checkpoint hook runs after it, so the
    last checkpoint of a step knows the best value.

    A stop signal between evaluation batches abandons the evaluation; the checkpoint then
    records the step (``pending_eval``) and the resumed run evaluates it first. With several
    processes rank 0 evaluates alone, so it cannot stop the others there: it finishes."""

    runs_after = (CheckFinite,)  # a non-finite run is stopped, not evaluated

    def __init__(
        self,
        every: int,
        tracker: Tracker,
        evaluate: Evaluator,
        checkpoint: Checkpoint,
        fixed: FixedInputs | None = None,
        class_names: tuple[str, ...] = (),
        setup: dict[str, Any] | None = None,
    ):
        """``setup``: what the evaluator measures with (:meth:`Evaluator.setup`), kept in
        checkpoints for ``ganexp-eval``."""
        self.every = every
        self.tracker = tracker
        self.evaluate = evaluate
        self.checkpoint = checkpoint
        self.fixed = fixed
        self.class_names = class_names
        self.setup = setup
        self.latest: dict[str, float] = {}
        self.best: dict[str, Any] = {}
        self.pending: int | None = None  # the step whose evaluation a stop signal cut short

    def due(self, trainer: Trainer) -> bool:
        return super().due(trainer) or (self.every == 0 and trainer.step == trainer.max_steps)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"eval_setup": self.setup} if self.setup is not None else {}
        if self.best:
            state["best"] = self.best
        if self.latest:
            state[LATEST_EVAL] = self.latest
        if self.pending is not None:
            state[PENDING_EVAL] = self.pending
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The best value so far, the last evaluation and a pending one, from a checkpoint."""
        if state.get("best"):
            self.best = dict(state["best"])
        self.pending = state.get(PENDING_EVAL)
        if state.get(LATEST_EVAL):  # a finished run started again still reports its results
            self.latest = dict(state[LATEST_EVAL])

    def before_train(self, trainer: Trainer) -> None:
        if self.pending == trainer.step:
            self._evaluate(trainer)
            if not trainer.world.distributed:  # (saving is collective; rank 0 alone is here)
                self.checkpoint.save(trainer)  # last.pt no longer owes this evaluation

    def after_step(self, trainer: Trainer) -> None:
        if self.due(trainer):
            self._evaluate(trainer)

    def _evaluate(self, trainer: Trainer) -> None:
        should_stop = None if trainer.world.distributed else trainer.stop_requested
        try:
            self.latest = {
                f"eval/{k}": v for k, v in self.evaluate(trainer.sampler, should_stop).items()
            }
        except StopRequested:
            self.pending = trainer.step
            raise
        self.pending = None
        if not self.latest:
            return
        self.tracker.log(trainer.step, self.latest)
        if self.fixed is not None and trainer.spec.kind == "image" and self.tracker.wandb_on:
            fixed = self.fixed
            samples = fixed.samples(trainer.sampler)
            self.tracker.log_sample_table(trainer.step, samples, fixed.classes, self.class_names)
        key = f"eval/{self.evaluate.headline}"
        value = self.latest.get(key)
        if value is not None and self._improves(value):
            self.best = {"key": key, "value": value, "step": trainer.step}
            path = self.checkpoint.store.save_as(self.checkpoint.state(trainer), BEST)
            self.tracker.log_checkpoint(path, trainer.step, ["best"])
        if self.best:  # every time: a resumed run's new W&B file holds it too
            name = self.best["key"].removeprefix("eval/")
            self.tracker.summarize(
                {f"best/{name}": self.best["value"], "best/step": self.best["step"]}
            )

    def _improves(self, value: float) -> bool:
        if not self.best:
            return True
        better = (
            value > self.best["value"] if self.evaluate.maximize else value < self.best["value"]
        )
        return bool(better)


class Checkpoint(Hook):
    """Every ``every`` steps, at the end and when stopped by a signal: what a run needs to go
    on, as checkpoints/step_NNNNNN.pt and checkpoints/last.pt.

    With several processes only rank 0 writes; the random and data states of every process go
    into the checkpoint as ``ranks``, so that each continues its own streams exactly."""

    # never saves a non-finite run; saves what Evaluate knows of this step (the best value)
    runs_after = (CheckFinite, Evaluate)

    def __init__(
        self,
        every: int,
        store: CheckpointStore,
        fixed: FixedInputs,
        tracker: Tracker,
        config: dict[str, Any],
    ) -> None:
        self.every = every
        self.store = store
        self.fixed = fixed
        self.tracker = tracker
        self.config = config

    def after_step(self, trainer: Trainer) -> None:
        if self.due_or_stopping(trainer):
            self.save(trainer)

    def after_interrupt(self, trainer: Trainer) -> None:
        self.save(trainer)

    def save(self, trainer: Trainer) -> None:
        state = self.state(trainer)
        if trainer.world.distributed:
            own = {"rng": state["rng"], "data": state["data"]}
            state["ranks"] = trainer.world.gather(own)
        if trainer.world.is_main:
            self.store.save(state, trainer.step)
            self.tracker.log_checkpoint(self.store.last, trainer.step, ["latest"])

    def state(self, trainer: Trainer) -> dict[str, Any]:
        """This process's view of the run (rank 0's is the whole of it with one process)."""
        hooks = [hook.state_dict() for hook in trainer.hooks if hook is not self]
        return (
            trainer.state_dict()
            | {key: value for state in hooks for key, value in state.items()}
            | {
                "fixed": self.fixed.state_dict(),
                "rng": rng_state(),
                "wandb_id": self.tracker.run_id,
                "config": self.config,
                "spec": dataclasses.asdict(trainer.spec),
            }
        )


class Profile(Hook):
    """trainer.profile (debug=profile): a torch.profiler trace of steps 2-4 (one skipped, one
    warm-up, three recorded) written to ``profile/`` in the run folder as Chrome-trace JSON, which
    Perfetto (ui.perfetto.dev) and chrome://tracing open."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.profiler: torch.profiler.profile | None = None

    def before_train(self, trainer: Trainer) -> None:
        os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # no "gpuGetDeviceCount failed" on a CPU
        activities = [torch.profiler.ProfilerActivity.CPU]
        if trainer.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.profiler = torch.profiler.profile(
            activities=activities,
            schedule=torch.profiler.schedule(wait=1, warmup=1, active=3, repeat=1),
            on_trace_ready=torch.profiler.tensorboard_trace_handler(str(self.folder)),
            record_shapes=True,
        )
        self.profiler.start()

    def after_step(self, trainer: Trainer) -> None:
        self.profiler.step()

    def after_train(self, trainer: Trainer) -> None:
        self.profiler.stop()

    def after_interrupt(self, trainer: Trainer) -> None:
        self.profiler.stop()
