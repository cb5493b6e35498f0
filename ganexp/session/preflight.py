"""Refuse a bad command before it costs anything.

Before Hydra creates a run folder, every job the command line describes (one, or each job of a
``-m`` sweep) is composed with Hydra's compose API and checked as a job would check it: types and
options (Hydra), ranges (:func:`ganexp.config.validate`), data files, device, and the networks
built on the meta device. The first problem is printed as one line, with no traceback.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections import Counter
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra import compose, initialize_config_module
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from ganexp.config import (
    CONFIG_MODULE,
    REPLICAS_ALLOWED,
    SEED_MAX,
    LossName,
    NetConfig,
    Norm,
    RunConfig,
    composition_error,
    lookup,
    schema,
    validate,
)
from ganexp.errors import ConfigError
from ganexp.session.plan import Plan

if TYPE_CHECKING:
    from torch import nn

    from ganexp.data import DataSpec

# Flags that take a value, and flags after which Hydra does not run a job.
_FLAGS_WITH_VALUE = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd"}
_FLAGS_WITH_VALUE |= {"--cfg", "-c", "--package", "-p", "--experimental-rerun"}
_INFO_FLAGS = {"--info", "-i"}  # its value is optional: one of Hydra's topics
_INFO_TOPICS = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}
_NO_JOB_FLAGS = {"-h", "--help", "--hydra-help", "--info", "-i", "--cfg", "-c", "-sc"}
_NO_JOB_FLAGS |= {"--shell-completion", "--version"}

# What a resume may change: how long the run trains, how often it logs, samples, evaluates and
# checkpoints, where its data files are and its results go, what it evaluates, and the device
# and kernels it runs on. Every other key of the config (a key added later too) is part of the
# experiment and must be the checkpoint's. An entry ending in "." covers a whole group.
RESUME_MAY_CHANGE = (
    "resume",
    "trainer.max_steps",
    "trainer.log_every",
    "trainer.sample_every",
    "trainer.eval_every",
    "trainer.checkpoint_every",
    "trainer.keep_checkpoints",
    "trainer.num_samples",  # the grid's fixed noise comes from the checkpoint
    "trainer.progress_bar",
    "trainer.profile",
    "trainer.skip_nonfinite",  # what to do at a non-finite step, which would stop the run
    "optim.implementation",  # the same update, another kernel
    "data.root",  # but for the folder data sets, whose data it is (FOLDER_DATA)
    "data.search",
    "data.download",
    "data.cache_dir",
    "data.verify_checksums",
    "data.num_workers",  # the batch order is the sampler's, in the main process
    "logger.",
    "metrics.",
    "device.",
    "paper",  # published numbers a study compares with
)
FOLDER_DATA = ("image_folder", "pix2pix_folder", "cyclegan_folder")  # data.root is the data


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separate Hydra's flags (with their values) from the overrides, wherever each stands."""
    flags: list[str] = []
    overrides: list[str] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if not arg.startswith("-"):
            overrides.append(arg)
            continue
        flags.append(arg)
        info_topic = arg in _INFO_FLAGS and bool(args) and args[0] in _INFO_TOPICS
        if (arg in _FLAGS_WITH_VALUE or info_topic) and args:
            flags.append(args.pop(0))
    return flags, overrides


def flags_first(argv: list[str]) -> list[str]:
    """``argv`` with Hydra's flags before the overrides, so that ``ganexp experiment=X -m
    norm=a,b`` works as typed (Hydra's argument parser wants flags before overrides)."""
    flags, overrides = split_argv(argv)
    return [*flags, *overrides]


def _is_hydra_override(override: str) -> bool:
    return override.lstrip("+~").startswith(("hydra.", "hydra/"))


def job_overrides(
    overrides: list[str], multirun: bool, config_params: dict[str, str] | None = None
) -> list[list[str]]:
    """The override list of every job the command would run (Hydra's own sweep expansion).

    ``config_params``: ``hydra.sweeper.params`` from the composed config (a preset's sweep);
    the command line comes after them and wins, as in Hydra's basic sweeper.
    """
    own = [o for o in overrides if not _is_hydra_override(o)]
    if not multirun:
        return [own]
    params = [f"{key}={value}" for key, value in (config_params or {}).items()]
    parsed = OverridesParser.create().parse_overrides(params + own)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def _sweeper_params(overrides: list[str]) -> dict[str, str]:
    """The basic sweeper's ``params`` that a preset defines (other sweepers search, not list)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    cfg = compose("config", overrides=fixed, return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    if "BasicSweeper" not in str(sweeper.get("_target_", "")) or not sweeper.get("params"):
        return {}
    return {str(k): str(v) for k, v in sweeper.params.items()}


# plans the command's check made before Hydra started the job in this process, by job
_PLANS: dict[tuple[str, str], Plan] = {}


def check_config(cfg: DictConfig, run_dir: Path | None = None) -> RunConfig:
    """Everything a job checks before it starts work; returns the typed config.

    ``run_dir``: the job's run folder, whose own checkpoints it would continue from (inside a
    Hydra job, Hydra's output dir when not given).
    """
    return plan_job(cfg, run_dir).cfg


def plan_job(cfg: DictConfig, run_dir: Path | None = None) -> Plan:
    """The job's :class:`Plan`: the one the command's check made of this job before Hydra
    started it in this process (its checkpoint unchanged since), or checked now."""
    if run_dir is None and HydraConfig.initialized():
        run_dir = Path(HydraConfig.get().runtime.output_dir)
    planned = _PLANS.pop(_plan_key(cfg, run_dir), None)
    if planned is not None and _unchanged(planned, run_dir):
        return planned
    return _check(cfg, run_dir)


def _plan_key(cfg: DictConfig, run_dir: Path | None) -> tuple[str, str]:
    return OmegaConf.to_yaml(cfg, resolve=True), str(run_dir)


def _unchanged(plan: Plan, run_dir: Path | None) -> bool:
    """Whether the checkpoint the job would continue from is still the one the plan read."""
    from ganexp.engine.checkpoint import resume_source

    if plan.resumed is None:
        return resume_source(plan.cfg.resume, run_dir or Path.cwd()) is None
    return _stamp(plan.resumed[1]) == plan.stamp


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _check(cfg: DictConfig, run_dir: Path | None) -> Plan:
    run_cfg = validate(cfg)
    # torch and torchvision take seconds to import: a typo is reported before that
    from ganexp.tasks import check as check_task

    task = check_task(run_cfg)
    from ganexp.analysis.cells import check_paper_rows
    from ganexp.data import data_plan
    from ganexp.engine.checkpoint import load_resume, resume_source
    from ganexp.engine.device import resolve_device, resolve_precision
    from ganexp.engine.distributed import launched_world_size
    from ganexp.session.build import check_buildable
    from ganexp.session.memory import check_memory, estimate

    check_paper_rows(run_cfg.paper, cfg)
    if run_cfg.loss._target_ is not None:
        from ganexp.parts.losses import build_loss

        build_loss(run_cfg.loss)
    if run_dir is None and HydraConfig.initialized():
        run_dir = Path(HydraConfig.get().runtime.output_dir)
    resumed = None
    if run_cfg.resume or run_dir is not None:
        source = resume_source(run_cfg.resume, run_dir or Path.cwd())
        if run_cfg.resume and run_cfg.trainer.replicas > 1:
            raise _replicas_from_one_checkpoint(run_cfg)
        resumed = load_resume(source)
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    for key in unread_loss_keys(run_cfg):  # the config shown and saved holds what is read
        resolved["loss"].pop(key, None)
    checks = [(resumed, run_cfg, resolved)] if resumed is not None else []
    if run_cfg.trainer.replicas > 1 and run_dir is not None:
        checks += _replicas_resumed(run_cfg, resolved, run_dir)
    device = resolve_device(run_cfg.device.name)
    resolve_precision(run_cfg.device.precision, device)
    check_processes(run_cfg, device.type)
    spec, tensor_data = data_plan(run_cfg.data)
    check_sizes(run_cfg, spec)
    task.check_data(spec)
    generator, discriminator = check_buildable(run_cfg, spec)
    if run_cfg.trainer.replicas > 1:
        _check_stackable(run_cfg, generator, discriminator)
    for state, job_cfg, job_resolved in checks:
        check_resume_fits(state, job_cfg, job_resolved, spec, generator, discriminator)
    processes = launched_world_size()
    stacked = True
    if run_cfg.trainer.replicas > 1:
        from ganexp.engine.replicas import vectorize

        stacked = vectorize((generator, discriminator), device)
    need = estimate(
        run_cfg,
        spec,
        generator,
        discriminator,
        processes,
        tensor_data=tensor_data,
        stacked=stacked,
    )
    check_memory(run_cfg, need, device)
    if run_cfg.trainer.replicas > 1:  # each replica continues from its own folder's checkpoint
        resumed = None
    stamp = _stamp(resumed[1]) if resumed else None
    return Plan(run_cfg, resolved, spec, resumed, generator, discriminator, stamp)


def _check_stackable(cfg: RunConfig, generator: nn.Module, discriminator: nn.Module) -> None:
    """Stacked replicas compute only the loss terms that say they can be stacked."""
    from ganexp.parts.losses import build_loss
    from ganexp.parts.terms import loss_terms

    terms = loss_terms(cfg.loss, build_loss(cfg.loss), generator, discriminator)
    refused = next((term for term in terms if not term.stackable), None)
    if refused is not None:
        k = cfg.trainer.replicas
        raise ConfigError(refused.key, lookup(cfg, refused.key), REPLICAS_ALLOWED.format(k))


def _replicas_from_one_checkpoint(cfg: RunConfig) -> ConfigError:
    k = cfg.trainer.replicas
    return ConfigError(
        "resume",
        cfg.resume,
        f"trainer.replicas={k} would continue all {k} replicas from this one checkpoint: "
        f"copies of one run, not {k} seeds (a summary would count them as n = {k}, sd 0); "
        "a replicas job continues its replicas by itself when its command runs again in its "
        f"folder (hydra.run.dir=RUN); for {k} seeds leave out resume",
    )


def _replicas_resumed(
    cfg: RunConfig, resolved: dict[str, Any], run_dir: Path
) -> list[tuple[tuple[dict, Path], RunConfig, dict[str, Any]]]:
    """The checkpoint each replica of a replicas job continues from in its own folder, with
    that replica's config (a run's with seed ``seed + k``)."""
    from ganexp.engine.checkpoint import load_resume, resume_source
    from ganexp.session.run import replica_config, replica_dir

    found = []
    for k in range(cfg.trainer.replicas):
        resumed = load_resume(resume_source(None, replica_dir(run_dir, k)))
        if resumed is not None:
            found.append((resumed, *replica_config(cfg, resolved, k)))
    return found


def _examples(cfg: RunConfig, spec: DataSpec) -> str:
    limit = f" (data.limit={cfg.data.limit})" if cfg.data.limit == spec.size else ""
    return f"{spec.size} training examples{limit}"


def check_sizes(cfg: RunConfig, spec: DataSpec, training: bool = True) -> None:
    """Sizes the training set must hold: a whole batch, and the real images evaluation compares
    with (as many as it generates). Toy mixtures are sampled fresh and hold any number.
    ``training=False``: a checkpoint's evaluation (ganexp-eval), not a run's."""
    if spec.size is None:
        return
    batch = cfg.trainer.batch_size
    if batch > spec.size:
        what = f"more than the {_examples(cfg, spec)}; at most {spec.size}"
        raise ConfigError("trainer.batch_size", batch, what)
    from ganexp.tasks import task_of

    n = cfg.metrics.num_samples
    held_out = task_of(cfg).translates  # evaluates on held-out images, up to n
    if cfg.metrics.enabled and n > spec.size and not held_out:
        once = " (once, at the last step: trainer.eval_every=0)"
        when = "" if cfg.trainer.eval_every or not training else once
        raise ConfigError(
            "metrics.num_samples",
            n,
            f"evaluation{when} compares with as many real images, and there are only "
            f"{_examples(cfg, spec)}; at most {spec.size}, or metrics.enabled=false",
        )


def notes(cfg: RunConfig, spec: DataSpec) -> list[str]:
    """Legitimate settings that do not do what they say, one line each."""
    found = []
    if cfg.data.limit is not None and spec.size is not None and cfg.data.limit > spec.size:
        found.append(
            f"data.limit={cfg.data.limit} is more than the {spec.size} examples of "
            f"data.name={cfg.data.name}; all {spec.size} are used"
        )
    return found


def _plain(value: object) -> str:
    """A value as it is typed on the command line."""
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def resume_may_change(key: str, data_name: str) -> bool:
    """Whether a resume may give dotted ``key`` another value than its checkpoint's
    (:data:`RESUME_MAY_CHANGE`) when the run trains on ``data_name``."""
    if key == "data.root" and data_name in FOLDER_DATA:
        return False
    return any(
        key == entry or (entry.endswith(".") and key.startswith(entry))
        for entry in RESUME_MAY_CHANGE
    )


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict as {dotted key: value}; lists are values."""
    found: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            found |= _flat(value, f"{prefix}{key}.")
        else:
            found[f"{prefix}{key}"] = value
    return found


@functools.cache
def _defaults() -> dict[str, Any]:
    return _flat(OmegaConf.to_container(schema(), resolve=True, enum_to_str=True))


_ABSENT = object()


def experiment_differences(saved: dict[str, Any], resolved: dict[str, Any]) -> dict[str, str]:
    """{key: "KEY is THEN in the checkpoint, NOW now"} for every key outside
    :data:`RESUME_MAY_CHANGE` whose value differs between a checkpoint's resolved config and
    this run's. A key the checkpoint's config lacks (one added since) counts as its default."""
    then, now = _flat(saved), _flat(resolved)
    data_name = str(now.get("data.name"))
    found = {}
    for key in [*now, *(key for key in then if key not in now)]:
        if resume_may_change(key, data_name):
            continue
        # a key one side lacks (added since, or one nothing read) counts as its default
        old = then.get(key, _defaults().get(key, _ABSENT))
        new = now.get(key, _defaults().get(key, _ABSENT))
        if old != new:
            shown = [("absent" if v is _ABSENT else _plain(v)) for v in (old, new)]
            found[key] = f"{key} is {shown[0]} in the checkpoint, {shown[1]} now"
    return found


def _network_keys(cfg: RunConfig) -> list[str]:
    """The config keys ``build_generator`` and ``build_discriminator`` shape the networks by,
    besides the data's shape and classes."""
    keys = [f"{net}.{f.name}" for net in ("generator", "discriminator") for f in fields(NetConfig)]
    keys += ["norm.generator", "norm.discriminator", "trainer.z_dim", "conditional"]
    if Norm.group in (cfg.norm.generator, cfg.norm.discriminator):
        keys.append("norm.num_groups")
    return keys


def _differences(saved: dict, cfg: RunConfig, keys: list[str]) -> dict[str, str]:
    found = {}
    for key in keys:
        then, now = lookup(saved, key), lookup(cfg, key)
        if then is not None and then != now:
            found[key] = f"{key} is {_plain(then)} in the checkpoint, {_plain(now)} now"
    return found


def _shape_differences(nets: dict[str, nn.Module], state: dict) -> list[str]:
    """The first tensor of each network whose name or shape differs from the checkpoint's."""
    found = []
    for name, net in nets.items():
        now = {k: list(v.shape) for k, v in net.state_dict().items()}
        then = {k: list(v.shape) for k, v in state.get(name, {}).items()}
        for key in sorted(now.keys() | then.keys()):
            if now.get(key) != then.get(key):
                found.append(
                    f"{name} tensor {key} is {then.get(key, 'absent')} in the checkpoint, "
                    f"{now.get(key, 'absent')} now"
                )
                break
    return found


def check_resume_fits(
    resumed: tuple[dict, Path],
    cfg: RunConfig,
    resolved: dict[str, Any],
    spec: DataSpec,
    generator: nn.Module,
    discriminator: nn.Module,
) -> None:
    """The checkpoint a run continues from must be of the same experiment: its stored config
    (``state["config"]``) and this run's ``resolved`` one agree on every key a resume may not
    change (:data:`RESUME_MAY_CHANGE`). Whatever its config says, it must also hold networks of
    this run's shape, the state of its optimizer, and a data position in a training set of the
    same size (images: ``data.limit``; toy data: ``data.train_size``)."""
    state, path = resumed
    saved = state.get("config") if isinstance(state.get("config"), dict) else {}
    then = state.get("spec") if isinstance(state.get("spec"), dict) else {}
    networks = _differences(saved, cfg, _network_keys(cfg))
    if then.get("shape") is not None and tuple(then["shape"]) != spec.shape:
        keys = ["data.name", "data.channels", "data.image_size"]
        shape = f"the data's shape is {list(then['shape'])} in the checkpoint, {list(spec.shape)}"
        networks |= _differences(saved, cfg, keys) or {"": f"{shape} now"}
    if cfg.conditional and then.get("num_classes", spec.num_classes) != spec.num_classes:
        networks["data.num_classes"] = (
            f"data.num_classes is {then['num_classes']} in the checkpoint, {spec.num_classes} now"
        )
    nets = {"generator": generator, "discriminator": discriminator}
    optimizer = _differences(saved, cfg, ["optim.name"])
    moved = _differences(saved, cfg, ["data.train_size"])  # toy data's fixed set
    if "size" in then and then["size"] != spec.size:
        size = f"the training set has {then['size']} examples in the checkpoint, {spec.size} now"
        moved |= _differences(saved, cfg, ["data.limit"]) or {"": size}
    # a checkpoint without its config (none written by ganexp) is judged by its contents alone
    experiment = experiment_differences(saved, resolved) if saved else {}
    if "seed" in experiment:
        experiment["seed"] += (
            " (a resumed run draws from the checkpoint's random streams: another seed is a new run)"
        )
    problems = [
        (
            "the checkpoint's networks differ from this run's",
            list(networks.values()) or _shape_differences(nets, state),
        ),
        ("the checkpoint holds another optimizer's state", list(optimizer.values())),
        ("its data position does not carry over to another training set", list(moved.values())),
        (
            "the checkpoint is another experiment",
            [line for key, line in experiment.items() if key not in networks | optimizer | moved],
        ),
    ]
    found = [f"{what}: {'; '.join(lines)}" for what, lines in problems if lines]
    own = "" if cfg.resume else " (the run folder's own checkpoint; a new run needs a new folder)"
    if found:
        raise ConfigError("resume", str(path), ". ".join(found) + own)
    from ganexp.engine.trainer import INTERVAL

    if INTERVAL in state and not _interval_fits(state[INTERVAL]):
        raise ConfigError(
            "resume", str(path), f"not a ganexp checkpoint: its '{INTERVAL}' is malformed"
        )


def _interval_fits(interval: object) -> bool:
    """The step statistics summed since the last logged row, as
    :meth:`ganexp.engine.trainer.Trainer.load_state_dict` reads them."""
    import torch

    if not isinstance(interval, dict):
        return False
    keys, sums, count = interval.get("keys"), interval.get("sums"), interval.get("count")
    return (
        isinstance(keys, list)
        and all(isinstance(key, str) for key in keys)
        and isinstance(sums, torch.Tensor)
        and sums.dtype.is_floating_point
        and sums.shape == (len(keys),)
        and isinstance(count, int)
        and not isinstance(count, bool)
        and count >= 0
    )


def check_processes(cfg: RunConfig, device_type: str) -> None:
    """What a run of several processes (torchrun) needs: a batch that splits evenly, and
    batch norm synchronized only where PyTorch can (CUDA)."""
    from ganexp.engine.distributed import launched_world_size

    processes = launched_world_size()
    if processes == 1:
        return
    if cfg.seed + processes - 1 > SEED_MAX:
        raise ConfigError(
            "seed",
            cfg.seed,
            f"process k seeds with seed + k: at most 2**32 - {processes} for {processes} processes",
        )
    from ganexp.tasks import task_of

    task = task_of(cfg)
    if not task.processes:
        raise task.refusal(f"trains in one process, not {processes}: leave out torchrun")
    if cfg.trainer.batch_size % processes:
        raise ConfigError(
            "trainer.batch_size",
            cfg.trainer.batch_size,
            f"is the whole batch and must split evenly across the {processes} processes",
        )
    pack = cfg.discriminator.pack
    if (cfg.trainer.batch_size // processes) % pack:
        raise ConfigError(
            "trainer.batch_size",
            cfg.trainer.batch_size,
            f"each of the {processes} processes' share must divide into packs of {pack}",
        )
    if cfg.loss.consensus_weight:
        # its gradients are set on the networks directly, where DDP would not average them
        allowed = f"runs in one process, not {processes}: leave out torchrun"
        raise ConfigError("loss.consensus_weight", cfg.loss.consensus_weight, allowed)
    if cfg.norm.sync_batchnorm and device_type != "cuda":
        raise ConfigError(
            "norm.sync_batchnorm",
            True,
            f"PyTorch synchronizes batch norm on CUDA only, this run is on {device_type}",
        )


def preflight(argv: list[str]) -> list[list[str]]:
    """Compose and check every job of ``argv``; raise ConfigError on the first bad one.
    Returns each job's overrides (none for a command that runs no job)."""
    flags, overrides = split_argv(argv)
    multirun = bool({"-m", "--multirun"} & set(flags))
    if "--experimental-rerun" in flags:
        where = flags[flags.index("--experimental-rerun") + 1 :][:1] or [None]
        raise ConfigError(
            "--experimental-rerun",
            where[0],
            "refused: it unpickles a file of a run folder, which can run code; run the job's "
            "overrides again instead (RUN/.hydra/overrides.yaml)",
        )
    shown = {"--cfg", "-c"} & set(flags)
    if multirun and shown:  # Hydra would end in a ValueError traceback
        flag = next(iter(shown))
        raise ConfigError(
            flag,
            (flags[flags.index(flag) + 1 :] or [None])[0],
            "shows the config of one run, not of a sweep (-m): list the sweep's jobs with "
            "--dry-run, then show one with --cfg job and its overrides",
        )
    if _NO_JOB_FLAGS & set(flags):
        return []
    hydra_overrides = [o for o in overrides if _is_hydra_override(o)]
    seeds, replicas = set(), 1
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        if not multirun:
            _note_unswept(overrides)
        jobs = []
        for num, job in enumerate(_expand(overrides, multirun)):
            numbered = [f"hydra.job.num={num}"] if multirun else []
            try:
                cfg = compose(
                    "config",
                    overrides=[*job, *hydra_overrides, *numbered],
                    return_hydra_config=True,
                )
            except (HydraException, OmegaConfBaseException) as ex:
                raise composition_error(ex, job) from ex
            run_dir = _run_dir(cfg.hydra, multirun)
            with read_write(cfg), open_dict(cfg):
                del cfg["hydra"]
            jobs.append((job, cfg, run_dir))
        check_distinct_runs([(job, cfg) for job, cfg, _ in jobs])
        checked = []
        for _, cfg, run_dir in jobs:
            plan = _check(cfg, run_dir)
            run_cfg, spec = plan.cfg, plan.spec
            checked.append(run_cfg)
            if not multirun:  # the job Hydra starts next in this process takes it over
                _PLANS[_plan_key(cfg, run_dir)] = plan
            seeds.add(run_cfg.seed)
            replicas = max(replicas, run_cfg.trainer.replicas)
            for note in notes(run_cfg, spec):
                print(f"ganexp: note: {note}", file=sys.stderr)
    check_loss_keys(overrides, checked)
    if replicas > 1 and len(seeds) > 1:  # each job's replicas would repeat other jobs' seeds
        raise ConfigError(
            "seed",
            ",".join(map(str, sorted(seeds))),
            f"is swept while trainer.replicas={replicas} trains seeds seed..seed+{replicas - 1} "
            "in each job: replicas replace the seed axis; sweep one seed "
            "(hydra.sweeper.params.seed=0)",
        )
    return [job for job, _, _ in jobs]


# the loss keys that one built-in loss reads (a user's loss: when its constructor names them)
LOSS_ONLY = {
    "label_smoothing": LossName.bce,
    "clip_value": LossName.wgan_clip,
    "gp_weight": LossName.wgan_gp,
}


def _reads(cfg: RunConfig, field: str) -> bool:
    target = cfg.loss._target_
    if target:
        from ganexp.parts.user import import_class

        return field in inspect.signature(import_class("loss._target_", target)).parameters
    return cfg.loss.name == LOSS_ONLY[field]


def unread_loss_keys(cfg: RunConfig) -> list[str]:
    """With a user's loss: the built-in losses' keys nothing reads (``name``, and those of
    :data:`LOSS_ONLY` its constructor does not take)."""
    if not cfg.loss._target_:
        return []
    return ["name", *(field for field in LOSS_ONLY if not _reads(cfg, field))]


def check_loss_keys(overrides: list[str], jobs: list[RunConfig]) -> None:
    """A loss key given on the command line that no job's loss reads is refused, not ignored.
    (A preset may set one for every loss it sweeps; a sweep's key needs one job that reads it.)"""
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        field = key.removeprefix("loss.")
        if field not in LOSS_ONLY or key == field or any(_reads(cfg, field) for cfg in jobs):
            continue
        losses = sorted({cfg.loss._target_ or f"loss={cfg.loss.name.value}" for cfg in jobs})
        raise ConfigError(
            key,
            getattr(jobs[0].loss, field) if jobs else value,
            f"only loss={LOSS_ONLY[field].value} reads it (or a user's loss whose constructor "
            f"takes {field}); nothing reads it under {', '.join(losses)}",
        )


def _note_unswept(overrides: list[str]) -> None:
    """A preset that is a sweep, run without -m, runs one job with the preset's own settings:
    say so, and how to run all of it."""
    try:
        params = _sweeper_params(overrides)
    except (HydraException, OmegaConfBaseException):
        return  # the checks that follow say what does not compose
    if not params:
        return
    count = len(job_overrides([], True, params))
    if count < 2:
        return
    experiment = next((o for o in overrides if o.startswith("experiment=")), "this config")
    print(
        f"ganexp: note: {experiment} is a sweep of {count} jobs over {', '.join(params)}; "
        f"without -m this runs one job with its own settings. Run all {count} with "
        f"ganexp -m {' '.join(overrides)} (--dry-run lists them)",
        file=sys.stderr,
    )


def check_distinct_runs(jobs: list[tuple[list[str], DictConfig]]) -> None:
    """A sweep's summary counts the jobs of a cell (its swept values but the seed) as seeds:
    refuse jobs that are copies of one run, which it would count as n seeds with sd 0. Those are
    a job listed twice (the same overrides), and jobs of different seeds that all continue from
    one checkpoint (its random streams replace the seed's). Jobs that continue one checkpoint
    with different allowed keys (``-m trainer.max_steps=10,20 resume=RUN``) are forks of one
    run, each a cell of its own."""
    counts = Counter(tuple(job) for job, _ in jobs)
    for job, count in counts.items():
        if count > 1:
            raise ConfigError(
                "-m",
                " ".join(job),
                f"the sweep lists this job {count} times: copies of one run, which its summary "
                f"would count as n = {count} with sd 0; list each value once",
            )
    shared: dict[object, tuple[str, set[int]]] = {}
    for _, cfg in jobs:
        if cfg.resume:
            resume, seeds = shared.setdefault(_checkpoint_identity(cfg.resume), (cfg.resume, set()))
            seeds.add(cfg.seed)
    for resume, seeds in shared.values():
        if len(seeds) > 1:
            listed = ",".join(map(str, sorted(seeds)))
            raise ConfigError(
                "resume",
                resume,
                f"the jobs of seed={listed} would all continue from this one checkpoint, whose "
                f"random streams replace the seed: copies of one run, not {len(seeds)} seeds (a "
                f"summary would count them as n = {len(seeds)}, sd 0); a sweep continues its "
                "jobs by itself when its command runs again (the same hydra.sweep.dir); for new "
                "seeds leave out resume",
            )


def _checkpoint_identity(resume: str) -> object:
    """What ``resume`` names: the file it would load (step files and last.pt are hard links),
    or the path as typed if there is none (the job's own check says so)."""
    path = Path(resume).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    try:
        stat = path.stat()
    except OSError:
        return str(path.resolve())
    return stat.st_dev, stat.st_ino


def _run_dir(hydra_cfg: DictConfig, multirun: bool) -> Path | None:
    """The folder a job of this command runs in; None when the sweeper numbers jobs its own
    way (the job itself then checks its folder)."""
    if not multirun:
        return Path(hydra_cfg.run.dir)
    if "BasicSweeper" not in str(hydra_cfg.sweeper.get("_target_", "")):
        return None
    try:
        return Path(hydra_cfg.sweep.dir) / str(hydra_cfg.sweep.subdir)
    except OmegaConfBaseException:  # a subdir made of what only the running job knows
        return None


def run_settings(argv: list[str]) -> tuple[str, str]:
    """The run folder and ``device.name`` a single-run command resolves to."""
    flags, overrides = split_argv(argv)
    if {"-m", "--multirun"} & set(flags):
        raise ConfigError(
            "-m",
            True,
            "a sweep cannot run under torchrun; run each job with torchrun, or sweep "
            "with hydra/launcher=slurm and hydra.launcher.tasks_per_node",
        )
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    return str(cfg.hydra.run.dir), str(cfg.device.name)


def _expand(overrides: list[str], multirun: bool) -> list[list[str]]:
    try:
        params = _sweeper_params(overrides) if multirun else {}
        return job_overrides(overrides, multirun, params)
    except (HydraException, OmegaConfBaseException) as ex:
        raise composition_error(ex) from ex
