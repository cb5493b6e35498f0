"""The one place that turns a validated config into objects: networks, optimizers, loss."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from ganexp.config import (
    Activation,
    Arch,
    Init,
    NetConfig,
    Norm,
    OptimConfig,
    OptimName,
    RunConfig,
    lookup,
)
from ganexp.data import DataSpec
from ganexp.errors import ConfigError
from ganexp.models.common import (
    ActivationSpec,
    BatchStatistic,
    MinibatchDiscrimination,
    MinibatchStddev,
    NormSpec,
    Packed,
    initialize,
)
from ganexp.models.dcgan import DCGANDiscriminator, DCGANGenerator
from ganexp.models.dirac import DiracDiscriminator, DiracGenerator
from ganexp.models.mlp import MLPDiscriminator, MLPGenerator
from ganexp.models.norms import WithReferenceBatch, apply_weight_norm
from ganexp.models.resnet import ResNetDiscriminator, ResNetGenerator
from ganexp.models.translation import PatchDiscriminator, UNetGenerator
from ganexp.models.translation import ResNetGenerator as BlocksGenerator
from ganexp.parts.augment import attach
from ganexp.parts.user import Contract, build_part, settings
from ganexp.tasks import task_of

REFERENCE_SEED = 0x5EED  # the reference batch's codes: a stream apart from the run's own

# the convolutional architectures: (G, D), built alike and conditioned by net.conditioning
_CONV = {
    Arch.dcgan: (DCGANGenerator, DCGANDiscriminator),
    Arch.resnet: (ResNetGenerator, ResNetDiscriminator),
}


# what a user's class of each kind must be (ganexp.parts.user), and the run facts it may take
NETWORK_CONTRACT = Contract(nn.Module, ("forward",), "a torch.nn.Module subclass with a forward")
_NETWORK_CONTEXT = {
    "z_dim": "from trainer.z_dim",
    "shape": "the shape of one sample (C, H, W) or (2,); D's: of one pack",
    "num_classes": "the data's classes for a cGAN (conditional=true), else 0",
    "norm": "the factory of norm.<network>'s layers: norm(num_features, spatial=True)",
}
_NORM_CONTEXT = {
    "num_features": "the channels (or features) of the layer the norm follows",
    "spatial": "true for NCHW maps, false for NC vectors",
}


def _norm_spec(cfg: RunConfig, network: str) -> NormSpec:
    kind = Norm(getattr(cfg.norm, network))
    # virtual batch norm's reference batch: as large as a training batch (improved-gan's)
    reference = cfg.trainer.batch_size if network == "generator" else 0
    custom = partial(_custom_norm, cfg) if kind == Norm.custom else None
    return NormSpec(kind, cfg.norm.num_groups, cfg.norm.eps, f"norm.{network}", reference, custom)


def _custom_norm(cfg: RunConfig, num_features: int, spatial: bool) -> nn.Module:
    """A layer of the user's norm class (``norm._target_``)."""
    values = settings(cfg.norm) | {"num_features": num_features, "spatial": spatial}
    target, parameters = cfg.norm._target_, cfg.norm.parameters
    return build_part("norm", target, NETWORK_CONTRACT, parameters, _NORM_CONTEXT, values)


def _users_network(cfg: RunConfig, network: str, **context: Any) -> nn.Module:
    """The user's network class (``generator._target_`` / ``discriminator._target_``)."""
    net = getattr(cfg, network)
    values = settings(net) | context
    allowed = {k: v for k, v in _NETWORK_CONTEXT.items() if k in context}
    return build_part(network, net._target_, NETWORK_CONTRACT, net.parameters, allowed, values)


def _activation_spec(net: NetConfig, network: str) -> ActivationSpec:
    kind = Activation(net.activation)
    discriminator = network == "discriminator"
    return ActivationSpec(kind, net.maxout_pieces, f"{network}.activation", discriminator)


def _check_arch(net: NetConfig, network: str, spec: DataSpec, data_name: str) -> None:
    if net._target_ is None and net.arch in _CONV and spec.kind != "image":
        raise ConfigError(
            f"{network}.arch", net.arch.value, f"data={data_name} is 2-D points; use {network}=mlp"
        )
    dirac_data, dirac_net = data_name == "dirac", net._target_ is None and net.arch == Arch.dirac
    if dirac_net and not dirac_data:
        allowed = "needs data=dirac (the Dirac-GAN: data=dirac generator=dirac discriminator=dirac)"
        raise ConfigError(f"{network}.arch", net.arch.value, allowed)
    if dirac_data and not dirac_net:
        what = net.arch.value if net._target_ is None else net._target_
        allowed = f"data=dirac needs {network}=dirac (the Dirac-GAN's one-parameter networks)"
        raise ConfigError(f"{network}.arch", what, allowed)


def _num_classes(cfg: RunConfig, spec: DataSpec) -> int:
    """Classes fed to the networks: those of the data for a cGAN, else none."""
    if not cfg.conditional:
        return 0
    if spec.num_classes < 2:
        raise ConfigError(
            "conditional", True, f"needs a labelled dataset; data={cfg.data.name} has no labels"
        )
    return spec.num_classes


def build_generator(cfg: RunConfig, spec: DataSpec) -> nn.Module:
    net, norm = cfg.generator, _norm_spec(cfg, "generator")
    _check_arch(net, "generator", spec, cfg.data.name)
    classes, act = _num_classes(cfg, spec), _activation_spec(net, "generator")
    args = (cfg.trainer.z_dim, spec.shape, net.width, net.depth, norm, classes)
    if net._target_ is not None:
        context = {"z_dim": args[0], "shape": spec.shape, "num_classes": classes}
        model = task_of(cfg).generators(
            lambda: _users_network(cfg, "generator", norm=norm.layer, **context)
        )
    elif net.arch in _CONV:
        model = _CONV[net.arch][0](*args, activation=act, conditioning=net.conditioning)
    elif net.arch in (Arch.unet, Arch.resnet_blocks):  # translate the image in the labels
        model = _translator(cfg, spec, norm)
    elif net.arch == Arch.dirac:
        model = DiracGenerator(net.start)
    else:
        tanh = spec.kind == "image"  # images live in [-1, 1]; toy points do not
        model = MLPGenerator(*args, tanh=tanh, activation=act)
    initialize(model, Init(net.init), net.init_gain)
    model = apply_weight_norm(model, norm.kind)
    if norm.kind == Norm.virtual_batch:  # the reference batch goes in front of every batch
        reference = norm.reference_size, cfg.trainer.z_dim, classes, cfg.seed + REFERENCE_SEED
        model = WithReferenceBatch(model, *reference)
    return model


def build_discriminator(cfg: RunConfig, spec: DataSpec) -> nn.Module:
    net, norm = cfg.discriminator, _norm_spec(cfg, "discriminator")
    _check_arch(net, "discriminator", spec, cfg.data.name)
    classes, act = _num_classes(cfg, spec), _activation_spec(net, "discriminator")
    if net.pack > 1 and classes:
        raise ConfigError("discriminator.pack", net.pack, "packing is for unconditional GANs")
    # a pack of m samples is one input of m times the channels (images) or features (points)
    shape = (spec.shape[0] * net.pack, *spec.shape[1:])
    args = (shape, net.width, net.depth, norm, classes)
    if net._target_ is not None:
        context = {"shape": shape, "num_classes": classes, "norm": norm.layer}
        model = task_of(cfg).critics(lambda: _users_network(cfg, "discriminator", **context))
        _check_features(cfg, model)
    elif net.arch in _CONV:
        model = _CONV[net.arch][1](*args, activation=act, conditioning=net.conditioning)
    elif net.arch == Arch.patch:  # judges the image, beside the input image when paired
        model = _patch_critic(cfg, spec, norm)
    elif net.arch == Arch.dirac:
        model = DiracDiscriminator(net.start)
    else:
        model = MLPDiscriminator(*args, activation=act)
    if net.batch_view != "none":  # a statistic of the batch (of packs) next to D's features
        model = BatchStatistic(model, _batch_statistic(net, model))
    model = task_of(cfg).wrap_critic(model, spec)  # semi-supervised: K class logits
    initialize(model, Init(net.init), net.init_gain)
    model = apply_weight_norm(model, norm.kind)
    model = Packed(model, net.pack) if net.pack > 1 else model
    if cfg.data.augment == "diffaug":  # each sample augmented, then packed
        model = attach(model, cfg.data.augment_policy)
    return model


def _translator(cfg: RunConfig, spec: DataSpec, norm: NormSpec) -> nn.Module:
    """generator=unet or resnet_blocks, as many as the task translates in (unpaired: two)."""
    net, (channels, size) = cfg.generator, spec.shape[:2]

    def one() -> nn.Module:
        if net.arch == Arch.unet:
            return UNetGenerator(spec.condition_channels, channels, size, net.width, norm)
        return BlocksGenerator(spec.condition_channels, channels, net.width, net.depth, norm)

    return task_of(cfg).generators(one)


def _patch_critic(cfg: RunConfig, spec: DataSpec, norm: NormSpec) -> nn.Module:
    """discriminator=patch: of (input, image) pairs, or for unpaired translation, one of each
    domain's images alone (the task's critics)."""
    width, (channels, size) = cfg.discriminator.width, spec.shape[:2]
    task = task_of(cfg)
    condition = task.critic_condition(spec)
    return task.critics(lambda: PatchDiscriminator(channels, condition, size, width, norm))


def _check_features(cfg: RunConfig, critic: nn.Module) -> None:
    """The options that read D's features (what enters its output layer) need a user's D to
    have ``features(x, labels)`` and, for a batch view, ``head(phi, labels)`` and
    ``feature_width``."""
    needs = []
    if cfg.loss.generator_loss == "feature_matching":
        needs.append(("loss.generator_loss", "feature_matching", ("features",)))
    task = task_of(cfg)
    if task.critic_needs:
        needs.append((*task.choice, task.critic_needs))
    if cfg.discriminator.batch_view != "none":
        parts = ("features", "head", "feature_width")
        needs.append(("discriminator.batch_view", cfg.discriminator.batch_view, parts))
    for key, value, parts in needs:
        missing = [name for name in parts if not hasattr(critic, name)]
        if missing:
            target = cfg.discriminator._target_
            allowed = f"reads D's features; {target} lacks {', '.join(missing)}"
            raise ConfigError(key, value, allowed)


def _batch_statistic(net: NetConfig, critic: nn.Module) -> nn.Module:
    if net.batch_view == "minibatch_stddev":
        return MinibatchStddev(net.stddev_group)
    kernels, dims = net.minibatch_kernels, net.minibatch_kernel_dims
    return MinibatchDiscrimination(critic.feature_width, kernels, dims)


# the sizes a network's layers are made of, for a layer too large to exist
_SIZE_KEYS = ("generator.width", "discriminator.width", "trainer.z_dim", "data.image_size")


def check_buildable(cfg: RunConfig, spec: DataSpec) -> tuple[nn.Module, nn.Module]:
    """Build both networks on the meta device: every architecture x norm x size error surfaces
    here, before any work, at no memory cost. Returns the meta networks (G, D)."""
    try:
        with torch.device("meta"):
            generator, discriminator = build_generator(cfg, spec), build_discriminator(cfg, spec)
            _check_users_outputs(cfg, spec, generator, discriminator)
            return generator, discriminator
    except (RuntimeError, TypeError) as ex:  # a tensor size beyond int64
        if "overflow" not in str(ex).lower():
            raise
        values = {key: lookup(cfg, key) for key in _SIZE_KEYS}
        key = max(values, key=values.__getitem__)
        raise ConfigError(key, values[key], "too large: a layer's size overflows int64") from ex


def _check_users_outputs(
    cfg: RunConfig, spec: DataSpec, generator: nn.Module, discriminator: nn.Module
) -> None:
    """A user's network, run on one training batch of meta tensors (no memory, no arithmetic),
    must give what the loop needs: G a batch of samples, D one score per sample (per pack)."""
    n = cfg.trainer.batch_size
    labels = torch.zeros(n, dtype=torch.long) if _num_classes(cfg, spec) else None
    if spec.condition_channels:  # translation: the input images
        labels = torch.empty(n, spec.condition_channels, *spec.shape[1:])
    checks = (
        ("generator", generator, torch.empty(n, cfg.trainer.z_dim), (n, *spec.shape)),
        (
            "discriminator",
            discriminator,
            torch.empty(n, *spec.shape),
            (n // cfg.discriminator.pack,),
        ),
    )
    for network, model, batch, want in checks:
        target = getattr(cfg, network)._target_
        if target is None:
            continue
        try:
            out = model(batch, labels)
        except Exception as ex:
            reason = str(ex).splitlines()[0] if str(ex) else type(ex).__name__
            raise ConfigError(f"{network}._target_", target, f"forward failed: {reason}") from None
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        # D: one score per input, or (translation) one per patch of each input
        per_input = out.numel() == want[0] or spec.condition_channels > 0
        scores = network == "discriminator" and isinstance(out, torch.Tensor) and per_input
        if got != want and not (scores and got[0] == want[0]):
            shape = "one score per input" if network == "discriminator" else "a batch of samples"
            allowed = f"forward gives {got} for a batch of {n}; must give {shape}, {want}"
            raise ConfigError(f"{network}._target_", target, allowed)


def _implementation(cfg: OptimConfig) -> dict[str, bool]:
    """optim.implementation as optimizer flags; auto: fused Adam, foreach RMSprop and SGD."""
    impl = cfg.implementation
    if impl == "auto":
        impl = "fused" if cfg.name == OptimName.adam else "foreach"
    if impl == "fused" and cfg.name != OptimName.adam:
        raise ConfigError("optim.implementation", impl, "fused is for adam; use foreach")
    return {"foreach": impl == "foreach"} | ({"fused": impl == "fused"} if impl == "fused" else {})


def build_optimizer(cfg: OptimConfig, params, lr: float) -> torch.optim.Optimizer:
    flags = _implementation(cfg)
    if cfg.name == OptimName.adam:
        betas = (cfg.beta1, cfg.beta2)
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=cfg.weight_decay, **flags)
    if cfg.name == OptimName.sgd:
        return torch.optim.SGD(params, lr=lr, weight_decay=cfg.weight_decay, **flags)
    return torch.optim.RMSprop(params, lr=lr, weight_decay=cfg.weight_decay, **flags)
