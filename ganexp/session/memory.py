"""Whether a run fits the device's memory, estimated before it starts, at no memory cost.

The estimate, in bytes, for one process:

- networks: parameters and buffers (and those of G's EMA, and both players' historical means),
  one gradient per parameter, and the optimizer's state (Adam keeps two copies of the
  parameters, RMSprop one). Exact.
- a training step: the output of every layer, measured with forward hooks while both networks run
  on the meta device (shapes only). The last critic step keeps G's graph for one batch and D's for
  two (real and fake) until its backward pass; WGAN-GP's penalty runs D once more and keeps the
  graph of its input gradient for the double backward, counted as two more D passes (R1, on the
  real batch, two more again). The sum is
  multiplied by ``STEP_FACTOR``: autograd also keeps some inputs (a norm layer keeps what it
  normalized, an activation what it activated) and the backward pass holds the gradients of the
  activations as it goes. Measured on the CPU (peak resident memory of real steps, DCGAN with
  each norm, WGAN-GP, MLPs), a step took 1.1 to 1.9 times the layer outputs. Sizes are fp32;
  bf16/fp16 autocast makes some smaller, so it errs high.
- a step's copy of what it puts back when a stop signal abandons it (several critic steps only):
  D, its optimizer state, G's buffers (and D's historical mean). Exact.
- the training set, when it is held as one uint8 tensor (``data.loader`` tensor, or auto on an
  array-backed set), and once more while evaluation reads its real images from a copy of it.
- evaluation: G on batches of up to 500 (all samples at once for toy data), and the features of
  the generated and real sets. The feature extractor's own activations are not counted: its
  weights are only read at the first evaluation.
- the sample grid: G on all of ``trainer.num_samples`` at once (16 times as many toy points).

Training, evaluation and the grid do not overlap, so the largest counts, on top of the networks
and the training set. Each layer's output grows linearly with the batch, so two forward passes
(batches of 2 and 4) give any batch's sizes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ganexp.config import OptimName, RunConfig
from ganexp.data import DataSpec
from ganexp.errors import ConfigError
from ganexp.parts.losses import build_loss
from ganexp.parts.terms import loss_terms
from ganexp.tasks import task_of

STEP_FACTOR = 2
EVAL_BATCH = 500  # ganexp.metrics.evaluator.BATCH: generated images per batch
FEATURE_DIM = 2048  # the widest feature extractor (Inception's pool features)
DISTANCE_BLOCK = 1024  # ganexp.metrics.manifold: rows of each distance block
GIB = 2**30


@dataclass(frozen=True)
class Activations:
    """Bytes of a network's layer outputs for a batch of ``n``: ``per_example * n + fixed``."""

    per_example: int
    fixed: int

    def at(self, n: int) -> int:
        return self.per_example * n + self.fixed


@dataclass(frozen=True)
class Estimate:
    """Bytes one process of a run needs, by what needs them; ``network_key`` names the larger
    network's width (the key to lower when the networks dominate)."""

    weights: int
    gradients: int
    optimizer: int
    rewind: int
    step: int
    data: int
    evaluation: int
    samples: int
    network_key: str

    @property
    def total(self) -> int:
        return self.networks + self.data + self.peak_work

    @property
    def networks(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.rewind

    @property
    def peak_work(self) -> int:
        return max(self.step, self.evaluation, self.samples)


def _tensor_bytes(output: object) -> int:
    if isinstance(output, torch.Tensor):
        return output.numel() * output.element_size()
    if isinstance(output, tuple | list):
        return sum(_tensor_bytes(o) for o in output)
    return 0


def _output_bytes(net: nn.Module, *inputs: torch.Tensor | None) -> int:
    """Bytes of every new layer output and of the inputs for one
    forward pass of ``net``, which lives on the meta device."""
    total = sum(_tensor_bytes(x) for x in inputs)

    def count(module: nn.Module, args: tuple[object, ...], output: object) -> None:
        nonlocal total
        if not any(output is arg for arg in args):  # in place, or nn.Identity
            total += _tensor_bytes(output)

    # layers: modules without children, or whose only child holds their weight parametrizations
    layers = [
        m for m in net.modules() if {n for n, _ in m.named_children()} <= {"parametrizations"}
    ]
    handles = [m.register_forward_hook(count) for m in layers]
    try:
        net(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return total


def activations(
    generator: nn.Module, discriminator: nn.Module, cfg: RunConfig, spec: DataSpec
) -> tuple[Activations, Activations]:
    """Layer output bytes of G and of D, as linear functions of the batch (meta networks)."""
    labelled = cfg.conditional and spec.num_classes > 0
    measured: dict[str, list[int]] = {"g": [], "d": []}
    pack = cfg.discriminator.pack  # D takes whole packs of samples
    for n in (2 * pack, 4 * pack):
        with torch.device("meta"):
            z = torch.empty(n, cfg.trainer.z_dim)
            x = torch.empty(n, *spec.shape)
            labels = torch.zeros(n, dtype=torch.long) if labelled else None
            if spec.condition_channels:  # translation: the input images
                labels = torch.empty(n, spec.condition_channels, *spec.shape[1:])
            measured["g"].append(_output_bytes(generator, z, labels))
            measured["d"].append(_output_bytes(discriminator, x, labels))
    lines = []
    for two, four in measured.values():
        per_example = (four - two) // (2 * pack)
        lines.append(Activations(per_example, two - 2 * pack * per_example))
    return lines[0], lines[1]


def _parameter_bytes(net: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in net.parameters())


def _buffer_bytes(net: nn.Module) -> int:
    return sum(b.numel() * b.element_size() for b in net.buffers())


def estimate(
    cfg: RunConfig,
    spec: DataSpec,
    generator: nn.Module,
    discriminator: nn.Module,
    processes: int = 1,
    *,
    tensor_data: bool,
    stacked: bool = True,
) -> Estimate:
    """What one of ``processes`` processes needs for ``cfg``; the networks are built on the meta
    device (:func:`ganexp.session.build.check_buildable`); ``tensor_data``: the training set is
    held as
    one tensor (:func:`ganexp.data.data_plan`). With ``trainer.replicas`` K, each replica holds
    its own networks, optimizer state and training set, and ``stacked`` replicas take their
    step at once (in turn, one step's activations at a time); evaluation's real side is shared,
    and one replica evaluates at a time."""
    act_g, act_d = activations(generator, discriminator, cfg, spec)
    batch = max(cfg.trainer.batch_size // processes, 1)
    # real and fake, and two more (a forward and its double backward) per penalty on D's input
    terms = loss_terms(cfg.loss, build_loss(cfg.loss), generator, discriminator)
    d_passes = 2 + 2 * sum(term.penalty for term in terms)
    # the task's passes (unpaired translation: both domains, translated there and back)
    task = task_of(cfg)
    batch, g_passes = task.step_load(batch)
    step = STEP_FACTOR * (g_passes * act_g.at(batch) + d_passes * act_d.at(batch))

    g_params, d_params = _parameter_bytes(generator), _parameter_bytes(discriminator)
    params = g_params + d_params
    copies = 2 if cfg.optim.name == OptimName.adam else 1
    buffers = _buffer_bytes(generator) + _buffer_bytes(discriminator)
    ema = g_params + _buffer_bytes(generator) if cfg.trainer.ema_decay else 0  # G's EMA copy
    historical = params if cfg.loss.historical_weight else 0  # each player's mean parameters
    # networks the task trains beside G and D (semi-supervised: the baseline, a copy of D)
    extra = task.extra_networks(generator, discriminator)
    baseline = sum(_parameter_bytes(net) for net in extra)
    baseline_buffers = sum(_buffer_bytes(net) for net in extra)
    # with several critic steps, each step starts with a copy of what it may have to put back:
    # D, its optimizer state and G's buffers (ganexp.engine.trainer.Trainer.rewind_step)
    rewind = 0
    if cfg.trainer.n_critic > 1:
        rewind = (1 + copies) * d_params + _buffer_bytes(discriminator) + _buffer_bytes(generator)
        rewind += d_params if cfg.loss.historical_weight else 0  # D's historical mean

    data = 0
    if spec.size is not None and tensor_data:
        channels = spec.shape[0] + spec.condition_channels  # translation: A and B
        data = spec.size * channels * spec.shape[1] * spec.shape[2]

    evaluation = 0
    if cfg.metrics.enabled:
        n = cfg.metrics.num_samples
        if spec.kind == "points":
            evaluation = act_g.at(n) + n * cfg.trainer.z_dim * 4
        else:
            features = 3 * n * FEATURE_DIM * 4 + DISTANCE_BLOCK * n * 4
            evaluation = act_g.at(min(n, EVAL_BATCH)) + features + data

    plotted = cfg.trainer.num_samples * (16 if spec.kind == "points" else 1)
    samples = act_g.at(plotted)

    network_key = "generator.width" if g_params >= d_params else "discriminator.width"
    k = cfg.trainer.replicas
    return Estimate(
        weights=k * (params + buffers + ema + historical + baseline + baseline_buffers),
        gradients=k * (params + baseline),
        optimizer=k * copies * (params + baseline),
        rewind=k * rewind,
        step=(k if stacked else 1) * step,
        data=k * data,
        evaluation=evaluation,
        samples=samples,
        network_key=network_key,
    )


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def cpu_available() -> int | None:
    """Bytes this process can still take: MemAvailable, or less under a cgroup memory limit
    (a container, a Slurm job); None where neither can be read (not Linux)."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    cgroups = (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    )
    for limit_file, usage_file in cgroups:
        limit, usage = _read_int(Path(limit_file)), _read_int(Path(usage_file))
        if limit is not None and usage is not None and available is not None:
            available = min(available, max(limit - usage, 0))
    return available


def available(device: torch.device) -> int | None:
    """Free bytes on ``device``; None where there is no way to ask (MPS)."""
    if device.type == "cuda":
        index = device.index if device.index is not None else int(os.environ.get("LOCAL_RANK", 0))
        return torch.cuda.mem_get_info(index)[0]
    if device.type == "cpu":
        return cpu_available()
    return None


def _gib(n: int) -> str:
    return f"{n / GIB:.1f}" if n < 10 * GIB else f"{n / GIB:.0f}"


def check_memory(cfg: RunConfig, need: Estimate, device: torch.device) -> None:
    """ConfigError naming the key that dominates when ``need`` exceeds what ``device`` has."""
    free = available(device)
    if free is None or need.total <= free:
        return
    parts = {
        "networks": need.networks,
        "step": need.step,
        "data": need.data,
        "evaluation": need.evaluation,
        "samples": need.samples,
    }
    largest = max(parts, key=parts.__getitem__)
    where = f"{_gib(free)} GiB available on {device.type}"
    about = f"about {_gib(need.total)} GiB (estimate), {where}"
    replicas = cfg.trainer.replicas
    if replicas > 1 and largest in ("networks", "step", "data"):  # what grows with replicas
        what = f"{replicas} replicas need {about}; lower trainer.replicas"
        raise ConfigError("trainer.replicas", replicas, what)
    if largest == "step":
        key, value = "trainer.batch_size", cfg.trainer.batch_size
        what = f"a training step needs {about}; lower trainer.batch_size"
    elif largest == "networks":
        key = need.network_key
        value = getattr(cfg, key.split(".")[0]).width
        what = f"the networks and their optimizer state need {about}; lower {key}"
    elif largest == "data":
        key, value = "data.loader", str(cfg.data.loader)
        what = f"the training set held as one tensor needs {about}; use data.loader=dataloader"
    elif largest == "samples":
        key, value = "trainer.num_samples", cfg.trainer.num_samples
        what = f"the sample grid needs {about}; lower trainer.num_samples"
    else:
        key, value = "metrics.num_samples", cfg.metrics.num_samples
        what = f"evaluation needs {about}; lower metrics.num_samples"
    raise ConfigError(key, value, what)
