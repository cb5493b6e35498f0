"""The typed schema of a run, and the checks every value passes before anything runs.

The schema is registered with Hydra's ConfigStore as the base of ``config.yaml``, so every key
exists (and can be overridden without ``+``) and has a type that Hydra enforces while composing.
:func:`validate` adds the range and cross-field checks that types cannot express. Every failure is a
:class:`~ganexp.errors.ConfigError`: one line naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.errors import MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    InterpolationResolutionError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

from ganexp.errors import ConfigError


class Norm(StrEnum):
    batch = "batch"
    layer = "layer"
    instance = "instance"
    group = "group"
    spectral = "spectral"
    none = "none"
    virtual_batch = "virtual_batch"  # generator only (Salimans et al. 2016)
    custom = "custom"  # the user's norm class, norm._target_


class LossName(StrEnum):
    bce = "bce"
    wgan_clip = "wgan_clip"
    wgan_gp = "wgan_gp"
    hinge = "hinge"
    lsgan = "lsgan"


class OptimName(StrEnum):
    adam = "adam"
    rmsprop = "rmsprop"
    sgd = "sgd"  # plain gradient descent, no momentum (the Dirac-GAN's)


class Arch(StrEnum):
    mlp = "mlp"
    dcgan = "dcgan"
    resnet = "resnet"  # SNGAN's / WGAN-GP's CIFAR ResNets
    unet = "unet"  # generator, translation: Pix2Pix's U-Net (ganexp.models.translation)
    patch = "patch"  # discriminator, translation: PatchGAN, one logit per patch
    resnet_blocks = "resnet_blocks"  # generator, translation: CycleGAN's, depth residual blocks
    dirac = "dirac"  # data=dirac only: G(z) = theta, D(x) = psi x (ganexp.models.dirac)


class Activation(StrEnum):
    default = "default"  # ReLU in G, LeakyReLU(0.2) in D
    relu = "relu"
    leaky_relu = "leaky_relu"
    maxout = "maxout"  # mlp only: max over net.maxout_pieces linear pieces (Goodfellow et al. 2013)
    tanh = "tanh"  # the unrolled-GAN notebook's (poolio/unrolled_gan)


class Init(StrEnum):
    default = "default"  # PyTorch's own layer initialization
    dcgan = "dcgan"  # weights N(0, 0.02), biases 0 (DCGAN, PacGAN)
    xavier = "xavier"
    orthogonal = "orthogonal"
    kaiming = "kaiming"


class LoggerMode(StrEnum):
    auto = "auto"
    online = "online"
    offline = "offline"
    disabled = "disabled"


class CheckpointUpload(StrEnum):
    auto = "auto"  # online runs only
    always = "always"
    never = "never"


class DeviceName(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Loader(StrEnum):
    auto = "auto"
    tensor = "tensor"
    dataloader = "dataloader"


@dataclass
class DataConfig:
    # the data set: image files, a toy 2-D mixture or translation pairs (conf/data/)
    name: str = "fashion_mnist"
    root: str | None = None  # a folder holding the dataset's files; null = look elsewhere
    search: list[str] = field(default_factory=list)  # local copies tried after root
    download: bool = True  # torchvision's download, the last resort
    # downloads, staged copies, cached real-image statistics
    cache_dir: str = "${oc.env:GANEXP_CACHE,'~/.cache/ganexp'}"
    limit: int | None = None  # cap on training examples (smoke runs)
    image_size: int = 32  # images are resized to this square size
    channels: int = 1  # 1 (grey) or 3 (RGB); image folders are converted to it
    num_classes: int | None = 10  # 0: unlabelled; null: counted from the data (image_folder)
    loader: Loader = Loader.auto  # tensor: whole set on the device; dataloader: torch DataLoader
    num_workers: int = 0  # dataloader worker processes (loader=dataloader)
    # check downloaded and found files against the data set's checksums
    verify_checksums: bool = True
    # toy 2-D mixtures (PacGAN parameters)
    modes: int = 0
    radius: float = 1.0  # ring8: the ring's radius
    spacing: float = 2.0  # grid25: the distance between neighbouring modes
    std: float = 0.01  # each mode's standard deviation
    scale: float = 1.0  # toy points are divided by this (the WGAN-GP toy code's 1.414, 2.828)
    train_size: int = 0  # toy: a fixed set of this many points, resampled; 0: fresh every batch
    augment: str = "none"  # none | diffaug: D sees real and fake through DiffAugment (images)
    # DiffAugment's transforms, applied in this order
    augment_policy: list[str] = field(default_factory=lambda: ["color", "translation", "cutout"])
    # task=semi_supervised: the labelled subset, this many training examples of each class
    labels_per_class: int | None = None  # null: every example keeps its label
    labels_seed: int = 0  # which examples are labelled (the same for every run seed)
    # data=fashion_domains (task=unpaired_translation): the classes of domains A and B
    domain_classes: list[int] = field(default_factory=lambda: [7, 9])  # sneaker, ankle boot


@dataclass
class UserClass:
    """A node that may name the user's own class (``_target_``, ganexp.parts.user): its keys that
    the schema lacks are that class's constructor keywords, which :func:`validate` collects
    into ``parameters`` (an attribute, not a config key)."""

    _target_: str | None = None  # the user's own class, module.Class (docs/your-own-parts.md)

    def __post_init__(self) -> None:
        self.parameters: dict[str, Any] = {}


@dataclass
class NetConfig(UserClass):
    """A built-in network (``arch`` and the keys below), or the user's nn.Module class
    (``_target_``), which ignores them."""

    arch: Arch = Arch.dcgan  # the architecture (conf/generator/, conf/discriminator/)
    width: int = 64  # base channel count (dcgan; resnet: every block's) or hidden units (mlp)
    depth: int = 0  # extra 3x3 layers (dcgan) or residual blocks (resnet); mlp: hidden layers
    activation: Activation = Activation.default  # the hidden layers' nonlinearity
    maxout_pieces: int = 5  # activation=maxout only
    init: Init = Init.default  # how weights are initialized
    init_gain: float = 1.0  # init=orthogonal: the gain (the unrolled-GAN notebook's 1.4)
    pack: int = 1  # discriminator only: D judges packs of this many samples (PacGAN)
    # discriminator only: none | minibatch_discrimination | minibatch_stddev
    batch_view: str = "none"
    minibatch_kernels: int = 100  # minibatch_discrimination: B kernels (Salimans et al.)
    minibatch_kernel_dims: int = 5  # minibatch_discrimination: C dims per kernel
    stddev_group: int = 4  # minibatch_stddev: samples per group (Karras et al.)
    conditioning: str = "concat"  # cGAN: concat | cbn (generator) | projection (discriminator)
    start: float = 1.0  # dirac only: the network's one parameter at step 0 (theta, psi)


@dataclass
class NormConfig(UserClass):
    """Each network's norm; ``custom`` is the user's class named by ``_target_``."""

    generator: Norm = Norm.batch  # the generator's norm layers
    discriminator: Norm = Norm.batch  # the discriminator's norm layers
    num_groups: int = 8  # group norm: channels per layer are split into this many groups
    eps: float = 1e-5  # every norm layer's epsilon
    sync_batchnorm: bool = False  # several processes: batch norm over the whole batch (CUDA)


@dataclass
class LossConfig(UserClass):
    """A built-in loss (``name``), or the user's own class (``_target_``, a GANLoss subclass),
    whose constructor keywords are the node's other keys (the one node Hydra lets hold keys the
    schema lacks; :func:`validate` checks them against the class)."""

    name: LossName = LossName.bce  # the adversarial loss (conf/loss/)
    # non_saturating | minimax (bce only) | feature_matching (any loss; Salimans et al. 2016)
    generator_loss: str = "non_saturating"
    label_smoothing: float = 0.0  # bce only: one-sided, real target = 1 - label_smoothing
    clip_value: float = 0.01  # wgan_clip only
    gp_weight: float = 10.0  # wgan_gp only
    r1_weight: float = 0.0  # any loss: gamma of the R1 penalty on real data (0: off)
    r1_every: int = 1  # R1 on every k-th critic step, weighted by k (lazy regularization)
    historical_weight: float = 0.0  # any loss: historical averaging of both players (0: off)
    # any loss: instance noise, N(0, sigma^2) added to every input of D, real and fake (0: off)
    instance_noise: float = 0.0
    # any loss, with trainer.simultaneous: consensus optimization's gamma (Mescheder et al. 2017)
    consensus_weight: float = 0.0
    # any loss: G's loss against D after this many look-ahead steps of D's optimizer, taken
    # differentiably (unrolled GAN, Metz et al. 2017); 0: off
    unrolled_steps: int = 0


@dataclass
class OptimConfig:
    name: OptimName = OptimName.adam  # the optimizer of both networks
    lr_g: float = 2e-4  # the generator's learning rate
    lr_d: float = 2e-4  # the discriminator's learning rate
    beta1: float = 0.5  # adam only
    beta2: float = 0.999  # adam only
    weight_decay: float = 0.0  # L2 weight decay of both optimizers
    implementation: str = "auto"  # auto | foreach | fused | for_loop (auto: fused Adam)


@dataclass
class TrainerConfig:
    max_steps: int = 1000  # generator steps; each follows n_critic discriminator steps
    batch_size: int = 128  # samples per critic step (each real batch and each fake batch)
    n_critic: int = 1  # discriminator steps per generator step
    # true: G's gradient is taken at D's parameters before D's step, and both step together
    # (simultaneous gradient descent); false: D steps first, then G (alternating)
    simultaneous: bool = False
    z_dim: int = 100  # the noise vector's size
    log_every: int = 50  # steps between rows of metrics.jsonl and W&B
    sample_every: int = 250  # steps between fixed-noise sample grids
    eval_every: int = 0  # 0 = only at the end
    # steps between checkpoints (and one at the end and on a stop signal)
    checkpoint_every: int = 500
    keep_checkpoints: int = 3  # step checkpoints kept besides last.pt and best.pt
    skip_nonfinite: bool = False  # true: skip optimizer steps on NaN/Inf losses instead of stopping
    ema_decay: float = 0.0  # > 0: samples, evaluation and best.pt use an EMA of G (0: off)
    replicas: int = 1  # K > 1: seeds seed .. seed+K-1 trained as one stacked model (replica_k/)
    num_samples: int = 64  # images in the fixed-noise grid (rounded to one row per class for cGAN)
    progress_bar: bool = True  # a tqdm bar on the terminal
    profile: bool = False  # a torch.profiler trace of a few steps in the run folder's profile/


@dataclass
class LoggerConfig:
    name: str = "wandb"  # wandb | none
    mode: LoggerMode = LoggerMode.auto  # auto: online with W&B credentials, else offline
    project: str = "ganexp"  # the W&B project
    entity: str | None = None  # the W&B entity (user or team); null: the default
    group: str | None = None  # default: the experiment name, or the sweep dir for -m
    tags: list[str] = field(default_factory=list)  # extra W&B tags
    watch: bool = False  # W&B histograms of both networks' gradients (wandb.watch)
    log_checkpoints: CheckpointUpload = CheckpointUpload.auto  # as W&B model artifacts


@dataclass
class MetricsConfig:
    enabled: bool = True  # evaluate at all (eval/... keys, best.pt)
    num_samples: int = 10000  # generated images, and as many real ones (and as many again: floor)
    features: str = "auto"  # auto | inception | classifier
    inception_weights: str | None = None  # a copy of the FID Inception file (null: installed)


@dataclass
class DeviceConfig:
    name: DeviceName = DeviceName.auto  # auto: cuda, then mps, then cpu
    deterministic: bool = False  # CUDA: deterministic kernels, same results run to run (slower)
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (auto: bf16 on CUDA GPUs that have it)
    channels_last: bool | None = None  # null: on for conv networks on cpu and cuda
    compile: bool = False  # torch.compile both networks (opt-in; falls back with a message)


@dataclass
class TaskConfig:
    """What the run learns: ``generation`` (unconditional, or a cGAN with conditional=true),
    ``semi_supervised`` (D a classifier of the data's classes, Salimans et al. 2016) or
    ``paired_translation`` (G translates input images to targets, Pix2Pix, Isola et al. 2017)
    or ``unpaired_translation`` (two G translate between two domains, CycleGAN, Zhu et al.
    2017)."""

    name: str = "generation"  # what the run learns (conf/task/)
    supervised_weight: float = 2.0  # semi_supervised: D's cross-entropy on labelled batches
    l1_weight: float = 100.0  # paired_translation: lambda of G's L1 term |G(a) - b|
    cycle_weight: float = 10.0  # unpaired_translation: lambda of the cycle term
    identity_weight: float = 5.0  # unpaired_translation: the identity term's (0.5 x lambda)
    pool_size: int = 50  # unpaired_translation: past fakes each D is shown (0: none)


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    generator: NetConfig = field(default_factory=NetConfig)
    discriminator: NetConfig = field(default_factory=NetConfig)
    norm: NormConfig = field(default_factory=NormConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    seed: int = 0  # seeds every random stream of the run
    conditional: bool = False  # cGAN: one-hot labels into G (with z) and D (with x)
    resume: str | None = None  # a run folder or checkpoint to continue from
    # published numbers a study preset is compared with, one mapping per row: where (swept
    # axis -> value), metric, mean, pm, pm_kind (SE | SD | none: no spread printed, pm null), n,
    # source (ganexp/analysis/cells.py)
    paper: list[Any] = field(default_factory=list)


CONFIG_MODULE = "ganexp.conf"  # the config groups and presets, as a package Hydra reads
USER_PARTS = ("loss", "generator", "discriminator", "norm")  # nodes that may name a _target_


def schema() -> DictConfig:
    """RunConfig as a config with its defaults, typed, and closed to unknown keys except in
    the nodes that may name a user's class (``_target_``), which takes keys of its own."""
    typed = OmegaConf.structured(RunConfig)
    for node in USER_PARTS:
        OmegaConf.set_struct(typed[node], False)
    return typed


def register_schema() -> None:
    """Make ``ganexp_schema`` available as the first entry of config.yaml's defaults list."""
    ConfigStore.instance().store(name="ganexp_schema", node=schema())
    # ${mul:a,b}: a size derived from another key, e.g. PacGAN's batch of 100 packs of m samples
    OmegaConf.register_new_resolver("mul", lambda a, b: a * b, replace=True)
    # ${circle:k,n,radius,phase,axis}: x or y of the k-th of n points evenly on a circle, the
    # first at phase degrees, e.g. the Dirac-GAN's start points by seed
    OmegaConf.register_new_resolver("circle", circle, replace=True)


def circle(k: int, n: int, radius: float, phase: float, axis: str) -> float:
    """The ``axis`` ("x" or "y") coordinate of the ``k``-th of ``n`` points evenly spaced on a
    circle of ``radius``, the 0-th at ``phase`` degrees."""
    if axis not in ("x", "y"):
        raise ValueError(f"circle's axis is x or y, not {axis!r}")
    angle = math.radians(phase + 360 * (k % n) / n)
    return radius * (math.cos(angle) if axis == "x" else math.sin(angle))


PAIRED_DATASETS = ("fashion_edges", "pix2pix_folder")  # task=paired_translation's (A, B) pairs
UNPAIRED_DATASETS = ("fashion_domains", "cyclegan_folder")  # task=unpaired_translation's A, B
DATASETS = (
    "fashion_mnist",
    "mnist",
    "cifar10",
    "image_folder",
    "ring8",
    "grid25",
    "swissroll",
    "dirac",
    *PAIRED_DATASETS,
    *UNPAIRED_DATASETS,
)
GENERATOR_LOSSES = ("non_saturating", "minimax", "feature_matching")
AUGMENTS = ("none", "diffaug")
BATCH_VIEWS = ("none", "minibatch_discrimination", "minibatch_stddev")
AUGMENT_POLICIES = ("color", "translation", "cutout")  # ganexp.parts.augment.POLICIES
LOGGERS = ("wandb", "none")
TOY_DATA = ("ring8", "grid25", "swissroll", "dirac")  # 2-D points (dirac: 1-D), not images
FEATURES = ("auto", "inception", "classifier")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
OPTIMIZER_IMPLEMENTATIONS = ("auto", "foreach", "fused", "for_loop")
TASKS = ("generation", "semi_supervised", "paired_translation", "unpaired_translation")
# what replicas refuse (validate's _replicas; a task's own, ganexp.tasks.check)
REPLICAS_ALLOWED = "not vectorized across replicas; use it with trainer.replicas=1 (not {})"
SEED_MAX = 2**32 - 1  # numpy's seed range (seed_everything seeds numpy too)
INT_MAX = 2**63 - 1  # torch takes sizes and seeds as int64


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)


def _positive(cfg: DictConfig, *keys: str) -> None:
    for key in keys:
        value = OmegaConf.select(cfg, key)
        _require(value >= 1, key, value, "must be an integer >= 1")


def _non_negative(cfg: DictConfig, *keys: str) -> None:
    for key in keys:
        value = OmegaConf.select(cfg, key)
        _require(value >= 0, key, value, "must be >= 0")


def _unknown_keys(cfg: DictConfig, schema: type, prefix: str = "") -> None:
    """Refuse keys the schema does not have (Hydra lets ``+key=value`` add them), except in a
    node that names the user's class (``_target_``): its other keys are that class's keywords,
    checked against it when it is built."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    users_class = "_target_" in fields and cfg.get("_target_") is not None
    for key in cfg:
        value = OmegaConf.select(cfg, str(key), throw_on_resolution_failure=False)
        if key not in fields and not users_class:
            where = prefix.rstrip(".") or "the top level"
            allowed = f"no such key; keys of {where}: {', '.join(fields)}"
            raise ConfigError(f"{prefix}{key}", value, allowed)
        nested = fields[key].default_factory if key in fields else None
        if isinstance(value, DictConfig) and dataclasses.is_dataclass(nested):
            _unknown_keys(value, nested, f"{prefix}{key}.")


def _numbers(cfg: DictConfig, schema: type, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every int or float value of ``cfg`` with its key, found by walking the schema."""
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        key, hint = prefix + f.name, hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from _numbers(cfg, hint, f"{key}.")
            continue
        value = OmegaConf.select(cfg, key)
        numeric = {int, float} & ({hint} | set(typing.get_args(hint)))
        if numeric and isinstance(value, int | float) and not isinstance(value, bool):
            yield key, value


def _representable(cfg: DictConfig) -> None:
    """Floats are finite (nan and inf pass most range checks); ints fit in int64."""
    for key, value in _numbers(cfg, RunConfig):
        if isinstance(value, float):
            _require(math.isfinite(value), key, value, "must be a finite number")
        else:
            _require(abs(value) <= INT_MAX, key, value, "too large: at most 2**63 - 1")


def _resolvable(cfg: DictConfig) -> None:
    """Every ``${...}`` resolves (an unset variable, a resolver's refusal, a missing key)."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except (InterpolationResolutionError, MissingMandatoryValue) as ex:
        key = ex.full_key or "?"
        raw: Any = OmegaConf.to_container(cfg, resolve=False)  # the value as it was written
        for part in key.split("."):
            raw = raw.get(part) if isinstance(raw, dict) else None
        reason = str(ex).splitlines()[0]
        raise ConfigError(key, raw, f"cannot be resolved ({reason})") from None


def validate(cfg: DictConfig) -> RunConfig:
    """Check every value that a type cannot; return the config as typed dataclasses."""
    _resolvable(cfg)
    _unknown_keys(cfg, RunConfig)
    _representable(cfg)
    _require(0 <= cfg.seed <= SEED_MAX, "seed", cfg.seed, "must be in [0, 2**32 - 1]")
    _require(
        cfg.data.name in DATASETS, "data.name", cfg.data.name, f"allowed: {', '.join(DATASETS)}"
    )
    _positive(cfg, "trainer.max_steps", "trainer.batch_size", "trainer.n_critic", "trainer.z_dim")
    _positive(cfg, "trainer.log_every", "trainer.sample_every", "trainer.checkpoint_every")
    _positive(cfg, "trainer.num_samples", "generator.width", "discriminator.width")
    _positive(cfg, "generator.init_gain", "discriminator.init_gain")
    for net in ("generator", "discriminator"):
        gain = cfg[net].init_gain
        only_orthogonal = f"scales init=orthogonal only ({net}.init is {cfg[net].init}); leave it 1"
        _require(
            cfg[net].init == "orthogonal" or gain == 1.0, f"{net}.init_gain", gain, only_orthogonal
        )
    _positive(cfg, "norm.num_groups", "trainer.keep_checkpoints")
    n = cfg.metrics.num_samples
    _require(n >= 6, "metrics.num_samples", n, "must be >= 6 (density/coverage use 5 neighbours)")
    features = cfg.metrics.features
    _require(features in FEATURES, "metrics.features", features, _one_of(FEATURES))
    precision = cfg.device.precision
    _require(precision in PRECISIONS, "device.precision", precision, _one_of(PRECISIONS))
    impl = cfg.optim.implementation
    allowed_impl = _one_of(OPTIMIZER_IMPLEMENTATIONS)
    _require(impl in OPTIMIZER_IMPLEMENTATIONS, "optim.implementation", impl, allowed_impl)
    _non_negative(cfg, "trainer.eval_every", "generator.depth", "discriminator.depth")
    _non_negative(cfg, "data.num_workers", "optim.weight_decay", "data.modes")
    _positive(cfg, "data.image_size")
    if cfg.data.num_classes is not None:
        _non_negative(cfg, "data.num_classes")
    if cfg.data.limit is not None:
        _positive(cfg, "data.limit")
    positive = ("optim.lr_g", "optim.lr_d", "norm.eps", "loss.clip_value", "loss.gp_weight")
    _non_negative(cfg, "loss.r1_weight", "loss.historical_weight", "loss.instance_noise")
    _non_negative(cfg, "loss.consensus_weight", "loss.unrolled_steps")
    # both differentiate through D's gradient: G's adversarial loss, no fp16 loss scale
    for key in ("loss.unrolled_steps", "loss.consensus_weight"):
        value = OmegaConf.select(cfg, key)
        if not value:
            continue
        fm = cfg.loss.generator_loss == "feature_matching"
        _require(not fm, key, value, "needs G's adversarial loss, not feature_matching")
        fp16 = cfg.device.precision == "fp16"
        _require(not fp16, key, value, "not with device.precision=fp16 (its loss scale)")
    unrolled, consensus = cfg.loss.unrolled_steps, cfg.loss.consensus_weight
    if unrolled:
        _require(not consensus, "loss.unrolled_steps", unrolled, "not with loss.consensus_weight")
    if consensus:
        simultaneous = "needs trainer.simultaneous=true"
        _require(cfg.trainer.simultaneous, "loss.consensus_weight", consensus, simultaneous)
    _positive(cfg, "loss.r1_every")
    for key in (*positive, "data.radius", "data.spacing"):
        value = OmegaConf.select(cfg, key)
        _require(value > 0, key, value, "must be > 0")
    data = cfg.data
    if data.name == "dirac":
        _require(data.std == 0, "data.std", data.std, "dirac is the point 0: must be 0")
        ema = cfg.trainer.ema_decay
        live = "must be 0 with data=dirac (the study pairs the trained G's theta with D's psi)"
        _require(ema == 0, "trainer.ema_decay", ema, live)
    else:
        _require(data.std > 0, "data.std", data.std, "must be > 0")
    simultaneous = cfg.trainer.simultaneous
    one_critic_step = (
        f"takes one critic step per step: trainer.n_critic=1 (not {cfg.trainer.n_critic})"
    )
    _require(
        not simultaneous or cfg.trainer.n_critic == 1, "trainer.simultaneous", True, one_critic_step
    )
    _require(data.scale > 0, "data.scale", data.scale, "must be > 0")
    _non_negative(cfg, "data.train_size")
    if data.name not in TOY_DATA:
        for key, default in (("scale", 1.0), ("train_size", 0)):
            only_toy = "toy data only (images: data.limit)"
            _require(data[key] == default, f"data.{key}", data[key], only_toy)
    _require(data.augment in AUGMENTS, "data.augment", data.augment, _one_of(AUGMENTS))
    if data.augment == "diffaug":
        policy = list(data.augment_policy)
        good = (
            policy
            and all(p in AUGMENT_POLICIES for p in policy)
            and len(set(policy)) == len(policy)
        )
        allowed = f"a list of distinct policies from {', '.join(AUGMENT_POLICIES)}"
        _require(good, "data.augment_policy", policy, allowed)
        toy = data.name in TOY_DATA
        _require(not toy, "data.augment", data.augment, "images only (DiffAugment shifts pixels)")
    no_modes = "swissroll has no modes; leave it 0"
    _require(data.name != "swissroll" or data.modes == 0, "data.modes", data.modes, no_modes)
    for key in ("optim.beta1", "optim.beta2", "trainer.ema_decay"):
        value = OmegaConf.select(cfg, key)
        _require(0 <= value < 1, key, value, "must be in [0, 1)")
    smoothing = cfg.loss.label_smoothing
    _require(0 <= smoothing < 0.5, "loss.label_smoothing", smoothing, "must be in [0, 0.5)")
    g_loss = cfg.loss.generator_loss
    _require(g_loss in GENERATOR_LOSSES, "loss.generator_loss", g_loss, _one_of(GENERATOR_LOSSES))
    _require(cfg.logger.name in LOGGERS, "logger.name", cfg.logger.name, _one_of(LOGGERS))
    _require(cfg.data.channels in (1, 3), "data.channels", cfg.data.channels, "allowed: 1, 3")
    _positive(cfg, "discriminator.pack")
    for net in ("generator", "discriminator"):
        pieces = cfg[net].maxout_pieces
        _require(pieces >= 2, f"{net}.maxout_pieces", pieces, "must be an integer >= 2")
    pack = cfg.generator.pack
    _require(pack == 1, "generator.pack", pack, "packing is D's view of the batch: must be 1")
    view = cfg.discriminator.batch_view
    _require(view in BATCH_VIEWS, "discriminator.batch_view", view, _one_of(BATCH_VIEWS))
    g_view = cfg.generator.batch_view
    _require(
        g_view == "none", "generator.batch_view", g_view, "D's view of the batch: must be none"
    )
    keys = ("minibatch_kernels", "minibatch_kernel_dims", "stddev_group")
    _positive(cfg, *(f"discriminator.{key}" for key in keys))
    judged = cfg.trainer.batch_size // cfg.discriminator.pack  # what D sees in one call
    group = cfg.discriminator.stddev_group
    if view == "minibatch_stddev" and judged > group and judged % group:
        allowed = f"must divide the {judged} inputs D judges at once (trainer.batch_size / pack)"
        _require(False, "discriminator.stddev_group", group, allowed)
    batch, pack = cfg.trainer.batch_size, cfg.discriminator.pack
    _require(
        batch % pack == 0,
        "trainer.batch_size",
        batch,
        f"counts samples and must divide into packs of discriminator.pack={pack}",
    )
    # how a cGAN's networks take the class: concat (both), cbn (G), projection (D)
    for net, own in (("generator", "cbn"), ("discriminator", "projection")):
        key, how = f"{net}.conditioning", cfg[net].conditioning
        allowed = f"allowed: concat, {own} (cbn is the generator's, projection the discriminator's)"
        _require(how in ("concat", own), key, how, allowed)
        if how != "concat":
            _require(cfg.conditional, key, how, "conditions a cGAN: needs conditional=true")
            mlp = cfg[net].arch == Arch.mlp
            _require(not mlp, key, how, f"is for dcgan and resnet; {net}=mlp takes concat")
    norm_g, cbn_norms = cfg.norm.generator, ("batch", "layer", "instance", "group")
    _require(
        cfg.generator.conditioning != "cbn" or norm_g in cbn_norms,
        "generator.conditioning",
        "cbn",
        f"makes the affine of G's norm layers per class; norm.generator={norm_g} has none "
        f"(use {', '.join(cbn_norms)})",
    )
    _check_custom_norm(cfg)
    _task(cfg)
    _replicas(cfg)
    typed = OmegaConf.to_object(cfg)
    for node in USER_PARTS:  # the keywords of the user's classes
        part = getattr(typed, node)
        if part._target_ is not None:
            known = {f.name for f in dataclasses.fields(part)}
            own = OmegaConf.to_container(cfg[node], resolve=True)
            part.parameters = {str(k): v for k, v in own.items() if k not in known}
    return typed


def _task(cfg: DictConfig) -> None:
    """The task's name and the ranges of the keys tasks read; what a task needs of the other
    axes is its own check (:func:`ganexp.tasks.check`, run by the session's preflight)."""
    task = cfg.task.name
    _require(task in TASKS, "task.name", task, _one_of(TASKS))
    weight = cfg.task.supervised_weight
    _require(weight >= 0, "task.supervised_weight", weight, "must be >= 0")
    if cfg.data.labels_per_class is not None:
        _positive(cfg, "data.labels_per_class")
    _require(
        0 <= cfg.data.labels_seed <= SEED_MAX,
        "data.labels_seed",
        cfg.data.labels_seed,
        "must be in [0, 2**32 - 1]",
    )
    classes = list(cfg.data.domain_classes)
    if cfg.data.name != "fashion_domains" and classes != [7, 9]:
        _require(False, "data.domain_classes", classes, "is read by data=fashion_domains only")
    for key in ("l1_weight", "cycle_weight", "identity_weight", "pool_size"):
        _require(cfg.task[key] >= 0, f"task.{key}", cfg.task[key], "must be >= 0")


def _replicas(cfg: DictConfig) -> None:
    """What replicas (ganexp.engine.replicas) cannot vectorize, refused with trainer.replicas >
    1: these keys; the loss terms each say for themselves (ganexp.session.preflight)."""
    _positive(cfg, "trainer.replicas")
    replicas = cfg.trainer.replicas
    if replicas == 1:
        return
    norms = (cfg.norm.generator, cfg.norm.discriminator)
    refused = {
        "data.augment": cfg.data.augment != "none",
        "discriminator.batch_view": cfg.discriminator.batch_view != "none",
        "norm.generator": cfg.norm.generator == Norm.virtual_batch or Norm.custom in norms,
        "loss._target_": cfg.loss.get("_target_") is not None,
        "generator._target_": cfg.generator.get("_target_") is not None,
        "discriminator._target_": cfg.discriminator.get("_target_") is not None,
        "trainer.skip_nonfinite": cfg.trainer.skip_nonfinite,
        "trainer.simultaneous": cfg.trainer.simultaneous,
        "loss.instance_noise": cfg.loss.instance_noise > 0,
        "loss.consensus_weight": cfg.loss.consensus_weight > 0,
        "loss.unrolled_steps": cfg.loss.unrolled_steps > 0,
        "device.compile": cfg.device.compile,
        "logger.watch": cfg.logger.watch,
        "device.precision": cfg.device.precision in ("bf16", "fp16"),
    }
    for key, taken in refused.items():
        value = OmegaConf.select(cfg, key)
        _require(not taken, key, value, REPLICAS_ALLOWED.format(replicas))


def _check_custom_norm(cfg: DictConfig) -> None:
    """``custom`` (in either network) and ``norm._target_`` go together."""
    target = cfg.norm.get("_target_")
    users = [net for net in ("generator", "discriminator") if cfg.norm[net] == Norm.custom]
    for net in users:
        _require(target is not None, f"norm.{net}", "custom", "needs norm._target_: the norm class")
    if target is not None and not users:
        _require(
            False,
            "norm._target_",
            target,
            "names a norm no network uses: set norm.generator and/or norm.discriminator to custom",
        )


def lookup(config: object, key: str) -> Any:
    """The value of dotted ``key`` in a typed config or in its plain-dict form (a checkpoint's
    saved config), an enum as its string; None where a part is missing."""
    for part in key.split("."):
        config = config.get(part) if isinstance(config, dict) else getattr(config, part, None)
    return config.value if isinstance(config, Enum) else config


def _one_of(options: tuple[str, ...]) -> str:
    return "allowed: " + ", ".join(options)


_TYPE_WORDS = {
    "Integer": "must be an integer",
    "Float": "must be a number",
    "not a valid bool": "must be true or false",
}


def composition_error(ex: Exception, overrides: list[str] = ()) -> ConfigError:
    """Hydra's and OmegaConf's multi-line composition errors, as one ConfigError; the value of
    an unknown key is looked up in ``overrides`` (OmegaConf's error does not carry it)."""
    if isinstance(ex, MissingConfigException) and ex.missing_cfg_file:
        group, _, option = ex.missing_cfg_file.rpartition("/")
        if ex.options:
            return ConfigError(group, option, "allowed: " + ", ".join(ex.options))
        return ConfigError(group or option, option, "no such config group")
    cause = ex.__cause__ if isinstance(ex.__cause__, OmegaConfBaseException) else ex
    full_key = getattr(cause, "full_key", None)
    first_line = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    if full_key:
        value = getattr(cause, "value", None)
        typed = {o.split("=", 1)[0].lstrip("+~"): o.split("=", 1)[1] for o in overrides if "=" in o}
        value = typed.get(full_key, value) if value is None else value
        if isinstance(cause, ConfigAttributeError | ConfigKeyError):
            return ConfigError(full_key, value, "no such key; " + _known_keys(full_key))
        choices = re.search(r"expected one of \[(.*)\]", first_line)
        if choices:
            return ConfigError(full_key, value, "allowed: " + choices.group(1))
        for word, allowed in _TYPE_WORDS.items():
            if word in first_line:
                return ConfigError(full_key, value, allowed)
        return ConfigError(full_key, value, first_line)
    ambiguous = re.match(r"Ambiguous value for argument '([^=]+)=(.*)'", first_line)
    if ambiguous:
        key, value = ambiguous.groups()
        return ConfigError(key, value, "a comma-separated list sweeps only with -m")
    return ConfigError("command line", " ".join(ex.args[:1]) or first_line, first_line)


def _known_keys(full_key: str) -> str:
    """The keys next to ``full_key`` in the schema, for a typo's message."""
    node: object = RunConfig()
    parts = full_key.split(".")
    for part in parts[:-1]:
        node = getattr(node, part, None)
        if not dataclasses.is_dataclass(node):
            return "see `ganexp --cfg job` for every key"
    names = ", ".join(f.name for f in dataclasses.fields(node))
    where = ".".join(parts[:-1]) or "the top level"
    return f"keys of {where}: {names}"
