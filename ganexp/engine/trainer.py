"""The training loop: ``n_critic`` discriminator steps, then one generator step, then the hooks.

The step (:meth:`Trainer.run_step`) only queues work on the device: its statistics are summed into
a device tensor, and nothing is read back to the host except by a hook on a step where it fires
(logging reads the sums once; sampling, evaluation and checkpoints read what they need).
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from ganexp.data import BatchSource, DataSpec
from ganexp.engine.checkpoint import rng_state, set_rng_state
from ganexp.engine.distributed import World
from ganexp.errors import Interrupted, RunFailed, StopRequested
from ganexp.parts.losses import GANLoss
from ganexp.parts.terms import StepBatch, Term
from ganexp.parts.unrolled import look_ahead

T = TypeVar("T", bound=Term)
BASE_KEYS = ("loss/d", "loss/g", "d/real", "d/fake")  # every run's; its terms add their own
INTERVAL = "interval"  # checkpoint key: the step statistics summed since the last logged row


class Precision:
    """Autocast to ``dtype`` (None: plain fp32) and, for fp16, one gradient scaler per network."""

    def __init__(self, device: torch.device, dtype: torch.dtype | None) -> None:
        self.device = device
        self.dtype = dtype
        scaled = dtype == torch.float16
        self.scaler_d = torch.amp.GradScaler(device.type, enabled=scaled)
        self.scaler_g = torch.amp.GradScaler(device.type, enabled=scaled)

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def grad_scale(self, scaler: torch.amp.GradScaler) -> torch.Tensor | float:
        """The scaler's factor as a device tensor (no host-device sync), or 1 when unscaled."""
        if not scaler.is_enabled():
            return 1.0
        return scaler.scale(torch.ones((), device=self.device))

    @staticmethod
    def step(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> None:
        scaler.step(optimizer)
        scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return {"scaler_d": self.scaler_d.state_dict(), "scaler_g": self.scaler_g.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A scaler saved disabled (an fp32 or bf16 run continued in fp16) is empty: the new
        scaler then starts as a new fp16 run's does."""
        for name, scaler in (("scaler_d", self.scaler_d), ("scaler_g", self.scaler_g)):
            if state[name]:
                scaler.load_state_dict(state[name])


@dataclass
class Trainer:
    generator: nn.Module
    discriminator: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    loss: GANLoss
    data: BatchSource
    spec: DataSpec
    device: torch.device
    max_steps: int
    batch_size: int
    n_critic: int
    z_dim: int
    conditional: bool
    precision: Precision = field(default_factory=lambda: Precision(torch.device("cpu"), None))
    channels_last: bool = False
    skip_nonfinite: bool = False
    simultaneous: bool = False  # G's gradient at D's parameters before D's step (trainer.)
    instance_noise: float = 0.0  # the std of the noise added to D's every input (loss.)
    consensus: float = 0.0  # consensus optimization's gamma (loss.consensus_weight; simultaneous)
    unrolled_steps: int = 0  # G's loss against D after this many look-ahead steps (loss.)
    # the optional loss terms (ganexp.parts.terms), each player's in the order they are computed
    terms: list[Term] = field(default_factory=list)
    ema: AveragedModel | None = None  # trainer.ema_decay > 0: the EMA of G, updated each step
    hooks: list[Hook] = field(default_factory=list)
    strategy: StepStrategy | None = None  # how a step is taken (None: this run's own step)
    world: World = field(default_factory=World)
    step: int = 0
    images_seen: int = 0
    skipped_steps: int = 0
    signal_received: int = 0  # set by a signal handler, at any moment
    stop_signal: int = 0  # the signal the loop stops for, after the current step's hooks
    d_outputs: tuple[torch.Tensor, torch.Tensor] | None = None  # last critic step's (real, fake)

    def __post_init__(self) -> None:
        # what the step calls to train each network: the network itself, or its DDP wrapper
        self._train_g: nn.Module = self.generator
        self._train_d: nn.Module = self.discriminator
        self.d_terms = [term for term in self.terms if term.player == "d"]
        self.g_terms = [term for term in self.terms if term.player == "g"]
        # G's loss: the adversarial one or a term that replaces it (feature matching), plus the rest
        self._g_replacing = next((t for t in self.g_terms if t.replaces_adversarial), None)
        self._g_added = [term for term in self.g_terms if not term.replaces_adversarial]
        # what a step logs: every run's statistics, then its terms'
        self.stat_keys = (*BASE_KEYS, *(key for term in self.terms for key in term.keys))
        self._sums = torch.zeros(len(self.stat_keys), device=self.device)
        self._count = 0
        # the first step with a non-finite statistic, and which ones, kept on the device
        self._bad_step = torch.full((), -1, dtype=torch.long, device=self.device)
        self._bad_which = torch.zeros(len(self.stat_keys), dtype=torch.bool, device=self.device)
        self._before_step: dict[str, Any] | None = None  # what rewind_step puts back

    def term(self, kind: type[T]) -> T | None:
        """The run's first term of type ``kind``, or None."""
        return next((term for term in self.terms if isinstance(term, kind)), None)

    @property
    def sampler(self) -> nn.Module:
        """The generator that samples, is evaluated and is judged best: G's EMA when there
        is one, else G itself."""
        return self.generator if self.ema is None else self.ema.module

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Train both networks through ``wrap`` (DistributedDataParallel); hooks, checkpoints and
        the generator step's pass through D keep using the networks themselves."""
        self._train_g = wrap(self.generator)
        self._train_d = wrap(self.discriminator)

    # -- sampling -------------------------------------------------------------------------------
    def noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.z_dim, device=self.device)

    # -- one step -------------------------------------------------------------------------------
    def stop_requested(self) -> bool:
        """Whether any process has received a stop signal (every process must ask together)."""
        self.stop_signal = self.world.max(self.signal_received)
        return bool(self.stop_signal)

    def run_step(self) -> None:
        """n_critic discriminator steps, then one generator step; or, ``simultaneous``, one
        critic step and the generator step from the same parameters (G's gradient is taken
        before D steps), both stepping together.

        The last critic step's fakes keep their graph and are reused by the generator step (as
        the PyTorch DCGAN example does), which saves one generator forward per step.

        With several critic steps a stop signal is looked at between them and before the
        generator step; on one, the step is abandoned (StopRequested) and :meth:`rewind_step`
        puts back the state from before it, so that a checkpoint holds the last completed step.

        Under DDP the gradients of D's loss and of G's loss are averaged across processes during
        their backward passes. The penalty and the generator step call D itself: the first needs
        no second DDP pass (its gradients join D's backward), and in the second D has no
        gradients to average.
        """
        G, D, loss, amp = self._train_g, self._train_d, self.loss, self.precision
        interruptible = self.n_critic > 1
        self._before_step = self._step_state() if interruptible else None
        for i in range(self.n_critic):
            if i and interruptible and self.stop_requested():
                raise StopRequested
            real, labels = self.data.next_batch()
            if self.channels_last and real.dim() == 4:
                real = real.contiguous(memory_format=torch.channels_last)
            fake_labels = labels if self.conditional else None
            last = i == self.n_critic - 1
            with amp.autocast():
                with torch.set_grad_enabled(last):
                    fake = G(self.noise(real.shape[0]), fake_labels)
                real_out = D(self._noisy(real), labels).float()
                # consensus differentiates D's gradient in G's parameters: fakes keep their graph
                shown = fake if self.consensus else fake.detach()
                for term in self.d_terms:
                    shown = term.show(shown)
                fake_out = D(self._noisy(shown), fake_labels).float()
                d_loss = loss.d_loss(real_out, fake_out)
            batch = StepBatch(
                self.generator,
                self.discriminator,
                real,
                labels,
                fake,
                fake_labels,
                amp.grad_scale(amp.scaler_d),
                self.step * self.n_critic + i,
            )
            total, d_logged = self._add_terms(self.d_terms, d_loss, batch)
            self.opt_d.zero_grad(set_to_none=True)
            if self.consensus:  # simultaneous, n_critic 1: both players' gradients at once
                g_loss, g_total, g_logged = self._consensus_gradients(total, batch)
            else:
                amp.scaler_d.scale(total).backward()
            if self.simultaneous and not self.consensus:  # before D steps (n_critic is 1)
                g_loss, g_total, g_logged = self._generator_backward(batch)
            if self._may_step(total):
                amp.step(amp.scaler_d, self.opt_d)
                loss.after_d_step(D)
            for term in self.d_terms:
                term.after_update(self.discriminator)

        if interruptible and self.stop_requested():
            raise StopRequested
        if not self.simultaneous:
            g_loss, g_total, g_logged = self._generator_backward(batch)
        if self._may_step(g_total):
            amp.step(amp.scaler_g, self.opt_g)
        for term in self.g_terms:
            term.after_update(self.generator)
        if self.ema is not None:
            self.ema.update_parameters(self.generator)

        with torch.no_grad():
            logged = {
                "loss/d": d_loss,
                "loss/g": g_loss,
                "d/real": loss.report(real_out),
                "d/fake": loss.report(fake_out),
            }
            self.record(logged | d_logged | g_logged, real_out, fake_out)

    def _generator_backward(
        self, batch: StepBatch
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """G's loss on the step's fakes (with their graph) and its gradient in G: (the
        adversarial loss or its replacement, the total with G's terms, what the terms log)."""
        D, amp = self.discriminator, self.precision
        D.requires_grad_(False)  # the generator step needs no discriminator gradients
        with amp.autocast():
            if self._g_replacing is not None:
                g_loss = self._g_replacing(batch)[0]
            else:
                critic = self._look_ahead(batch) if self.unrolled_steps else D
                fake = self._noisy(batch.fake)
                g_loss = self.loss.g_loss(critic(fake, batch.fake_labels).float())
        g_total, g_logged = self._add_terms(self._g_added, g_loss, batch)
        self.opt_g.zero_grad(set_to_none=True)
        amp.scaler_g.scale(g_total).backward()
        D.requires_grad_(True)
        return g_loss, g_total, g_logged

    def _consensus_gradients(
        self, d_total: torch.Tensor, batch: StepBatch
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Consensus optimization (Mescheder, Nowozin and Geiger 2017): each player's gradient
        of its own loss plus ``consensus`` times the gradient of L = 1/2 (|d D's loss / d D|^2 +
        |d G's loss / d G|^2), all at the step's parameters, put in the parameters' ``.grad``.
        Returns what :meth:`_generator_backward` does."""
        G, D = self.generator, self.discriminator
        with self.precision.autocast():
            fake = self._noisy(batch.fake)
            g_loss = self.loss.g_loss(D(fake, batch.fake_labels).float())
        g_total, g_logged = self._add_terms(self._g_added, g_loss, batch)
        d_params = [p for p in D.parameters() if p.requires_grad]
        g_params = [p for p in G.parameters() if p.requires_grad]
        own = (
            *torch.autograd.grad(d_total, d_params, create_graph=True, allow_unused=True),
            *torch.autograd.grad(g_total, g_params, create_graph=True, allow_unused=True),
        )
        half_square = 0.5 * sum(grad.pow(2).sum() for grad in own if grad is not None)
        params = [*d_params, *g_params]
        extra = torch.autograd.grad(half_square, params, allow_unused=True)
        for param, mine, more in zip(params, own, extra, strict=True):
            grad = torch.zeros_like(param) if mine is None else mine.detach()
            param.grad = grad if more is None else grad + self.consensus * more
        return g_loss.detach(), g_total.detach(), g_logged

    def _look_ahead(self, batch: StepBatch) -> Callable[..., torch.Tensor]:
        """D after ``unrolled_steps`` differentiable steps of its optimizer on this step's
        batch (``loss.unrolled_steps``; ganexp.parts.unrolled)."""

        def d_inputs() -> tuple[torch.Tensor, Any, torch.Tensor, Any]:
            real, fake = self._noisy(batch.real), self._noisy(batch.fake)
            return real, batch.labels, fake, batch.fake_labels

        return look_ahead(self.discriminator, self.opt_d, self.loss, self.unrolled_steps, d_inputs)

    def _noisy(self, inputs: torch.Tensor) -> torch.Tensor:
        """D's input with instance noise (``loss.instance_noise``), or as it is."""
        if not self.instance_noise:
            return inputs
        return inputs + self.instance_noise * torch.randn_like(inputs)

    def _add_terms(
        self, terms: list[Term], value: torch.Tensor, batch: StepBatch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``value`` plus each term's addition, and what the terms log; each term is computed
        under the run's autocast unless it says otherwise."""
        logged: dict[str, torch.Tensor] = {}
        for term in terms:
            with self.precision.autocast() if term.autocast else nullcontext():
                added, own = term(batch)
            value = value if added is None else value + added
            logged |= own
        return value, logged

    def record(
        self, logged: dict[str, torch.Tensor], real_out: torch.Tensor, fake_out: torch.Tensor
    ) -> None:
        """Note a finished step: its statistics by key (a key not given is 0), D's last outputs
        and the images it used. Nothing is read back to the host."""
        zero = torch.zeros((), device=self.device)
        stats = torch.stack([logged.get(key, zero).detach().float() for key in self.stat_keys])
        self._sums += stats
        self.d_outputs = (real_out.detach(), fake_out.detach())
        if not self.skip_nonfinite:  # skipped steps are not faults; weights are still checked
            self._record_nonfinite(stats)
        self._count += 1
        self.images_seen += self.batch_size * self.n_critic

    def _step_state(self) -> dict[str, Any]:
        """What a step changes before its generator update, copied: G's buffers, D, its
        optimizer and grad scaler, the data position, the random streams and the skip count."""
        clone = copy.deepcopy
        return {
            # G's batch norm statistics move with the fakes the critic steps draw
            "generator_buffers": {k: b.clone() for k, b in self.generator.named_buffers()},
            "discriminator": clone(self.discriminator.state_dict()),
            "opt_d": clone(self.opt_d.state_dict()),
            "scaler_d": clone(self.precision.scaler_d.state_dict()),
            "data": clone(self.data.state_dict()),
            "rng": rng_state(),
            "skipped_steps": self.skipped_steps,
        } | self._d_side_extras()

    def _d_side_extras(self) -> dict[str, Any]:
        """What else a critic step changes: the state of the critic's terms."""
        return {
            term.state_key: copy.deepcopy(term.state_dict())
            for term in self.d_terms
            if term.state_key
        }

    def rewind_step(self) -> None:
        """Undo an abandoned step: back to the state after the last completed one."""
        state = self._before_step
        with torch.no_grad():
            for name, buffer in self.generator.named_buffers():
                buffer.copy_(state["generator_buffers"][name])
        self.discriminator.load_state_dict(state["discriminator"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.precision.scaler_d.load_state_dict(state["scaler_d"])
        self.data.load_state_dict(state["data"])
        set_rng_state(state["rng"])
        self.skipped_steps = state["skipped_steps"]
        for term in self.d_terms:
            if term.state_key:
                term.load_state_dict(state[term.state_key], self.device)
        self.opt_d.zero_grad(set_to_none=True)
        self.discriminator.requires_grad_(True)

    def _may_step(self, loss_value: torch.Tensor) -> bool:
        """With trainer.skip_nonfinite, an optimizer step on a non-finite loss is skipped
        (this reads the loss back every step); otherwise always step."""
        if self.skip_nonfinite and not bool(torch.isfinite(loss_value)):
            self.skipped_steps += 1
            return False
        return True

    def _record_nonfinite(self, stats: torch.Tensor) -> None:
        """Remember the first step with a non-finite statistic, without a host-device sync."""
        bad = ~torch.isfinite(stats)
        first = (self._bad_step < 0) & bad.any()
        self._bad_step = torch.where(first, self.step + 1, self._bad_step)
        self._bad_which = torch.where(first, bad, self._bad_which)

    def nonfinite(self, weights: bool = True) -> tuple[int, list[str]] | None:
        """(step, names) of the first non-finite statistic seen so far, or (if ``weights``)
        the first non-finite weight, or None."""
        step = int(self._bad_step)
        if step >= 0:
            flags = self._bad_which.tolist()
            return step, [k for k, bad in zip(self.stat_keys, flags, strict=True) if bad]
        if not weights:
            return None
        for net_name, net in (("generator", self.generator), ("discriminator", self.discriminator)):
            for name, param in net.named_parameters():
                if not bool(torch.isfinite(param).all()):
                    return self.step, [f"{net_name}.{name}"]
        return None

    def pop_stats(self) -> dict[str, float]:
        """Means of the step statistics since the last call, over every process (one
        host-device sync)."""
        values = self.world.mean_(self._sums / max(self._count, 1)).tolist()
        self._sums.zero_()
        self._count = 0
        stats = dict(zip(self.stat_keys, values, strict=True))
        if self.loss.wasserstein:
            stats["wasserstein"] = -stats["loss/d"]
        return stats

    # -- the loop -------------------------------------------------------------------------------
    def train(self) -> None:
        """Steps and their hooks to ``max_steps``, for this run and every run its step strategy
        trains with it (``trainer.replicas``: K replicas, this one the first).

        A stop signal ends every run at the last completed step, with a checkpoint of it: looked
        at after every step (every process stops at the same step, whichever of them got the
        signal), between critic iterations, and between evaluation batches. The signal comes to
        this run (:func:`ganexp.session.run.stop_on_signals`); the others are given it after
        each step, before their hooks. Where the strategy isolates its runs (replicas), a run
        whose hooks fail (a non-finite loss or weight) stops alone, with one line."""
        strategy = self.strategy or OwnStep(self)
        runs = strategy.runs
        for run in runs:
            check_hook_order(run.hooks)
        started: list[int] = []
        try:
            for k in strategy.live:
                started.append(k)
                strategy.call_hooks(k, "before_train", 0)
            while strategy.step < self.max_steps and strategy.live:
                strategy.run_step()
                strategy.step += 1
                for k in strategy.live:
                    runs[k].step += 1
                self.stop_requested()
                signal = self.stop_signal
                for k in strategy.live:
                    try:
                        strategy.call_hooks(k, "after_step", signal)
                    except StopRequested:  # an evaluation abandoned: this step stops them all
                        signal = self.stop_signal
                        strategy.call_hooks(k, "after_interrupt", signal)
                if signal:
                    raise Interrupted(signal, strategy.step)
        except StopRequested:  # inside a step: every run is back at its last completed step
            signal = self.stop_signal
            for k in [k for k in strategy.live if k in started]:
                strategy.call_hooks(k, "after_interrupt", signal)
            raise Interrupted(signal, strategy.step) from None
        for k in strategy.live:
            strategy.call_hooks(k, "after_train", 0)

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "step": self.step,
            "images_seen": self.images_seen,
            "skipped_steps": self.skipped_steps,
            "precision": self.precision.state_dict(),
            "data": self.data.state_dict(),
            INTERVAL: self._interval_state(),
        } | self._averages()

    def _interval_state(self) -> dict[str, Any]:
        """The step statistics summed since the last logged row: the next row averages them
        with the steps after a resume, as an uninterrupted run's does."""
        sums = self._sums.to("cpu", copy=True)
        return {"keys": list(self.stat_keys), "sums": sums, "count": self._count}

    def _load_interval(self, state: dict[str, Any] | None) -> None:
        """The sums, matched by key (one the checkpoint lacks starts at 0). A checkpoint written
        before they were kept has none: the next row then averages the steps since the resume."""
        self._sums.zero_()
        self._count = 0
        if not state:
            return
        keys = list(state["keys"])
        for i, key in enumerate(self.stat_keys):
            if key in keys:
                self._sums[i] = state["sums"][keys.index(key)]
        self._count = state["count"]

    def _averages(self) -> dict[str, Any]:
        """The state of G's EMA and of the terms that keep one."""
        state = {"generator_ema": self.ema.state_dict()} if self.ema is not None else {}
        return state | {term.state_key: term.state_dict() for term in self.terms if term.state_key}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step = state["step"]
        self.images_seen = state["images_seen"]
        self.skipped_steps = state["skipped_steps"]
        self.precision.load_state_dict(state["precision"])
        self.data.load_state_dict(state["data"])
        self._load_interval(state.get(INTERVAL))
        if self.ema is not None and "generator_ema" in state:
            self.ema.load_state_dict(state["generator_ema"])
        for term in self.terms:
            if term.state_key:
                term.load_state_dict(state[term.state_key], self.device)


def generator_ema(generator: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``generator``'s weights and buffers (batch norm's
    running statistics too), torch's own: after each step e <- decay * e + (1 - decay) * w,
    starting from a copy at the first step."""
    return AveragedModel(generator, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


class Hook:
    """Runs around the loop (detectron2's hook contract). ``every``: the interval in steps; a
    hook with an interval also fires on the last step. A hook owns its state: what it keeps in
    a checkpoint comes from its :meth:`state_dict` and goes back through :meth:`load_state_dict`.
    ``runs_after``: hook types that must come before it in a run's hooks where both are there
    (checked when training starts, :func:`check_hook_order`)."""

    every: int = 0
    runs_after: tuple[type[Hook], ...] = ()

    def state_dict(self) -> dict[str, Any]:
        """Entries this hook adds to a checkpoint (top-level keys)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Its own entries back, from a whole checkpoint."""

    def due(self, trainer: Trainer) -> bool:
        return self.every > 0 and (
            trainer.step % self.every == 0 or trainer.step == trainer.max_steps
        )

    def due_or_stopping(self, trainer: Trainer) -> bool:
        return self.due(trainer) or bool(trainer.stop_signal)

    def before_train(self, trainer: Trainer) -> None:
        """Called once before the first step."""

    def after_step(self, trainer: Trainer) -> None:
        """Called after every step."""

    def after_train(self, trainer: Trainer) -> None:
        """Called once after the last step."""

    def after_interrupt(self, trainer: Trainer) -> None:
        """Called when a stop signal abandoned a step or a hook's work: the trainer holds the
        state of its last completed step (``trainer.step``), whose other hooks may not all have
        run."""


def check_hook_order(hooks: list[Hook]) -> None:
    """Every hook after the hooks it says it runs after (a mistake in building a run)."""
    for position, hook in enumerate(hooks):
        for later in hooks[position + 1 :]:
            if any(isinstance(later, kind) for kind in hook.runs_after):
                raise ValueError(
                    f"hook {type(hook).__name__} must come after {type(later).__name__}"
                )


class StepStrategy:
    """How :meth:`Trainer.train` takes one step of its runs, and runs their hooks.

    ``runs``: the trainers stepped together (the first drives the loop); ``live``: the indices
    of those still training; ``step``: the steps completed. :meth:`run_step` takes one step of
    every live run, or abandons it with StopRequested, every run back at its last completed
    step."""

    runs: list[Trainer]
    step: int
    failed: dict[int, str]
    isolated = False  # a run whose hooks fail stops alone (replicas), or the loop stops

    @property
    def live(self) -> list[int]:
        return [k for k in range(len(self.runs)) if k not in self.failed]

    def run_step(self) -> None:
        raise NotImplementedError

    def hook_context(self, k: int) -> AbstractContextManager:
        """What run k's hooks run inside (a replica's own random stream)."""
        return nullcontext()

    def call_hooks(self, k: int, call: str, signal: int) -> None:
        """Run k's hooks' ``call``, the run stopping for ``signal`` (0: none; the first run's
        ``signal_received`` is left to the handler, which sets it at any moment)."""
        run = self.runs[k]
        run.stop_signal = signal
        if k:
            run.signal_received = signal
        try:
            with self.hook_context(k):
                for hook in run.hooks:
                    getattr(hook, call)(run)
        except RunFailed as error:
            if not self.isolated:
                raise
            self.failed[k] = str(error)
            print(f"ganexp: replica {k}: {error}; the others go on", file=sys.stderr)


class OwnStep(StepStrategy):
    """One run's own step (:meth:`Trainer.run_step`), in one process or in each of several."""

    def __init__(self, run: Trainer) -> None:
        self.runs = [run]
        self.step = run.step
        self.failed = {}

    def run_step(self) -> None:
        run = self.runs[0]
        try:
            run.run_step()
        except StopRequested:
            run.rewind_step()
            raise


def grad_norm(module: nn.Module) -> torch.Tensor:
    """L2 norm of all gradients of ``module`` (from its last backward), as a device tensor."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


class ProgressBar(Hook):
    """A tqdm bar with the step; losses and img/s are refreshed when the logger reads them."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: tqdm | None = None

    def before_train(self, trainer: Trainer) -> None:
        self.bar = tqdm(
            total=trainer.max_steps,
            initial=trainer.step,
            disable=not self.enabled,
            unit="step",
            dynamic_ncols=True,
        )

    def after_step(self, trainer: Trainer) -> None:
        self.bar.update(1)

    def show(self, scalars: dict[str, float]) -> None:
        if self.bar is not None:
            shown = ("loss/d", "loss/g", "perf/img_per_s")
            self.bar.set_postfix({k.split("/")[-1]: f"{scalars[k]:.3g}" for k in shown})

    def after_train(self, trainer: Trainer) -> None:
        self.bar.close()
