"""Bad input of every class is refused before anything runs: one line naming the key, exit code 2.

Classes: a checkpoint to continue from that does not fit the run, numbers out of range, sizes the
data cannot hold, and memory the machine does not have.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import torch
from commands import run_command
from helpers import compose_config, smoke_config, smoke_run

from ganexp.config import RunConfig, validate
from ganexp.data import data_spec
from ganexp.engine.checkpoint import CheckpointStore, load_checkpoint, save_checkpoint
from ganexp.errors import ConfigError
from ganexp.session.build import build_discriminator, build_generator, check_buildable
from ganexp.session.memory import Estimate, check_memory, cpu_available, estimate
from ganexp.session.preflight import check_config, preflight

GANEXP = str(Path(sys.executable).with_name("ganexp"))
SMOKE = ("experiment=smoke", "logger=none", "metrics.enabled=false")
TOY = ("data=ring8", "generator=mlp", "discriminator=mlp", "norm=none")


def refused(tmp_path: Path, *args: str) -> str:
    """Run `ganexp ARGS`; check it is refused in one line before Hydra made a run folder."""
    run_dir = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = run_command(
        "ganexp", *args, f"hydra.run.dir={run_dir}", cwd=tmp_path, env=env, timeout=300
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) <= 3, result.stderr
    assert lines[-1].startswith("ganexp: error: ") and "=" in lines[-1], lines[-1]
    assert not run_dir.exists()
    return lines[-1].removeprefix("ganexp: error: ")


def refusal(*argv: str) -> str:
    with pytest.raises(ConfigError) as error:
        preflight(list(argv))
    message = str(error.value)
    assert "\n" not in message
    return message


# --- a checkpoint that does not fit the run -----------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of a real smoke run (widths 16, Adam, 256 examples)."""
    run_dir = tmp_path_factory.mktemp("trained")
    smoke_run(run_dir, "metrics.enabled=false", "trainer.max_steps=2")
    return run_dir


@pytest.mark.slow  # a ganexp process that builds the networks before it refuses
def test_resume_with_other_networks_is_refused_naming_the_key(tmp_path: Path, trained: Path):
    message = refused(tmp_path, *SMOKE, f"resume={trained}", "generator.width=32")
    assert message.startswith(f"resume='{trained}/checkpoints/last.pt': ")
    assert "the checkpoint's networks differ from this run's: generator.width is 16 in the " in (
        message
    )
    assert message.endswith("16 in the checkpoint, 32 now")


@pytest.mark.slow  # a ganexp process that builds the networks before it refuses
def test_rerun_in_its_own_folder_with_other_networks_is_refused(tmp_path: Path, trained: Path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    result = run_command(
        "ganexp",
        *SMOKE,
        "discriminator.width=32",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"ganexp: error: resume='{run_dir}/checkpoints/last.pt': ")
    assert "discriminator.width is 16 in the checkpoint, 32 now" in last
    assert "the run folder's own checkpoint" in last
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before


RESUME_MISMATCHES = [
    (["generator.width=32"], "networks differ from this run's: generator.width is 16 in the"),
    (["generator.depth=1"], "generator.depth is 0 in the checkpoint, 1 now"),
    (["discriminator=mlp"], "discriminator.arch is dcgan in the checkpoint, mlp now"),
    (["norm.discriminator=layer"], "norm.discriminator is batch in the checkpoint, layer now"),
    (["trainer.z_dim=64"], "trainer.z_dim is 100 in the checkpoint, 64 now"),
    (["conditional=true"], "conditional is false in the checkpoint, true now"),
    (["data.image_size=64"], "data.image_size is 32 in the checkpoint, 64 now"),
    (["optim=rmsprop"], "another optimizer's state: optim.name is adam in the checkpoint, rmsprop"),
    (["data.limit=300"], "another training set: data.limit is 256 in the checkpoint, 300 now"),
    (["optim.lr_g=1e-3"], "another experiment: optim.lr_g is 0.0002 in the checkpoint, 0.001 now"),
    (["seed=1"], "another experiment: seed is 0 in the checkpoint, 1 now"),
]


@pytest.mark.parametrize(("overrides", "expected"), RESUME_MISMATCHES)
def test_resume_mismatch(trained: Path, overrides: list[str], expected: str) -> None:
    message = refusal(*SMOKE, f"resume={trained}", *overrides)
    assert message.startswith("resume="), message
    assert expected in message, message


def test_resume_of_a_fitting_checkpoint_passes(trained: Path) -> None:
    preflight([*SMOKE, f"resume={trained}", "trainer.log_every=1", "trainer.max_steps=4"])


def test_a_mismatch_the_keys_miss_is_caught_by_the_tensor_shapes(tmp_path: Path, trained: Path):
    """A checkpoint whose config does not say what its tensors are: their shapes still tell."""
    state = load_checkpoint(trained / "checkpoints" / "last.pt")
    state["config"]["generator"]["width"] = 32
    path = tmp_path / "config_says_32.pt"
    save_checkpoint(state, path)
    message = refusal(*SMOKE, f"resume={path}", "generator.width=32")
    assert (
        "networks differ from this run's: generator tensor net.0.weight is [100, 64, 4, 4] in"
        in (message)
    )
    assert "[100, 128, 4, 4] now" in message


def test_a_sweep_job_whose_folder_holds_another_runs_checkpoint_is_refused(
    tmp_path: Path, trained: Path
) -> None:
    sweep = tmp_path / "sweep"
    shutil.copytree(trained, sweep / "1")
    argv = ["-m", *SMOKE, "trainer.max_steps=2,4", f"hydra.sweep.dir={sweep}"]
    preflight(argv)  # job 1 continues its own checkpoint
    message = refusal(*argv, "generator.width=8")
    assert message.startswith(f"resume='{sweep}/1/checkpoints/last.pt': ")


def test_check_config_looks_at_the_given_run_folder(trained: Path) -> None:
    cfg = compose_config(*SMOKE, "generator.width=32")
    with pytest.raises(ConfigError, match=r"generator\.width is 16 in the checkpoint, 32 now"):
        check_config(cfg, trained)
    check_config(compose_config(*SMOKE), trained)


# --- numbers out of range -----------------------------------------------------------------------


def test_a_negative_seed_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, *SMOKE, "seed=-1")
    assert message == "seed=-1: must be in [0, 2**32 - 1]"


def test_an_infinite_learning_rate_is_refused(tmp_path: Path) -> None:
    assert refused(tmp_path, *SMOKE, "optim.lr_g=inf") == "optim.lr_g=inf: must be a finite number"


def _float_keys(schema: type, prefix: str = "") -> list[str]:
    """Every float-typed key of the schema."""
    keys = []
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            keys += _float_keys(hint, f"{prefix}{f.name}.")
        elif float in (hint, *typing.get_args(hint)):
            keys.append(prefix + f.name)
    return keys


FLOAT_KEYS = _float_keys(RunConfig)


def test_the_schema_has_the_float_keys_this_file_tests() -> None:
    assert {"optim.lr_g", "norm.eps", "data.std", "loss.label_smoothing"} <= set(FLOAT_KEYS)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_every_float_key_refuses_non_finite_values(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as error:
        validate(compose_config(f"{key}={value}"))
    assert str(error.value) == f"{key}={float(value)!r}: must be a finite number"


OUT_OF_RANGE = [
    (["seed=4294967296"], "seed=4294967296: must be in [0, 2**32 - 1]"),
    ([*TOY, "data.std=0"], "data.std=0.0: must be > 0"),
    ([*TOY, "data.radius=-1"], "data.radius=-1.0: must be > 0"),
    (["data=grid25", *TOY[1:], "data.spacing=0"], "data.spacing=0.0: must be > 0"),
    ([*TOY, "data.modes=-3"], "data.modes=-3: must be >= 0"),
    (["data.num_classes=-1"], "data.num_classes=-1: must be >= 0"),
    (["data.image_size=-32"], "data.image_size=-32: must be an integer >= 1"),
    (["trainer.batch_size=" + str(10**20)], "too large: at most 2**63 - 1"),
    (["trainer.z_dim=" + str(10**19)], f"trainer.z_dim={10**19}: too large: at most 2**63 - 1"),
    (["generator.width=" + str(10**12)], "generator.width=1000000000000: too large: a layer's"),
    (["generator=mlp", "discriminator=mlp", "data.image_size=" + str(10**8)], "data.image_size="),
    (
        ["experiment=pacgan_ring", "trainer.batch_size=100", "discriminator.pack=3"],
        "trainer.batch_size=100: counts samples and must divide into packs of discriminator.pack=3",
    ),
    (["discriminator.pack=0"], "discriminator.pack=0: must be an integer >= 1"),
    (["generator.pack=2"], "generator.pack=2: packing is D's view of the batch: must be 1"),
    (["discriminator.maxout_pieces=1"], "discriminator.maxout_pieces=1: must be an integer >= 2"),
    (["generator.activation=swish"], "generator.activation"),
    (["discriminator.init=he"], "discriminator.init"),
    (["generator.init_gain=1.4"], "generator.init_gain=1.4: scales init=orthogonal only"),
    (
        [
            "experiment=cyclegan_fashion_sneaker_boot",
            "trainer.simultaneous=true",
            "loss.consensus_weight=1",
        ],
        "loss.consensus_weight=1.0: not with the image pool",
    ),
]


@pytest.mark.parametrize(
    ("argv", "expected"), OUT_OF_RANGE, ids=[" ".join(a) for a, _ in OUT_OF_RANGE]
)
def test_numbers_out_of_range(argv: list[str], expected: str) -> None:
    assert expected in refusal(*argv)


def test_step_checkpoints_past_six_digits_stay_in_order(tmp_path: Path) -> None:
    """trainer.max_steps above 999999: step_1000000.pt sorts before step_999999.pt as text."""
    store = CheckpointStore(tmp_path, keep=1)
    for step in (999_999, 1_000_000):
        store.save({"generator": {}, "step": step}, step)
    assert [p.name for p in store.steps()] == ["step_1000000.pt"]
    assert load_checkpoint(store.last)["step"] == 1_000_000


# --- sizes the data cannot hold -----------------------------------------------------------------


@pytest.mark.slow  # a ganexp process that builds the networks before it refuses
def test_a_batch_larger_than_the_training_set_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, *SMOKE, "trainer.batch_size=300")
    assert message == (
        "trainer.batch_size=300: more than the 256 training examples (data.limit=256); at most 256"
    )


TOO_BIG_FOR_THE_DATA = [
    (["trainer.batch_size=60001"], "more than the 60000 training examples; at most 60000"),
    (["experiment=smoke", "trainer.batch_size=257"], "trainer.batch_size=257: more than the 256"),
    (["data.limit=1000"], "metrics.num_samples=10000: evaluation (once, at the last step: "),
    (["data.limit=1000", "trainer.eval_every=5"], "10000: evaluation compares with as many real"),
    (["experiment=smoke", "metrics.num_samples=257"], "only 256 training examples (data.limit="),
]


@pytest.mark.parametrize(("argv", "expected"), TOO_BIG_FOR_THE_DATA)
def test_sizes_the_data_cannot_hold(argv: list[str], expected: str) -> None:
    assert expected in refusal(*argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["experiment=smoke", "trainer.batch_size=256", "metrics.num_samples=256"],
        ["experiment=smoke", "metrics.enabled=false", "metrics.num_samples=100000"],
        [*TOY, "trainer.batch_size=100000", "metrics.num_samples=100000"],  # sampled fresh
    ],
)
def test_sizes_the_data_can_hold_pass(argv: list[str]) -> None:
    preflight(argv)


def test_a_limit_above_the_data_set_is_a_note_not_an_error(capsys) -> None:
    """debug=smoke's data.limit=256 must keep working on a smaller image folder."""
    preflight(["experiment=smoke", "data.limit=70000"])
    assert "ganexp: note: data.limit=70000 is more than the 60000 examples of " in (
        capsys.readouterr().err
    )


# --- memory the machine does not have -----------------------------------------------------------


@pytest.mark.slow  # a ganexp process that builds the networks before it refuses
def test_an_absurd_batch_is_refused_for_memory(tmp_path: Path) -> None:
    message = refused(tmp_path, *SMOKE, *TOY, "trainer.batch_size=100000000")
    assert message.startswith("trainer.batch_size=100000000: a training step needs about ")
    assert "GiB (estimate), " in message and "GiB available on cpu; lower trainer.batch_size" in (
        message
    )


MEMORY = [
    ([*TOY, "generator.width=1000000"], "generator.width=1000000: the networks and their optim"),
    ([*TOY, "discriminator.width=1000000"], "discriminator.width=1000000: the networks"),
    ([*TOY, "metrics.num_samples=1000000000"], "metrics.num_samples=1000000000: evaluation needs"),
    (["trainer.num_samples=100000000"], "trainer.num_samples=100000000: the sample grid needs"),
    (["generator.width=4096"], "generator.width=4096: the networks and their optimizer state"),
    ([*TOY, "generator.width=4096", "trainer.replicas=1000"], "trainer.replicas=1000: 1000 repl"),
]


@pytest.mark.parametrize(("argv", "expected"), MEMORY)
def test_memory_refusal_names_the_key_that_dominates(argv: list[str], expected: str) -> None:
    assert refusal(*argv).startswith(expected)


def test_a_training_set_too_large_to_hold_names_the_loader() -> None:
    cfg = validate(compose_config())
    need = Estimate(
        1, 1, 1, 0, 1, data=2**60, evaluation=1, samples=1, network_key="generator.width"
    )
    with pytest.raises(ConfigError) as error:
        check_memory(cfg, need, torch.device("cpu"))
    assert str(error.value).startswith("data.loader='auto': the training set held as one tensor")


@pytest.mark.parametrize("optim", ["adam", "rmsprop"])
def test_network_memory_is_the_exact_size_of_parameters_gradients_and_optimizer_state(
    optim: str,
) -> None:
    cfg = validate(compose_config(f"optim={optim}"))
    spec = data_spec(cfg.data)
    generator, discriminator = build_generator(cfg, spec), build_discriminator(cfg, spec)
    params = sum(p.numel() * 4 for net in (generator, discriminator) for p in net.parameters())
    buffers = sum(
        b.numel() * b.element_size() for n in (generator, discriminator) for b in n.buffers()
    )
    need = estimate(
        cfg, spec, *check_buildable(cfg, spec), tensor_data=True
    )  # from the meta networks
    assert need.weights == params + buffers
    assert need.gradients == params
    assert need.optimizer == (2 if optim == "adam" else 1) * params
    opt = torch.optim.Adam if optim == "adam" else torch.optim.RMSprop
    real = opt(generator.parameters())
    for p in generator.parameters():
        p.grad = torch.zeros_like(p)
    real.step()
    state = sum(t.numel() * 4 for s in real.state.values() for t in s.values() if t.dim())
    assert state == (2 if optim == "adam" else 1) * sum(
        p.numel() * 4 for p in generator.parameters()
    )


def test_activations_grow_with_the_batch_the_penalty_and_shrink_per_process() -> None:
    cfg = validate(compose_config())
    spec = data_spec(cfg.data)
    nets = check_buildable(cfg, spec)
    small = estimate(cfg, spec, *nets, tensor_data=True)
    cfg.trainer.batch_size *= 4
    assert estimate(cfg, spec, *nets, tensor_data=True).step > 3.9 * small.step
    assert estimate(cfg, spec, *nets, processes=4, tensor_data=True).step == small.step
    gp = validate(compose_config("loss=wgan_gp"))
    assert estimate(gp, spec, *nets, tensor_data=True).step > 1.5 * small.step
    r1 = validate(compose_config("loss.r1_weight=1"))
    assert estimate(r1, spec, *nets, tensor_data=True).step > 1.5 * small.step


def test_the_ema_generator_and_historical_means_are_counted_exactly() -> None:
    cfg = validate(compose_config("trainer.ema_decay=0.999"))
    spec = data_spec(cfg.data)
    nets = check_buildable(cfg, spec)
    plain = estimate(validate(compose_config()), spec, *nets, tensor_data=True)
    tensors = (*nets[0].parameters(), *nets[0].buffers())  # G's, copied once
    ema = sum(t.numel() * t.element_size() for t in tensors)
    assert estimate(cfg, spec, *nets, tensor_data=True).weights == plain.weights + ema
    hist = validate(compose_config("loss.historical_weight=0.1"))
    params = sum(p.numel() * p.element_size() for net in nets for p in net.parameters())
    assert estimate(hist, spec, *nets, tensor_data=True).weights == plain.weights + params


def test_replicas_multiply_what_each_holds_and_a_stacked_step() -> None:
    cfg = validate(compose_config())
    spec = data_spec(cfg.data)
    nets = check_buildable(cfg, spec)
    one = estimate(cfg, spec, *nets, tensor_data=True)
    cfg.trainer.replicas = 3
    stacked = estimate(cfg, spec, *nets, tensor_data=True, stacked=True)
    in_turn = estimate(cfg, spec, *nets, tensor_data=True, stacked=False)
    assert stacked.networks == in_turn.networks == 3 * one.networks
    assert stacked.data == 3 * one.data > 0
    assert (stacked.step, in_turn.step) == (3 * one.step, one.step)
    assert stacked.evaluation == one.evaluation  # one replica at a time, the real side shared


MEASURE = """
import os, resource, sys, torch
sys.path.insert(0, "tests")
from ganexp.config import register_schema
register_schema()
from helpers import smoke_session
from pathlib import Path
s = smoke_session(Path(sys.argv[1]), *sys.argv[2:])
rss = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
s.trainer.run_step()
s.trainer.run_step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss)
"""


@pytest.mark.slow  # a fresh Python process training two steps of batch 512
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads Linux's /proc")
def test_training_step_estimate_bounds_the_measured_memory(tmp_path: Path) -> None:
    """Two real training steps in a fresh process: the growth of its peak resident memory lies
    between a quarter of the estimate and the estimate (measured: about 0.55 to 0.95 of it)."""
    overrides = ["metrics.enabled=false", "device=cpu", "trainer.batch_size=512"]
    overrides += ["generator.width=64", "discriminator.width=64", "data.limit=1024"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(tmp_path), *overrides],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=Path(__file__).parent.parent,
    )
    assert out.returncode == 0, out.stderr
    measured = int(out.stdout.split()[-1])
    cfg, _ = smoke_config(*overrides)
    spec = data_spec(cfg.data)
    need = estimate(cfg, spec, *check_buildable(cfg, spec), tensor_data=True)
    predicted = need.gradients + need.optimizer + need.step
    assert predicted / 4 < measured < predicted, (measured, predicted)


def test_available_memory_is_read_on_linux() -> None:
    if not Path("/proc/meminfo").exists():
        pytest.skip("reads Linux's /proc")
    free = cpu_available()
    assert free is not None and 0 < free <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@pytest.mark.slow  # a ganexp process that builds the networks before it refuses
def test_a_bad_published_number_is_refused_before_training(tmp_path: Path) -> None:
    """A preset's `paper` rows are checked with the run, not when the sweep is summarized."""
    message = refused(tmp_path, "experiment=pacgan_ring", "debug=smoke", "paper.0.pm_kind=SEM")
    allowed = "SE or SD (what the ± is), or none (the paper prints no spread)"
    assert message == f"paper[0].pm_kind='SEM': {allowed}"


UNRESOLVABLE = [
    (["generator.width=${oc.env:GANEXP_TEST_UNSET}"], "Environment variable 'GANEXP_TEST_UNSET'"),
    (["generator.width=${trainer.no_such_key}"], "Interpolation key 'trainer.no_such_key'"),
    (["generator.width=${no_such_resolver:1}"], "Unsupported interpolation type no_such_resolver"),
    (
        ["experiment=dirac_gan", "generator.start=${circle:0,5,1.4,45,X}"],
        "circle's axis is x or y, not 'X'",
    ),
]


@pytest.mark.parametrize(("argv", "expected"), UNRESOLVABLE)
def test_an_interpolation_that_cannot_resolve_is_refused_naming_its_key(
    argv: list[str], expected: str
) -> None:
    key, _, raw = argv[-1].partition("=")
    message = refusal(*argv)
    assert message.startswith(f"{key}='{raw}': cannot be resolved (") and expected in message
