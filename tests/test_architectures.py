"""The ResNet networks (SNGAN / WGAN-GP), cGAN conditioning (concat, projection, cbn) and D's
features: shapes at every size and norm, the math of each conditioning, the refusals, and short
trainings through the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import checkpoint_weights, cli_sweep, compose_config
from test_bad_input import refusal
from torch import nn

from ganexp.config import RunConfig, validate
from ganexp.data import DataSpec
from ganexp.errors import ConfigError
from ganexp.models.common import ConditionalNorm, Projection
from ganexp.models.resnet import DBlock, GBlock, OptimizedDBlock
from ganexp.session.build import build_discriminator, build_generator, check_buildable

NORMS = ("batch", "layer", "instance", "group", "spectral", "none")
SIZES = (28, 32, 64)
SMALL = ("generator.width=16", "discriminator.width=16")
RESNET = ("generator=resnet", "discriminator=resnet", *SMALL)
CGAN = ("conditional=true", "discriminator.conditioning=projection", "generator.conditioning=cbn")


def _cfg(*overrides: str) -> RunConfig:
    return validate(compose_config(*overrides))


def _image_spec(size: int = 32, channels: int = 1, classes: int = 10) -> DataSpec:
    names = tuple(str(i) for i in range(classes))
    return DataSpec("image", (channels, size, size), classes, names, 100)


POINTS = DataSpec("points", (2,), 0, (), None)


def _nets(*overrides: str, spec: DataSpec | None = None) -> tuple[nn.Module, nn.Module]:
    cfg, spec = _cfg(*overrides), spec or _image_spec()
    return build_generator(cfg, spec), build_discriminator(cfg, spec)


def _sides(net: nn.Module, blocks: type[nn.Module], run) -> list[int]:
    """The map side after each of ``net``'s residual blocks of type ``blocks``."""
    sides: list[int] = []
    hooks = [
        m.register_forward_hook(lambda _m, _a, out: sides.append(out.shape[-1]))
        for m in net.modules()
        if isinstance(m, blocks)
    ]
    run()
    for hook in hooks:
        hook.remove()
    return sides


# --- resnet: shapes, resolutions, layers ---------------------------------------------------------


@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("norm", NORMS)
def test_resnet_shapes_at_every_size_and_norm(norm: str, size: int, conditional: bool) -> None:
    spec = _image_spec(size, channels=3)
    G, D = _nets(*RESNET, f"norm={norm}", f"conditional={conditional}", spec=spec)
    labels = torch.tensor([0, 3, 9]) if conditional else None
    images = G(torch.randn(3, 100), labels)
    assert images.shape == (3, 3, size, size)
    assert images.min() >= -1 and images.max() <= 1  # tanh output
    logits = D(images, labels)
    assert logits.shape == (3,)
    assert torch.isfinite(logits).all()
    assert D.features(images, labels).shape == (3, 16)  # width channels, summed over the map
    logits.sum().backward()
    assert all(p.grad is not None for p in G.parameters())


@pytest.mark.parametrize(
    ("size", "g_sides", "d_sides"),
    [
        (28, [14, 28], [14, 7, 7, 7]),  # MNIST-like: 7x7 -> 28x28, D down to 7x7
        (32, [8, 16, 32], [16, 8, 8, 8]),  # SNGAN's CIFAR nets
        (64, [8, 16, 32, 64], [32, 16, 8, 8, 8]),  # one more block each
    ],
)
def test_resnet_resolutions_follow_sngan(size: int, g_sides: list[int], d_sides: list[int]):
    G, D = _nets(*RESNET, spec=_image_spec(size))
    z = torch.randn(2, 100)
    assert _sides(G, GBlock, lambda: G(z)) == g_sides
    blocks = (OptimizedDBlock, DBlock)
    assert _sides(D, blocks, lambda: D(torch.randn(2, 1, size, size))) == d_sides


def test_resnet_depth_adds_blocks_at_the_last_resolution() -> None:
    G, D = _nets(*RESNET, "generator.depth=1", "discriminator.depth=2")
    assert _sides(G, GBlock, lambda: G(torch.randn(2, 100))) == [8, 16, 32, 32]
    blocks = (OptimizedDBlock, DBlock)
    assert _sides(D, blocks, lambda: D(torch.randn(2, 1, 32, 32))) == [16, 8, 8, 8, 8, 8]
    same = [b for b in G.blocks if isinstance(b.shortcut, nn.Identity)]
    assert len(same) == 1  # the extra block keeps its input as the shortcut


def test_resnet_defaults_are_sngans_cifar_networks() -> None:
    """SNGAN's CIFAR-10 nets, G of 256 channels and D of 128 (z of 128 here), with batch norm in
    both: about 4.3M and 1.0M weights. A conv that a norm follows has no bias."""
    cfg = _cfg("generator=resnet", "discriminator=resnet", "trainer.z_dim=128")
    spec = _image_spec(32, channels=3)
    G, D = build_generator(cfg, spec), build_discriminator(cfg, spec)
    linear = 128 * 4 * 4 * 256 + 4 * 4 * 256
    conv3, conv1, bn = 256 * 256 * 9, 256 * 256 + 256, 2 * 256
    block = conv3 + (conv3 + 256) + conv1 + 2 * bn  # conv1, conv2, shortcut, 2 norms
    out = bn + 256 * 3 * 9 + 3  # last norm, conv to RGB
    assert sum(p.numel() for p in G.parameters()) == linear + 3 * block + out
    first = (3 * 128 * 9 + 128) + (128 * 128 * 9 + 128) + (3 * 128 + 128)  # 2 convs, shortcut
    conv3, bn = 128 * 128 * 9, 2 * 128
    d_block = conv3 + (conv3 + 128) + 2 * bn
    shortcut = 128 * 128 + 128  # of the one down-sampling block after the first
    assert sum(p.numel() for p in D.parameters()) == first + 3 * d_block + shortcut + 129


def test_resnet_layers_norms_and_activations() -> None:
    G, D = _nets(*RESNET, "norm=batch")
    first = D.blocks[0]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in first.modules())  # not on D's input
    assert sum(isinstance(m, nn.BatchNorm2d) for m in D.modules()) == 2 * (len(D.blocks) - 1)
    for block in [*G.blocks, *D.blocks[1:]]:
        assert block.conv1.bias is None and block.conv2.bias is not None  # conv1: a norm follows
    for net in (G, D):  # ReLU in both by default, as SNGAN
        assert any(isinstance(m, nn.ReLU) for m in net.modules())
        assert not any(isinstance(m, nn.LeakyReLU) for m in net.modules())
    _, leaky = _nets(*RESNET, "discriminator.activation=leaky_relu")
    assert any(isinstance(m, nn.LeakyReLU) for m in leaky.modules())


def test_resnet_starts_glorot_uniform() -> None:
    G, _ = _nets(*RESNET)
    conv = G.blocks[0].conv1  # a residual branch's conv: gain sqrt(2)
    bound = math.sqrt(2) * math.sqrt(6 / (2 * 16 * 9))
    assert 0.9 * bound < conv.weight.abs().max().item() <= bound
    shortcut = G.blocks[0].shortcut  # gain 1
    assert shortcut.weight.abs().max().item() <= math.sqrt(6 / (2 * 16))
    assert G.blocks[0].conv2.bias.abs().max().item() == 0


def test_spectral_norm_wraps_every_resnet_weight() -> None:
    G, D = _nets(*RESNET, *CGAN[:2], "norm=spectral")
    for net in (G, D):
        layers = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
        assert layers and all(hasattr(m, "parametrizations") for m in layers)
    assert hasattr(D.projection.embed, "parametrizations")  # SNGAN's SNEmbedID
    for _ in range(30):  # power iterations run in training-mode forwards
        D(torch.randn(4, 1, 32, 32), torch.arange(4))
    D.eval()
    weight = D.projection.embed.weight.detach()
    assert torch.linalg.matrix_norm(weight, ord=2).item() == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("size", [16, 56, 128])
def test_resnet_refuses_other_sizes(size: int) -> None:
    with pytest.raises(ConfigError) as error:
        check_buildable(_cfg(*RESNET, f"data.image_size={size}"), _image_spec(size))
    assert error.value.key == "data.image_size" and error.value.value == size
    assert "resnet makes images of 28, 32, 64 pixels" in str(error.value)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (("generator=resnet",), "generator.arch"),
        (("generator=mlp", "discriminator=resnet"), "discriminator.arch"),
    ],
)
def test_resnet_refuses_points(overrides: tuple[str, ...], key: str) -> None:
    with pytest.raises(ConfigError) as error:
        check_buildable(_cfg("data=ring8", *overrides), POINTS)
    assert error.value.key == key and error.value.value == "resnet"
    assert "2-D points" in str(error.value)


def test_resnet_refuses_maxout() -> None:
    with pytest.raises(ConfigError) as error:
        check_buildable(_cfg(*RESNET, "generator.activation=maxout"), _image_spec())
    assert error.value.key == "generator.activation"
    assert "not resnet" in str(error.value)


# --- projection discriminator (Miyato & Koyama 2018) ----------------------------------------------


def _output_layer(D: nn.Module, phi: torch.Tensor) -> torch.Tensor:
    """D's output layer on its features: resnet's Linear, dcgan's Score (a conv as large as the
    map, i.e. one dot product with its flattened weight), mlp's Linear."""
    if hasattr(D, "linear"):
        return D.linear(phi).flatten()
    layer = D.net[-1]
    return phi @ layer.weight.flatten() + layer.bias


@pytest.mark.parametrize("norm", ["batch", "spectral"])
@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_projection_is_linear_plus_class_embedding_dot_features(arch: str, norm: str) -> None:
    _, D = _nets(f"discriminator={arch}", *SMALL, f"norm={norm}", *CGAN[:2])
    assert isinstance(D.projection, Projection)
    first = next(m for m in D.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 1  # no label maps on D's input
    D.eval()  # fixed norm statistics and spectral-norm weights
    x = torch.randn(1, 1, 32, 32).repeat(4, 1, 1, 1)
    y = torch.tensor([0, 1, 2, 7])
    with torch.no_grad():
        out, phi = D(x, y), D.features(x, y)
        embed = D.projection.embed.weight
        expected = _output_layer(D, phi) + (embed[y] * phi).sum(dim=1)
    torch.testing.assert_close(out, expected)
    assert len(set(out.tolist())) == 4  # same image, four classes, four outputs
    assert torch.allclose(phi[0], phi[3])  # the features do not see the class


# --- conditional batch norm (SNGAN's, BigGAN's generator) ----------------------------------------


@pytest.mark.parametrize("norm", ["batch", "layer", "instance", "group"])
@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_cbn_generator_takes_every_norms_affine_from_the_class(arch: str, norm: str) -> None:
    G, _ = _nets(f"generator={arch}", *SMALL, f"norm={norm}", *CGAN)
    norms = [m for m in G.modules() if isinstance(m, ConditionalNorm)]
    expected = 3 if arch == "dcgan" else 2 * len(G.blocks) + 1  # dcgan 32px: 3 norm layers
    assert len(norms) == expected
    for cn in norms:
        assert cn.norm.weight is None and cn.norm.bias is None  # no affine of its own
        assert torch.equal(cn.gamma.weight, torch.ones_like(cn.gamma.weight))  # starts as norm
        assert not cn.beta.weight.any()
    first = next(m for m in G.modules() if isinstance(m, nn.Linear | nn.ConvTranspose2d))
    assert (first.in_features if arch == "resnet" else first.in_channels) == 100  # z only
    z = torch.randn(1, 100).repeat(3, 1)
    y = torch.tensor([0, 1, 2])
    with torch.no_grad():
        same = G(z, y)
        assert torch.allclose(same[0], same[1])  # scales 1 and shifts 0 for every class
        for cn in norms:
            nn.init.normal_(cn.gamma.weight, 1.0, 0.3)
            nn.init.normal_(cn.beta.weight, 0.0, 0.3)
        images = G(z, y)
    assert not torch.allclose(images[0], images[1]) and not torch.allclose(images[1], images[2])


def test_conditional_batch_norm_is_batch_statistics_then_the_class_affine() -> None:
    G, _ = _nets("generator=resnet", *SMALL, "norm=batch", *CGAN)
    cn = G.blocks[0].norm1
    nn.init.normal_(cn.gamma.weight, 1.0, 0.3)
    nn.init.normal_(cn.beta.weight, 0.0, 0.3)
    x = torch.randn(6, 16, 4, 4) * 3 + 1
    y = torch.tensor([0, 5, 5, 2, 9, 0])
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    normalized = (x - mean) / torch.sqrt(var + 1e-5)
    gamma, beta = cn.gamma.weight[y][:, :, None, None], cn.beta.weight[y][:, :, None, None]
    torch.testing.assert_close(cn(x, y), normalized * gamma + beta, atol=1e-5, rtol=1e-4)


def test_a_conditional_network_without_labels_says_so() -> None:
    G, D = _nets(*RESNET, *CGAN)
    with pytest.raises(ValueError, match="needs class labels"):
        G(torch.randn(2, 100))
    with pytest.raises(ValueError, match="needs class labels"):
        D(torch.randn(2, 1, 32, 32))


# --- features(): what enters D's output layer -----------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "spec", "n_features"),
    [
        (("discriminator=mlp", "discriminator.width=16"), _image_spec(), 16),
        (("data=ring8", "generator=mlp", "discriminator=mlp", "norm=none"), POINTS, 256),
        (("discriminator.width=16",), _image_spec(), 16 * 4 * 4 * 4),  # 64 maps of 4x4
        (("discriminator.width=16", "data.image_size=28"), _image_spec(28), 32 * 7 * 7),
        (("discriminator=resnet", "discriminator.width=16"), _image_spec(), 16),
        (("discriminator=resnet", "discriminator.width=16", "conditional=true"), _image_spec(), 16),
        (("discriminator.width=16", "conditional=true"), _image_spec(), 1024),
    ],
)
def test_forward_is_the_output_layer_on_the_features(
    overrides: tuple[str, ...], spec: DataSpec, n_features: int
) -> None:
    cfg = _cfg(*overrides)
    D = build_discriminator(cfg, spec).eval()
    x = torch.randn(5, *spec.shape)
    labels = torch.arange(5) if cfg.conditional else None
    with torch.no_grad():
        phi = D.features(x, labels)
        assert phi.shape == (5, n_features)
        torch.testing.assert_close(D(x, labels), _output_layer(D, phi))


def test_dcgan_features_do_not_depend_on_the_memory_format() -> None:
    _, D = _nets("discriminator.width=16")
    D.eval()
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        plain = D.features(x), D(x)
        D = D.to(memory_format=torch.channels_last)
        fast = D.features(x.contiguous(memory_format=torch.channels_last)), D(x)
    for a, b in zip(plain, fast, strict=True):
        torch.testing.assert_close(a, b)


# --- refusals: one line naming key and value -----------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "start", "fragment"),
    [
        (
            ("conditional=true", "generator.conditioning=projection"),
            "generator.conditioning='projection': ",
            "allowed: concat, cbn",
        ),
        (
            ("conditional=true", "discriminator.conditioning=cbn"),
            "discriminator.conditioning='cbn': ",
            "allowed: concat, projection",
        ),
        (
            ("conditional=true", "generator.conditioning=film"),
            "generator.conditioning='film': ",
            "allowed: concat, cbn",
        ),
        (
            ("conditional=true", "generator.conditioning=cbn", "norm.generator=none"),
            "generator.conditioning='cbn': ",
            "norm.generator=none has none (use batch, layer, instance, group)",
        ),
        (
            ("conditional=true", "generator.conditioning=cbn", "norm=spectral"),
            "generator.conditioning='cbn': ",
            "norm.generator=spectral",
        ),
        (
            ("discriminator.conditioning=projection",),
            "discriminator.conditioning='projection': ",
            "needs conditional=true",
        ),
        (
            ("generator=resnet", "generator.conditioning=cbn"),
            "generator.conditioning='cbn': ",
            "needs conditional=true",
        ),
        (
            ("conditional=true", "discriminator=mlp", "discriminator.conditioning=projection"),
            "discriminator.conditioning='projection': ",
            "discriminator=mlp takes concat",
        ),
        (
            ("conditional=true", "generator=mlp", "generator.conditioning=cbn"),
            "generator.conditioning='cbn': ",
            "generator=mlp takes concat",
        ),
    ],
)
def test_conditioning_refusals(argv: tuple[str, ...], start: str, fragment: str) -> None:
    message = refusal(*argv)
    assert message.startswith(start)
    assert fragment in message


def test_conditioning_is_accepted_where_it_fits() -> None:
    cfg = _cfg(*RESNET, *CGAN, "norm.generator=group")
    assert (cfg.generator.conditioning, cfg.discriminator.conditioning) == ("cbn", "projection")
    assert _cfg().generator.conditioning == "concat"


# --- real trainings through the CLI ---------------------------------------------------------------


# each case as `ganexp debug=smoke trainer.max_steps=2 logger=none ARGS` would train it; one
# `ganexp -m` process trains them all (cli_runs), each test reads its own run folder
CLI_CASES = {
    "resnet_cgan": ("generator=resnet", "discriminator=resnet", *CGAN),
    "resnet_spectral_wgan_gp": (
        "generator=resnet",
        "discriminator=resnet",
        "norm=spectral",
        "loss=wgan_gp",
    ),
    "resnet_layer": ("generator=resnet", "discriminator=resnet", "norm=layer"),
}


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("resnets")
    return cli_sweep(folder, CLI_CASES, "debug=smoke", "trainer.max_steps=2", "logger=none")


def _train(cli_runs: dict[str, Path], *args: str) -> dict[str, torch.Tensor]:
    """The weights of the last checkpoint of `ganexp` for two smoke steps with ARGS."""
    (case,) = [name for name, overrides in CLI_CASES.items() if overrides == args]
    run_dir = cli_runs[case]
    assert json.loads((run_dir / "job.json").read_text())["status"] == "completed"
    return checkpoint_weights(run_dir / "checkpoints" / "last.pt")


@pytest.mark.slow
def test_cli_trains_a_resnet_cgan_with_projection_and_cbn(cli_runs: dict[str, Path]) -> None:
    weights = _train(cli_runs, "generator=resnet", "discriminator=resnet", *CGAN)
    assert "generator.blocks.0.norm1.gamma.weight" in weights
    assert "discriminator.projection.embed.weight" in weights
    gamma = weights["generator.blocks.0.norm1.gamma.weight"]
    assert gamma.shape == (10, 16) and not torch.equal(gamma, torch.ones_like(gamma))  # trained


@pytest.mark.slow
@pytest.mark.parametrize("args", [("norm=spectral", "loss=wgan_gp"), ("norm=layer",)])
def test_cli_trains_resnets(cli_runs: dict[str, Path], args: tuple[str, ...]) -> None:
    weights = _train(cli_runs, "generator=resnet", "discriminator=resnet", *args)
    spectral = any("parametrizations" in key for key in weights)
    assert spectral == ("norm=spectral" in args)
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())
