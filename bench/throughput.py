"""Section 1: training throughput, and what the hooks of ganexp's loop cost.

Throughput is images through D per second (batch x critic steps per step) of one training step,
DCGAN-32 on Fashion-MNIST at batch 128, for:

* the training loop of the PyTorch DCGAN tutorial
  (pytorch.org/tutorials/beginner/dcgan_faces_tutorial.html), written out below with its data
  pipeline (torchvision dataset, PIL transforms, a shuffling DataLoader with 2 workers), its
  optimizers and its step order, on ganexp's own G and D so that the networks are identical;
* ganexp's hot loop, ``session.trainer.run_step()`` of a session built by
``ganexp.session.run.setup``
  (the real path: data on the device, ganexp's optimizer settings), in several variants that are
  plain Hydra overrides. A variant whose key does not exist (yet) is skipped with ganexp's
  one-line error.

Every loop first runs a few warm-up steps (their time is kept: for ``device.compile=true`` it is
the compile time). Then the loops take turns: each round runs every loop for the same number of
steps, in an order rotated from round to round, so that a change in the machine's load hits
every loop alike. The tutorial's DataLoader workers load batches ahead between its rounds; that
work is kept out of every timed round (see ``TutorialLoop.before_round``), else it would land in
the next loop's round and make the tutorial's next round look free. A loop's figure is the
median over rounds; its ratio to the tutorial is the median of the ratios within each round.

The hook overhead is measured on a separate default session running ``trainer.train()`` with all
its hooks at the default intervals (only ``max_steps`` is shortened): each hook's methods are
wrapped with a timer, which gives the time spent inside hooks directly (robust to load noise), per
hook and per firing; from the per-firing costs the overhead of a default-length run is projected.
For comparison, the wall time per step of ``train()`` is set against ``run_step()`` alone on the
same session just before and after.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from common import QUIET, compose_config, make_session, median, short_error, sync
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms

from ganexp.data import data_spec
from ganexp.data.mnist import locate
from ganexp.errors import ConfigError
from ganexp.models.dcgan import Project, Score
from ganexp.session.build import build_discriminator, build_generator

TUTORIAL = "PyTorch DCGAN tutorial loop"
REFILL_S = 1.0  # after its round, the tutorial's DataLoader workers load ahead (4 batches)


@dataclass(frozen=True)
class Variant:
    """One ganexp configuration to time: a label and its Hydra overrides."""

    label: str
    overrides: tuple[str, ...]
    full_only: bool = False  # too slow to include in --quick


VARIANTS = (
    Variant("ganexp (default)", ()),
    Variant("ganexp device.precision=bf16", ("device.precision=bf16",)),
    Variant("ganexp device.channels_last=false", ("device.channels_last=false",)),
    Variant("ganexp optim.implementation=for_loop", ("optim.implementation=for_loop",)),
    Variant("ganexp device.compile=true", ("device.compile=true",), full_only=True),
    Variant("ganexp trainer.ema_decay=0.999", ("trainer.ema_decay=0.999",)),
    Variant("ganexp data.augment=diffaug", ("data.augment=diffaug",)),
    Variant("ganexp loss.r1_weight=10", ("loss.r1_weight=10",)),
    Variant("ganexp loss.r1_weight=10 loss.r1_every=16", ("loss.r1_weight=10", "loss.r1_every=16")),
    Variant("ganexp loss.historical_weight=1e-4", ("loss.historical_weight=1e-4",)),
    Variant("ganexp norm.generator=virtual_batch", ("norm.generator=virtual_batch",)),
)


# -- the loops -----------------------------------------------------------------------------------
class TutorialLoop:
    """The PyTorch DCGAN tutorial's training loop, step for step.

    Differences from the tutorial, none of which changes the work done: Fashion-MNIST (1 channel,
    so Normalize takes one mean and std) instead of CelebA; ganexp's G and D layers with their
    initialization, as plain PyTorch modules (G's first layer an ``nn.ConvTranspose2d`` of z as
    a 1x1 map and D's last an ``nn.Conv2d``, as the tutorial writes them, where ganexp computes
    both as the matrix products they are), but D returns logits, so the loss is
    ``BCEWithLogitsLoss`` instead of a Sigmoid layer plus ``BCELoss``. The tutorial's
    per-iteration ``.item()`` reads of the losses and D outputs are kept. One DataLoader iterator
    lives across rounds and is renewed at the end of an epoch, as in the tutorial's
    ``for epoch ...: for data in dataloader``.
    """

    label = TUTORIAL

    def __init__(self, batch_size: int, workers: int = 2) -> None:
        _, cfg = compose_config(QUIET)
        spec = data_spec(cfg.data)
        self.device = torch.device("cpu")
        self.netG = _plain_layers(build_generator(cfg, spec).net)
        self.netD = _plain_layers(build_discriminator(cfg, spec).net)
        self.nz = cfg.trainer.z_dim
        dataset = locate(cfg.data).load()  # a torchvision FashionMNIST (ganexp finds the files)
        dataset.transform = transforms.Compose(
            [
                transforms.Resize(cfg.data.image_size),
                transforms.ToTensor(),
                transforms.Normalize((0.5,), (0.5,)),
            ]
        )
        self.loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers)
        self.batches = iter(self.loader)
        self.criterion = nn.BCEWithLogitsLoss()
        self.optimizerD = torch.optim.Adam(self.netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.optimizerG = torch.optim.Adam(self.netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.stats: list[tuple[float, ...]] = []  # the tutorial's G_losses, D_losses, D(x)...
        self.in_effect = (
            f"fp32, NCHW, Adam default, DataLoader(shuffle, num_workers={workers}), PIL Resize"
        )

    def _next_batch(self) -> torch.Tensor:
        try:
            return next(self.batches)[0]
        except StopIteration:  # the next epoch
            self.batches = iter(self.loader)
            return next(self.batches)[0]

    def step(self) -> int:
        netD, netG, criterion = self.netD, self.netG, self.criterion
        # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
        netD.zero_grad()
        real = self._next_batch().to(self.device)
        b_size = real.size(0)
        label = torch.full((b_size,), 1.0, device=self.device)
        output = netD(real).view(-1)
        errD_real = criterion(output, label)
        errD_real.backward()
        D_x = output.sigmoid().mean().item()
        noise = torch.randn(b_size, self.nz, 1, 1, device=self.device)
        fake = netG(noise)
        label.fill_(0.0)
        output = netD(fake.detach()).view(-1)
        errD_fake = criterion(output, label)
        errD_fake.backward()
        D_G_z1 = output.sigmoid().mean().item()
        errD = errD_real + errD_fake
        self.optimizerD.step()
        # (2) Update G network: maximize log(D(G(z)))
        netG.zero_grad()
        label.fill_(1.0)
        output = netD(fake).view(-1)
        errG = criterion(output, label)
        errG.backward()
        D_G_z2 = output.sigmoid().mean().item()
        self.optimizerG.step()
        self.stats.append((errG.item(), errD.item(), D_x, D_G_z1, D_G_z2))
        return b_size

    def before_round(self) -> None:
        """Drop the batches the workers loaded ahead since the last round, so that the timed
        steps pay for their data as the tutorial's steady state does."""
        for _ in range(self.loader.num_workers * (self.loader.prefetch_factor or 0)):
            self._next_batch()

    def after_round(self) -> None:
        """Let the workers load ahead now, untimed, rather than during another loop's round."""
        time.sleep(REFILL_S)

    def close(self) -> None:
        del self.batches  # stops the worker processes


PLAIN = {Project: nn.ConvTranspose2d, Score: nn.Conv2d}


def _plain_layers(net: nn.Sequential) -> nn.Sequential:
    """``net`` with ganexp's matrix-product layers (Project, Score) as the plain convolutions
    they compute, with the same weights."""
    layers = []
    for layer in net:
        if isinstance(layer, Project | Score):
            plain = PLAIN[type(layer)](
                layer.in_channels,
                layer.out_channels,
                layer.kernel_size,
                layer.stride,
                layer.padding,
                bias=layer.bias is not None,
            )
            plain.load_state_dict(layer.state_dict())
            layer = plain
        layers.append(layer)
    return nn.Sequential(*layers)


class GanexpLoop:
    """``trainer.run_step()`` of a session from ``ganexp.session.run.setup``: the hot loop, no
    hooks."""

    def __init__(self, variant: Variant, run_dir: Path) -> None:
        self.label = variant.label
        self.session = make_session(variant.overrides, run_dir)
        self.trainer = self.session.trainer
        self.device = self.trainer.device
        self.in_effect = ""

    def step(self) -> int:
        self.trainer.run_step()
        self.trainer.step += 1  # as train() counts them (R1's lazy interval reads the step)
        return self.trainer.batch_size * self.trainer.n_critic

    def probe(self) -> None:
        """What the variant's settings did, seen from the objects: one more step with a forward
        hook on a convolution of D (its output dtype and memory layout), the optimizer's flags,
        and whether the networks are compiled."""
        trainer = self.trainer
        opt = trainer.opt_d.defaults
        adam = "fused" if opt.get("fused") else "foreach" if opt.get("foreach") else "for_loop"
        parts = [f"{type(trainer.opt_d).__name__.lower()}={adam}"]
        if any(_compiled(net) for net in (trainer.generator, trainer.discriminator)):
            self.in_effect = ", ".join(["compiled", *parts])
            return
        conv = next(
            (
                m
                for m in trainer.discriminator.modules()
                if isinstance(m, nn.Conv2d) and m.in_channels > 1
            ),
            None,
        )
        seen: dict[str, str] = {}
        if conv is not None:

            def record(module: nn.Module, args: Any, out: torch.Tensor) -> None:
                last = out.is_contiguous(memory_format=torch.channels_last)
                seen["dtype"] = str(out.dtype).removeprefix("torch.").replace("bfloat16", "bf16")
                seen["layout"] = "channels_last" if last and not out.is_contiguous() else "NCHW"

            handle = conv.register_forward_hook(record)
            try:
                trainer.run_step()
            finally:
                handle.remove()
        self.in_effect = ", ".join([seen.get("dtype", "?"), seen.get("layout", "?"), *parts])

    def close(self) -> None:
        self.session.tracker.finish(0)


def _compiled(module: nn.Module) -> bool:
    """torch.compile(module) wraps it (``_orig_mod``); module.compile() sets a compiled call."""
    return hasattr(module, "_orig_mod") or getattr(module, "_compiled_call_impl", None) is not None


# -- interleaved timing --------------------------------------------------------------------------
@dataclass
class Timing:
    """One loop's figures: img/s per round, and its warm-up."""

    label: str
    in_effect: str = ""
    setup_s: float = float("nan")
    warmup_s: list[float] = field(default_factory=list)
    img_per_s: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)  # to the tutorial, within each round
    status: str = "ok"  # ok | skipped (...) | failed (...)

    def summary(self, batch: int) -> dict[str, Any]:
        steady = batch / median(self.img_per_s) if self.img_per_s else float("nan")
        return {
            "label": self.label,
            "status": self.status,
            "in_effect": self.in_effect,
            "img_per_s_median": median(self.img_per_s),
            "img_per_s_rounds": self.img_per_s,
            "ratio_to_tutorial_median": median(self.ratios),
            "ratio_to_tutorial_rounds": self.ratios,
            "step_s_median": steady,
            "setup_s": self.setup_s,
            "warmup_steps_s": self.warmup_s,
            "warmup_overhead_s": sum(self.warmup_s) - len(self.warmup_s) * steady,
        }


def _timed_steps(loop: Any, steps: int) -> float:
    """img/s of ``steps`` consecutive steps."""
    gc.collect()
    getattr(loop, "before_round", lambda: None)()
    start = time.perf_counter()
    images = sum(loop.step() for _ in range(steps))
    sync(loop.device)
    img_per_s = images / (time.perf_counter() - start)
    getattr(loop, "after_round", lambda: None)()
    return img_per_s


def interleaved(
    variants: list[Variant], run_dir: Path, *, rounds: int, steps: int, warmup: int, batch: int
) -> list[Timing]:
    """Build every loop, warm each up, then time them in rotating rounds."""
    timings: dict[str, Timing] = {}
    loops: list[Any] = []
    builders: list[tuple[str, Callable[[], Any]]] = [(TUTORIAL, lambda: TutorialLoop(batch))]
    for i, variant in enumerate(variants):
        builders.append((variant.label, lambda v=variant, i=i: GanexpLoop(v, run_dir / f"v{i}")))
    for label, build in builders:
        timing = timings[label] = Timing(label)
        try:
            start = time.perf_counter()
            loop = build()
            timing.setup_s = time.perf_counter() - start
            timing.in_effect = loop.in_effect
            for _ in range(warmup):
                start = time.perf_counter()
                loop.step()
                sync(loop.device)
                timing.warmup_s.append(time.perf_counter() - start)
            loops.append(loop)
        except Exception as error:  # a missing key is a ConfigError; anything else is a bug
            kind = "skipped" if isinstance(error, ConfigError) else "failed"
            timing.status = f"{kind} ({short_error(error)})"
        print(f"  ready: {label} ({timing.status})", flush=True)

    for r in range(rounds):
        shift = r % len(loops)
        per_round: dict[str, float] = {}
        for loop in loops[shift:] + loops[:shift]:
            timing = timings[loop.label]
            if timing.status != "ok":
                continue
            try:
                per_round[loop.label] = _timed_steps(loop, steps)
            except Exception as error:
                timing.status = f"failed ({short_error(error)})"
        for label, img_per_s in per_round.items():
            timings[label].img_per_s.append(img_per_s)
            if TUTORIAL in per_round:
                timings[label].ratios.append(img_per_s / per_round[TUTORIAL])
        shown = ", ".join(f"{v:.0f}" for v in per_round.values())
        print(f"  round {r + 1}/{rounds}: img/s {shown}", flush=True)

    for loop in loops:
        if isinstance(loop, GanexpLoop) and timings[loop.label].status == "ok":
            try:
                loop.probe()
                timings[loop.label].in_effect = loop.in_effect
            except Exception as error:
                timings[loop.label].in_effect = f"probe failed ({short_error(error)})"
        loop.close()
    return list(timings.values())


# -- hook overhead -------------------------------------------------------------------------------
@dataclass
class HookTime:
    """Time spent in one hook during ``train()``."""

    name: str
    every: int  # its interval (0: runs every step)
    calls: int = 0
    fired: int = 0
    fired_s: float = 0.0
    idle_s: float = 0.0  # calls on steps where its interval did not fire (or every step)
    fixed_s: float = 0.0  # before_train and after_train

    @property
    def total_s(self) -> float:
        return self.fired_s + self.idle_s + self.fixed_s

    def per_step_s(self) -> float:
        return self.idle_s / max(self.calls - self.fired, 1)

    def per_firing_s(self) -> float:
        """Extra cost of a step on which the interval fires."""
        return self.fired_s / self.fired - self.per_step_s() if self.fired else 0.0

    def projected_s(self, steps: int) -> float:
        """Its time in a run of ``steps`` steps: every step, each firing, before/after."""
        return self.per_step_s() * steps + self.per_firing_s() * firings(steps, self.every)


def firings(steps: int, every: int) -> int:
    """How often a hook with interval ``every`` fires in ``steps`` steps (also on the last)."""
    if every <= 0:
        return 0
    return steps // every + (1 if steps % every else 0)


def _instrument(hooks: list[Any]) -> list[HookTime]:
    """Wrap every hook's methods (on the instance) with a timer."""
    records = []
    for hook in hooks:
        record = HookTime(type(hook).__name__, int(getattr(hook, "every", 0) or 0))
        records.append(record)
        for name in ("before_train", "after_train"):
            setattr(hook, name, _fixed_timer(getattr(hook, name), record))
        hook.after_step = _step_timer(hook, hook.after_step, record)
    return records


def _fixed_timer(method: Callable[[Any], None], record: HookTime) -> Callable[[Any], None]:
    def timed(trainer: Any) -> None:
        start = time.perf_counter()
        method(trainer)
        record.fixed_s += time.perf_counter() - start

    return timed


def _step_timer(hook: Any, method: Callable[[Any], None], record: HookTime) -> Callable:
    def timed(trainer: Any) -> None:
        fires = record.every > 0 and hook.due(trainer)
        start = time.perf_counter()
        method(trainer)
        elapsed = time.perf_counter() - start
        record.calls += 1
        if fires:
            record.fired += 1
            record.fired_s += elapsed
        else:
            record.idle_s += elapsed

    return timed


def _hot_step_s(trainer: Any, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        trainer.run_step()
    sync(trainer.device)
    return (time.perf_counter() - start) / steps


def hook_overhead(run_dir: Path, *, max_steps: int, hot_steps: int) -> dict[str, Any]:
    """``trainer.train()`` of a default session for ``max_steps`` steps, hooks timed."""
    _, default = compose_config(QUIET)
    session = make_session([f"trainer.max_steps={max_steps}"], run_dir)
    trainer = session.trainer
    _hot_step_s(trainer, 2)  # warm-up
    hot_before = _hot_step_s(trainer, hot_steps)
    records = _instrument(trainer.hooks)
    with contextlib.redirect_stderr(io.StringIO()):  # the progress bar (a hook like the others)
        start = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - start
    hot_after = _hot_step_s(trainer, hot_steps)
    session.tracker.finish(0)

    hot = (hot_before + hot_after) / 2
    in_hooks = sum(r.total_s for r in records)
    runs = default.trainer.max_steps
    projected = sum(r.projected_s(runs) for r in records) + sum(r.fixed_s for r in records)
    logged = [
        json.loads(line).get("perf/img_per_s")
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    tc = default.trainer
    return {
        "max_steps": max_steps,
        "intervals": {
            "log_every": tc.log_every,
            "sample_every": tc.sample_every,
            "checkpoint_every": tc.checkpoint_every,
        },
        "hot_step_s": {"before": hot_before, "after": hot_after, "mean": hot},
        "train_step_s": train_s / max_steps,
        "train_vs_hot": train_s / max_steps / hot - 1,
        "in_hooks_s": in_hooks,
        "in_hooks_fraction_of_train": in_hooks / train_s,
        "hooks": [
            {
                "name": r.name,
                "every": r.every,
                "calls": r.calls,
                "fired": r.fired,
                "total_s": r.total_s,
                "per_step_ms": 1e3 * r.per_step_s(),
                "per_firing_ms": 1e3 * r.per_firing_s(),
                "before_after_train_ms": 1e3 * r.fixed_s,
            }
            for r in records
        ],
        "default_run_steps": runs,
        "projected_default_run_hooks_s": projected,
        "projected_default_run_overhead": projected / (runs * hot),
        "ganexp_logged_img_per_s": [v for v in logged if v is not None],
    }
