"""``ganexp-eval checkpoint=PATH``: every metric of a checkpoint, as JSON on stdout and in
``PATH`` with the suffix ``.metrics.json``. Config overrides apply, e.g.
``ganexp-eval checkpoint=RUN_DIR metrics.num_samples=10000 metrics.features=classifier``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace

from torch import nn

from ganexp.errors import ConfigError
from ganexp.restore import Restored, parse_args, report_errors, restore


def main(argv: list[str] | None = None) -> None:
    from ganexp.run import build_evaluator

    path, _, overrides = parse_args(sys.argv[1:] if argv is None else argv, {})
    restored = restore(path, overrides)
    cfg = replace(restored.cfg, metrics=replace(restored.cfg.metrics, enabled=True))
    evaluator = build_evaluator(cfg, restored.spec, restored.device, classifiers(restored))
    if evaluator is None:
        raise ConfigError("checkpoint", str(path), "nothing to evaluate for this data")
    metrics = {f"eval/{k}": v for k, v in evaluator(restored.generator).items()}
    report = {
        "checkpoint": str(path),
        "step": restored.state["step"],
        "metrics": metrics,
        "setup": evaluator.setup(),
    }
    text = json.dumps(report, indent=2)
    path.with_suffix(".metrics.json").write_text(text + "\n")
    print(text)


def classifiers(restored: Restored) -> tuple[nn.Module, nn.Module] | None:
    """A semi-supervised checkpoint's D and baseline, on the device, or None."""
    if restored.cfg.task.name != "semi_supervised":
        return None
    from ganexp.build import build_discriminator

    nets = []
    for weights in (restored.state["discriminator"], restored.state["semi_supervised"]["baseline"]):
        net = build_discriminator(restored.cfg, restored.spec).to(restored.device)
        net.load_state_dict(weights)
        nets.append(net)
    return nets[0], nets[1]


def cli() -> None:
    report_errors("ganexp-eval", main)


if __name__ == "__main__":
    cli()
