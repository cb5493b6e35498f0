"""Every architecture x norm x image size x conditional combination: shapes, or a clear error."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from helpers import LinearCritic, compose_config
from torch import nn

from ganexp.config import Norm, RunConfig, validate
from ganexp.data import DataSpec
from ganexp.errors import ConfigError
from ganexp.models.common import Maxout, Packed
from ganexp.models.dcgan import Project, Score
from ganexp.models.norms import make_norm
from ganexp.session.build import build_discriminator, build_generator, check_buildable

IMAGE_SIZES = (28, 32, 64)
NORMS = [n.value for n in Norm if n != Norm.custom]  # custom: the user's (test_user_parts)


def _cfg(*overrides: str) -> RunConfig:
    return validate(compose_config(*overrides))


def _image_spec(size: int, channels: int = 1, classes: int = 10) -> DataSpec:
    names = tuple(str(i) for i in range(classes))
    return DataSpec("image", (channels, size, size), classes, names, 100)


POINTS = DataSpec("points", (2,), 0, (), None)


def _valid(arch: str, norm: str) -> bool:
    return not (arch == "mlp" and norm == "instance")


@pytest.mark.parametrize(
    ("arch", "norm", "size", "conditional"),
    [
        combo
        for combo in itertools.product(("dcgan", "mlp"), NORMS, IMAGE_SIZES, (False, True))
        if _valid(combo[0], combo[1])
    ],
)
def test_image_networks_shapes(arch: str, norm: str, size: int, conditional: bool) -> None:
    cfg = _cfg(
        f"generator={arch}",
        f"discriminator={arch}",
        f"norm={norm}",
        f"conditional={conditional}",
        "generator.width=16",
        "discriminator.width=16",
        "norm.num_groups=4",
    )
    spec = _image_spec(size, channels=3)
    G, D = build_generator(cfg, spec), build_discriminator(cfg, spec)
    labels = torch.tensor([0, 3, 9]) if conditional else None
    images = G(torch.randn(3, cfg.trainer.z_dim), labels)
    assert images.shape == (3, 3, size, size)
    assert images.min() >= -1 and images.max() <= 1  # tanh output
    logits = D(images, labels)
    assert logits.shape == (3,)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("norm", [n for n in NORMS if n != "instance"])
def test_point_networks_shapes(norm: str) -> None:
    cfg = _cfg("data=ring8", "generator=mlp", "discriminator=mlp", f"norm={norm}")
    G, D = build_generator(cfg, POINTS), build_discriminator(cfg, POINTS)
    points = G(torch.randn(5, cfg.trainer.z_dim))
    assert points.shape == (5, 2)
    assert D(points).shape == (5,)


def test_conditioning_changes_the_output() -> None:
    cfg = _cfg("conditional=true", "generator.width=8", "norm=none")
    G = build_generator(cfg, _image_spec(32)).eval()
    z = torch.randn(1, cfg.trainer.z_dim).repeat(2, 1)
    out = G(z, torch.tensor([0, 1]))
    assert not torch.allclose(out[0], out[1])


def test_layers_followed_by_a_norm_have_no_bias() -> None:
    for norm in ("batch", "layer", "group"):
        G = build_generator(_cfg(f"norm={norm}"), _image_spec(32))
        convs = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
        assert all(c.bias is None for c in convs[:-1]), norm
        assert convs[-1].bias is not None  # the output layer has no norm after it
    G = build_generator(_cfg("norm=none"), _image_spec(32))
    assert all(m.bias is not None for m in G.modules() if isinstance(m, nn.ConvTranspose2d))


def test_dcgan_discriminator_has_no_norm_on_its_input_layer() -> None:
    D = build_discriminator(_cfg("norm=batch"), _image_spec(32))
    layers = list(D.net)
    assert isinstance(layers[0], nn.Conv2d) and isinstance(layers[1], nn.LeakyReLU)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in D.modules()) == 2


def test_spectral_norm_bounds_the_largest_singular_value() -> None:
    D = build_discriminator(_cfg("norm=spectral"), _image_spec(32))
    for _ in range(20):  # power iterations run in training-mode forwards
        D(torch.randn(4, 1, 32, 32))
    D.eval()
    first = D.net[0]
    sigma = torch.linalg.matrix_norm(first.weight.detach().flatten(1), ord=2).item()
    assert sigma == pytest.approx(1.0, rel=0.05)


def test_layer_norm_on_maps_normalizes_each_sample_over_all_features() -> None:
    norm = make_norm(Norm.layer, 8, spatial=True)
    x = torch.randn(2, 8, 4, 4) * 5 + 3
    y = norm(x)
    assert torch.allclose(y.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-5)
    assert torch.allclose(y.var(dim=(1, 2, 3), unbiased=False), torch.ones(2), atol=1e-3)


@pytest.mark.parametrize(
    ("overrides", "spec", "key", "fragment"),
    [
        (("data.image_size=30",), _image_spec(30), "data.image_size", "28, 32, 56, 64"),
        (("norm=group", "norm.num_groups=3"), _image_spec(32), "norm.num_groups", "divide"),
        (
            ("generator=mlp", "discriminator=mlp", "norm=instance"),
            _image_spec(32),
            "norm.generator",
            "spatial dimensions",
        ),
        (
            ("norm.discriminator=instance", "discriminator=mlp"),
            _image_spec(32),
            "norm.discr",
            "spatial",
        ),
        (("data=ring8",), POINTS, "generator.arch", "use generator=mlp"),
        (
            ("data=ring8", "generator=mlp", "discriminator=mlp", "conditional=true"),
            POINTS,
            "conditional",
            "labelled",
        ),
        (("generator=mlp", "generator.depth=0"), _image_spec(32), "generator.depth", "at least 1"),
    ],
)
def test_impossible_combinations_name_key_value_and_allowed(
    overrides: tuple[str, ...], spec: DataSpec, key: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as error:
        check_buildable(_cfg(*overrides), spec)
    message = str(error.value)
    assert error.value.key.startswith(key)
    assert fragment in message
    assert "\n" not in message


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize(
    ("fast", "conv", "shape", "as_conv_input"),
    [
        # G's first layer: z (N, 12) as a 1x1 map into 8 maps of 4x4
        (Project, nn.ConvTranspose2d(12, 8, 4, 1, 0), (5, 12), lambda z: z[:, :, None, None]),
        # D's last layer: 8 maps of 4x4 into one score
        (Score, nn.Conv2d(8, 1, 4, 1, 0), (5, 8, 4, 4), lambda x: x),
    ],
)
def test_matrix_product_layers_are_their_convolutions(
    fast, conv: nn.Module, shape, as_conv_input, channels_last: bool, bias: bool
) -> None:
    torch.manual_seed(0)
    conv = type(conv)(conv.in_channels, conv.out_channels, conv.kernel_size, bias=bias)
    layer = fast(conv.in_channels, conv.out_channels, conv.kernel_size, bias=bias)
    if bias:
        nn.init.normal_(conv.bias)
    layer.load_state_dict(conv.state_dict())
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    conv, layer = conv.to(memory_format=fmt), layer.to(memory_format=fmt)
    x = torch.randn(shape)
    x = (x.to(memory_format=fmt) if x.dim() == 4 else x).requires_grad_(True)
    expected = conv(as_conv_input(x))
    out = layer(x).view_as(expected)
    torch.testing.assert_close(out, expected)
    if fast is Project:
        assert out.is_contiguous(memory_format=fmt)
    upstream = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x, layer.weight], upstream)
    expected_grads = torch.autograd.grad(expected, [x, conv.weight], upstream)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want)


def test_networks_use_the_matrix_product_layers_under_every_norm() -> None:
    for norm in NORMS:
        cfg = _cfg(f"norm={norm}")
        generator = build_generator(cfg, _image_spec(32))
        generator = getattr(generator, "generator", generator)  # virtual batch norm's wrapper
        assert isinstance(generator.net[0], Project), norm
        assert isinstance(build_discriminator(cfg, _image_spec(32)).net[-1], Score), norm


# --- activations, initialization and packing (PacGAN's D, the WGAN-GP toy nets) ------------------


def test_maxout_is_the_max_over_each_units_pieces() -> None:
    layer = Maxout(3, 2, pieces=4)
    x = torch.randn(5, 3)
    pieces = layer.linear(x).view(5, 2, 4)  # unit j's pieces are outputs 4j .. 4j + 3
    assert torch.equal(layer(x), pieces.max(dim=2).values)


def _pacgan_nets(*overrides: str) -> tuple[nn.Module, nn.Module]:
    cfg = _cfg("experiment=pacgan_ring", *overrides)
    return build_generator(cfg, POINTS), build_discriminator(cfg, POINTS)


def _count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("pack", [1, 2, 4])
def test_pacgan_networks_have_the_papers_sizes(pack: int) -> None:
    """G 2-400-400-400-400-2 (no bias before batch norm; BN scale and shift), D three maxout
    layers of 200 units x 5 pieces on 2m inputs, then a linear output (pacgan_task.py)."""
    g, d = _pacgan_nets(f"discriminator.pack={pack}")
    assert _count(g) == 2 * 400 + 3 * 400 * 400 + 4 * 2 * 400 + 400 * 2 + 2
    maxouts = (2 * pack * 1000 + 1000) + 2 * (200 * 1000 + 1000)
    assert _count(d) == maxouts + 200 + 1
    assert d(torch.randn(100 * pack, 2)).shape == (100,)  # one output per pack


def test_a_pack_is_consecutive_samples_side_by_side() -> None:
    """D(pack) sees the m samples' features concatenated: a packed D equals its inner network
    applied to the batch reshaped into rows of m samples."""
    _, d = _pacgan_nets("discriminator.pack=3")
    x = torch.randn(12, 2)
    assert torch.equal(d(x), d.critic(x.reshape(4, 6)))
    images = torch.randn(6, 1, 4, 4)
    packed = Packed(LinearCritic(torch.eye(32)), 2)(images)  # the identity on a pack
    assert torch.equal(packed[1], torch.cat([images[2].flatten(), images[3].flatten()]))


@pytest.mark.parametrize("pack", [2, 4])
def test_image_discriminators_take_packs_of_channels(pack: int) -> None:
    cfg = _cfg(f"discriminator.pack={pack}", "trainer.batch_size=64")
    d = build_discriminator(cfg, _image_spec(32))
    assert d(torch.randn(8 * pack, 1, 32, 32)).shape == (8,)


def test_dcgan_init_and_kaiming_init_follow_their_papers() -> None:
    _, d = _pacgan_nets()
    weights = [m.weight for m in d.modules() if isinstance(m, nn.Linear)]
    assert all(abs(w.std().item() - 0.02) < 0.002 for w in weights)
    assert all(m.bias.abs().max().item() == 0 for m in d.modules() if isinstance(m, nn.Linear))
    cfg = _cfg("experiment=wgan_toy")
    layers = [m for m in build_discriminator(cfg, POINTS).modules() if isinstance(m, nn.Linear)]
    for layer in layers[:-1]:  # He-uniform: bound sqrt(6 / fan_in)
        bound = math.sqrt(6 / layer.in_features)
        assert layer.weight.abs().max().item() <= bound
        assert layer.weight.abs().max().item() > 0.9 * bound
    last = layers[-1]  # Glorot-uniform on the output layer
    assert last.weight.abs().max().item() <= math.sqrt(6 / (last.in_features + 1))


def test_orthogonal_init_gives_orthonormal_rows() -> None:
    cfg = _cfg("generator=mlp", "generator.init=orthogonal", "norm=none")
    for layer in (m for m in build_generator(cfg, POINTS).modules() if isinstance(m, nn.Linear)):
        w = layer.weight if layer.out_features <= layer.in_features else layer.weight.T
        torch.testing.assert_close(w @ w.T, torch.eye(len(w)), atol=1e-5, rtol=0)


def test_activation_choices_reach_the_layers() -> None:
    cfg = _cfg("experiment=wgan_toy")
    d = build_discriminator(cfg, POINTS)
    assert any(isinstance(m, nn.ReLU) for m in d.modules())
    assert not any(isinstance(m, nn.LeakyReLU) for m in d.modules())
    default = build_discriminator(_cfg("discriminator=mlp"), POINTS)
    assert any(isinstance(m, nn.LeakyReLU) for m in default.modules())


@pytest.mark.parametrize(
    ("overrides", "key", "fragment"),
    [
        (("discriminator.activation=maxout",), "discriminator.activation", "for mlp networks"),
        (("generator.activation=maxout",), "generator.activation", "for mlp networks"),
        (("conditional=true", "discriminator.pack=2"), "discriminator.pack", "unconditional"),
    ],
)
def test_options_that_do_not_fit_the_network_are_refused(
    overrides: tuple[str, ...], key: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as error:
        check_buildable(_cfg(*overrides), _image_spec(32))
    assert error.value.key == key
    assert fragment in str(error.value)
