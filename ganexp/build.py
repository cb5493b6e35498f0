"""The one place that turns a validated config into objects: networks, optimizers, loss."""

from __future__ import annotations

import torch
from torch import nn

from ganexp.augment import attach
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
from ganexp.models.mlp import MLPDiscriminator, MLPGenerator
from ganexp.models.norms import WithReferenceBatch, apply_weight_norm
from ganexp.models.resnet import ResNetDiscriminator, ResNetGenerator

REFERENCE_SEED = 0x5EED  # the reference batch's codes: a stream apart from the run's own

# the convolutional architectures: (G, D), built alike and conditioned by net.conditioning
_CONV = {
    Arch.dcgan: (DCGANGenerator, DCGANDiscriminator),
    Arch.resnet: (ResNetGenerator, ResNetDiscriminator),
}


def _norm_spec(cfg: RunConfig, network: str) -> NormSpec:
    kind = Norm(getattr(cfg.norm, network))
    # virtual batch norm's reference batch: as large as a training batch (improved-gan's)
    reference = cfg.trainer.batch_size if network == "generator" else 0
    return NormSpec(kind, cfg.norm.num_groups, cfg.norm.eps, f"norm.{network}", reference)


def _activation_spec(net: NetConfig, network: str) -> ActivationSpec:
    kind = Activation(net.activation)
    discriminator = network == "discriminator"
    return ActivationSpec(kind, net.maxout_pieces, f"{network}.activation", discriminator)


def _check_arch(net: NetConfig, network: str, spec: DataSpec, data_name: str) -> None:
    if net.arch in _CONV and spec.kind != "image":
        raise ConfigError(
            f"{network}.arch", net.arch.value, f"data={data_name} is 2-D points; use {network}=mlp"
        )


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
    if net.arch in _CONV:
        model = _CONV[net.arch][0](*args, activation=act, conditioning=net.conditioning)
    else:
        tanh = spec.kind == "image"  # images live in [-1, 1]; toy points do not
        model = MLPGenerator(*args, tanh=tanh, activation=act)
    initialize(model, Init(net.init))
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
    if net.arch in _CONV:
        model = _CONV[net.arch][1](*args, activation=act, conditioning=net.conditioning)
    else:
        model = MLPDiscriminator(*args, activation=act)
    if net.batch_view != "none":  # a statistic of the batch (of packs) next to D's features
        model = BatchStatistic(model, _batch_statistic(net, model))
    initialize(model, Init(net.init))
    model = apply_weight_norm(model, norm.kind)
    model = Packed(model, net.pack) if net.pack > 1 else model
    if cfg.data.augment == "diffaug":  # each sample augmented, then packed
        model = attach(model, cfg.data.augment_policy)
    return model


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
            return build_generator(cfg, spec), build_discriminator(cfg, spec)
    except (RuntimeError, TypeError) as ex:  # a tensor size beyond int64
        if "overflow" not in str(ex).lower():
            raise
        values = {key: lookup(cfg, key) for key in _SIZE_KEYS}
        key = max(values, key=values.__getitem__)
        raise ConfigError(key, values[key], "too large: a layer's size overflows int64") from ex


def _implementation(cfg: OptimConfig) -> dict[str, bool]:
    """optim.implementation as optimizer flags; auto: fused Adam, foreach RMSprop."""
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
    return torch.optim.RMSprop(params, lr=lr, weight_decay=cfg.weight_decay, **flags)
