"""Train the feature classifier of a labelled data set (see :mod:`ganexp.metrics.classifier`).

    python -m ganexp.metrics.train_classifier data=fashion_mnist \
        out=ganexp/assets/classifier_fashion_mnist.pt
    python -m ganexp.metrics.train_classifier data=mnist data.root=DIR epochs=3

Arguments are ``key=value``: ``out`` (default: ``<data.cache_dir>/classifiers/<name>-<hash>.pt``,
where a run that needs the classifier looks for it, and trains it on first use), ``epochs``
(default 8) and ``seed`` (default 0). Every other argument is an override of the run config, as
for ``ganexp``, so ``data.root``, ``data.limit`` and the rest find and shape the data as a run
would. Training uses the training split's labels; accuracy is measured on the test split
(MNIST's t10k files, CIFAR-10's test_batch, found where the training files are) or, where there is
none, on training examples, and the record says which. The checkpoint is a plain state dict
(``torch.load(path, weights_only=True)``); a JSON record with its sha256 is written beside it.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import shlex
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from ganexp.config import CONFIG_MODULE, DataConfig, composition_error, register_schema, validate
from ganexp.data import build_data, data_spec
from ganexp.data.files import cache_root
from ganexp.data.images import to_uint8
from ganexp.data.test_split import eval_split
from ganexp.errors import ConfigError
from ganexp.metrics.classifier import ARCH, INPUT_SIZE, Classifier, record_path, sha256_file

DEFAULT_EPOCHS = 8
BATCH_SIZE = 128
LR = 3e-3
WEIGHT_DECAY = 5e-4


def fit(
    model: Classifier, cfg: DataConfig, epochs: int, seed: int, device: torch.device, verbose: bool
) -> None:
    """Train ``model`` on batches of the run's own data source (AdamW, one-cycle schedule)."""
    source = build_data(cfg, BATCH_SIZE, device, seed)
    size = source.spec.size or 0
    steps_per_epoch = max(1, -(-size // BATCH_SIZE))
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=LR, total_steps=epochs * steps_per_epoch
    )
    model.train()
    start = time.perf_counter()
    for epoch in range(epochs):
        total = 0.0
        for _ in range(steps_per_epoch):
            x, y = source.next_batch()
            loss = F.cross_entropy(model(model.prepare(to_uint8(x))), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item()
        if verbose:
            seconds = time.perf_counter() - start
            print(
                f"epoch {epoch + 1}/{epochs}: loss {total / steps_per_epoch:.4f} ({seconds:.0f} s)"
            )
    model.eval()


@torch.no_grad()
def accuracy(model: Classifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of uint8 ``images`` whose arg-max logit is the label."""
    model.eval()
    predicted = model.logits(images).argmax(dim=1).cpu()
    return float((predicted == labels).double().mean())


def _atomic_write(path: str, data: bytes) -> None:
    """Write under a temporary name, then rename: a reader never sees a partial file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def train_classifier(
    cfg: DataConfig,
    out: str,
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    device: torch.device | None = None,
    command: str = "",
    verbose: bool = False,
) -> dict[str, Any]:
    """Train, score and save a classifier for ``cfg``'s data; return the record written."""
    device = device or torch.device("cpu")
    spec = data_spec(cfg)
    if not spec.num_classes:
        raise ConfigError(
            "data.num_classes",
            cfg.num_classes,
            f"data.name={cfg.name} as configured has no labels to train a classifier on "
            "(for its image metrics use metrics.features=inception)",
        )
    torch.manual_seed(seed)
    model = Classifier(spec.shape[0], spec.num_classes).to(device)
    start = time.perf_counter()
    fit(model, cfg, epochs, seed, device, verbose)
    seconds = time.perf_counter() - start
    images, labels, split = eval_split(cfg, seed + 1)
    score = accuracy(model, images, labels)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    _atomic_write(out, buffer.getvalue())
    record = {
        "dataset": cfg.name,
        "arch": ARCH,
        "accuracy": round(score, 5),
        "accuracy_on": split,
        "num_features": model.num_features,
        "input_size": INPUT_SIZE,
        "channels": model.channels,
        "num_classes": model.num_classes,
        "class_names": list(spec.class_names),
        "data_image_size": cfg.image_size,
        "train_examples": spec.size,
        "epochs": epochs,
        "seed": seed,
        "train_seconds": round(seconds, 1),
        "sha256": sha256_file(out),
        "size_bytes": os.path.getsize(out),
        "torch_version": torch.__version__,
        "command": command,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    text = json.dumps(record, indent=2) + "\n"
    _atomic_write(record_path(out), text.encode())
    return record


def cache_path(cfg: DataConfig) -> str:
    """``<cache_dir>/classifiers/<name>-<hash>.pt``: the hash covers what changes the training."""
    relevant = {
        "arch": ARCH,
        "name": cfg.name,
        "root": os.path.abspath(os.path.expanduser(cfg.root)) if cfg.root else None,
        "image_size": cfg.image_size,
        "channels": cfg.channels,
        "num_classes": cfg.num_classes,
        "limit": cfg.limit,
    }
    digest = hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(os.path.dirname(cache_root(cfg)), "classifiers", f"{cfg.name}-{digest}.pt")


def _parse(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """Split this command's own ``key=value`` arguments from the run-config overrides."""
    own: dict[str, str] = {}
    overrides = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in ("out", "epochs", "seed"):
            own[key] = value
        else:
            overrides.append(arg)
    return own, overrides


def _int(own: dict[str, str], key: str, default: int, low: int) -> int:
    try:
        value = int(own.get(key, default))
    except ValueError:
        raise ConfigError(key, own[key], "must be an integer") from None
    if value < low:
        raise ConfigError(key, value, f"must be an integer >= {low}")
    return value


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (2 for bad input, reported in one line)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        own, overrides = _parse(argv)
        epochs = _int(own, "epochs", DEFAULT_EPOCHS, 1)
        seed = _int(own, "seed", 0, 0)
        register_schema()
        with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            try:
                cfg = compose("config", overrides=overrides)
            except (HydraException, OmegaConfBaseException) as ex:
                raise composition_error(ex) from ex
        data_cfg = validate(cfg).data
        out = own.get("out") or cache_path(data_cfg)
        command = shlex.join(["python", "-m", "ganexp.metrics.train_classifier", *argv])
        print(f"training the {data_cfg.name} feature classifier for {epochs} epochs -> {out}")
        record = train_classifier(data_cfg, out, epochs, seed, command=command, verbose=True)
    except ConfigError as error:
        print(f"train_classifier: error: {error}", file=sys.stderr)
        return 2
    print(f"accuracy {record['accuracy']:.4f} on the {record['accuracy_on']}")
    print(f"wrote {out} (sha256 {record['sha256']}) and {record_path(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
