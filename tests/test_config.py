"""Every option of every group composes and validates; bad values fail with one line."""

from __future__ import annotations

from importlib import resources

import pytest
from helpers import compose_config

from ganexp.config import LossName, OptimName, validate
from ganexp.errors import ConfigError
from ganexp.session.preflight import job_overrides, preflight
from ganexp.tasks import check as check_task

GROUPS = ("data", "generator", "discriminator", "norm", "loss", "optim", "device", "logger")
GROUPS += ("metrics", "trainer", "experiment", "task")
# options of the translation tasks, which the other tasks refuse; the folders need a data.root
TASK_OF_OPTION = {
    "data=fashion_edges": "paired_translation",
    "generator=unet": "paired_translation",
    "discriminator=patch": "paired_translation",
    "data=fashion_domains": "unpaired_translation",
    "generator=resnet_blocks": "unpaired_translation",
}
NEEDS_ROOT = ("data=image_folder", "data=pix2pix_folder", "data=cyclegan_folder")


def _options(group: str) -> list[str]:
    folder = resources.files("ganexp.conf") / group
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def test_every_group_of_the_design_exists() -> None:
    for group in GROUPS:
        assert _options(group), group
    norms = {"batch", "layer", "instance", "group", "spectral", "none", "virtual_batch"}
    assert set(_options("norm")) == norms
    assert set(_options("loss")) == {"bce", "wgan_clip", "wgan_gp", "hinge", "lsgan"}
    assert set(_options("data")) >= {"fashion_mnist", "mnist", "cifar10", "image_folder"}
    assert {"smoke", "dcgan_fashion_mnist"} <= set(_options("experiment"))


@pytest.mark.parametrize(
    "override",
    [f"{g}={o}" for g in GROUPS for o in _options(g) if f"{g}={o}" not in NEEDS_ROOT],
)
def test_every_option_composes_and_validates(override: str) -> None:
    task = (f"task={TASK_OF_OPTION[override]}",) if override in TASK_OF_OPTION else ()
    cfg = compose_config(override, *task)
    check_task(validate(cfg))  # the schema's checks, then the task's


def test_default_run_is_dcgan_fashion_mnist_bce_batch_norm() -> None:
    cfg = validate(compose_config())
    assert cfg.data.name == "fashion_mnist" and cfg.data.image_size == 32
    assert (cfg.generator.arch.value, cfg.discriminator.arch.value) == ("dcgan", "dcgan")
    assert cfg.loss.name == LossName.bce and cfg.loss.generator_loss == "non_saturating"
    assert (cfg.norm.generator.value, cfg.norm.discriminator.value) == ("batch", "batch")
    assert cfg.device.name.value == "auto"


@pytest.mark.parametrize(
    ("loss", "optim", "lr", "betas", "n_critic"),
    [
        ("bce", OptimName.adam, 2e-4, (0.5, 0.999), 1),
        ("wgan_clip", OptimName.rmsprop, 5e-5, None, 5),
        ("wgan_gp", OptimName.adam, 1e-4, (0.0, 0.9), 5),
    ],
)
def test_each_loss_carries_its_standard_optimizer(loss, optim, lr, betas, n_critic) -> None:
    cfg = validate(compose_config(f"loss={loss}"))
    assert cfg.optim.name == optim
    assert cfg.optim.lr_g == cfg.optim.lr_d == lr
    if betas:
        assert (cfg.optim.beta1, cfg.optim.beta2) == betas
    assert cfg.trainer.n_critic == n_critic


def test_ttur_and_n_critic_override_the_loss_defaults() -> None:
    cfg = validate(
        compose_config("loss=wgan_gp", "optim.lr_g=1e-4", "optim.lr_d=4e-4", "trainer.n_critic=2")
    )
    assert (cfg.optim.lr_g, cfg.optim.lr_d, cfg.trainer.n_critic) == (1e-4, 4e-4, 2)
    assert validate(compose_config("loss=wgan_clip", "optim=adam")).optim.name == OptimName.adam


def test_per_network_norm() -> None:
    cfg = validate(compose_config("norm=layer", "norm.discriminator=instance"))
    assert (cfg.norm.generator.value, cfg.norm.discriminator.value) == ("layer", "instance")


def test_experiment_preset_sets_values_and_command_line_wins() -> None:
    cfg = validate(compose_config("experiment=smoke", "trainer.max_steps=9"))
    assert cfg.data.limit == 256 and cfg.trainer.max_steps == 9


def test_sweep_expands_to_every_job() -> None:
    jobs = job_overrides(["norm=batch,layer", "loss=bce,wgan_clip,wgan_gp", "seed=1"], True)
    assert len(jobs) == 6
    assert ["norm=layer", "loss=wgan_gp", "seed=1"] in jobs


BAD_INPUTS = [
    (["norm=foo"], "norm='foo': allowed: batch, group, instance, layer, none, spectral"),
    (["loss=hinges"], "loss='hinges': allowed: bce, hinge, lsgan, wgan_clip, wgan_gp"),
    (
        ["loss.gp_wieght=5"],
        "loss.gp_wieght=5: no such key; keys of loss: _target_, name, generator_loss",
    ),
    (["loss.r1_weight=-1"], "loss.r1_weight=-1.0: must be >= 0"),
    (["loss.r1_every=0"], "loss.r1_every=0: must be an integer >= 1"),
    (["trainer.ema_decay=1"], "trainer.ema_decay=1.0: must be in [0, 1)"),
    (["loss.historical_weight=-1"], "loss.historical_weight=-1.0: must be >= 0"),
    (["device=tpu"], "device='tpu': allowed: auto, cpu, cuda, mps"),
    (["norm.discriminator=foo"], "norm.discriminator='foo': allowed: batch, layer, instance"),
    (["trainer.batch_size=abc"], "trainer.batch_size='abc': must be an integer"),
    (["trainer.batch_size=0"], "trainer.batch_size=0: must be an integer >= 1"),
    (["trainer.max_steps=1.5"], "trainer.max_steps=1.5: must be an integer"),
    (["conditional=maybe"], "conditional='maybe': must be true or false"),
    (["optim.lr_g=-1"], "optim.lr_g=-1.0: must be > 0"),
    (["optim.lr_g=nan"], "optim.lr_g=nan: must be a finite number"),
    (["seed=-1"], "seed=-1: must be in [0, 2**32 - 1]"),
    (["optim.beta2=1.0"], "optim.beta2=1.0: must be in [0, 1)"),
    (["loss.label_smoothing=0.7"], "loss.label_smoothing=0.7: must be in [0, 0.5)"),
    (["loss.generator_loss=foo"], "loss.generator_loss='foo': allowed: non_saturating, minimax"),
    (["trainer.foo=1"], "trainer.foo='1': no such key; keys of trainer: max_steps, batch_size"),
    (["+trainer.foo=1"], "trainer.foo=1: no such key; keys of trainer: max_steps, batch_size"),
    (["+sead=1"], "sead=1: no such key; keys of the top level: data, generator"),
    (["data.image_size=30"], "data.image_size=30: dcgan makes images of"),
    (["norm=group", "norm.num_groups=5"], "norm.num_groups=5: must divide every normalized"),
    (["generator=mlp", "norm.generator=instance"], "norm.generator='instance': instance norm"),
    (["data=ring8"], "generator.arch='dcgan': data=ring8 is 2-D points; use generator=mlp"),
    (["loss=bce,wgan_gp"], "loss='bce,wgan_gp': a comma-separated list sweeps only with -m"),
    (["-m", "norm=batch,nope"], "norm='nope': allowed:"),
    (["data.channels=2"], "data.channels=2: allowed: 1, 3"),
    (["device=cuda"], "device='cuda': not available on this machine; available: cpu"),
    (["device.precision=fp16"], "device.precision='fp16': fp16 needs a CUDA GPU; on cpu use bf16"),
    (["device.precision=fp8"], "device.precision='fp8': allowed: auto, fp32, bf16, fp16"),
    (["metrics.features=vgg"], "metrics.features='vgg': allowed: auto, inception, classifier"),
    (["metrics.num_samples=3"], "metrics.num_samples=3: must be >= 6"),
    (["resume=/nonexistent/run"], "resume='/nonexistent/run': must be a run folder holding"),
]


@pytest.mark.parametrize(("argv", "expected"), BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_naming_key_value_and_allowed(argv: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        preflight(argv)
    message = str(error.value)
    assert message.startswith(expected), message
    assert "\n" not in message
