"""Section 3: what an evaluation costs, and whether repeating it grows memory.

``ganexp.metrics.evaluator.ImageEvaluator(cfg, spec, device)`` of the default config with
``metrics.num_samples=N`` (on a CPU the auto choice is the classifier path: features of ganexp's
Fashion-MNIST classifier) is called on an untrained generator, as the eval hook calls it. A call
generates N images from the evaluator's fixed noise and computes FD, IS, KID, precision/recall,
density/coverage and class coverage against N real images.

The cache folder is a new, empty one (``data.cache_dir=TMP``; the data are staged into it before
any timing), so the first call also computes the real side (features of 2N real images and the
real-vs-real floor) and caches it: that call is reported on its own. The cost of an evaluation in
a run is the median of the next calls. Of that, generating the N images alone is timed once, the
same way the evaluator does it.

Memory: VmRSS after every call. The long-run check then calls the same evaluator many more times
(``--leak-samples`` makes it a second evaluator with another N) and reports how much the resident
memory grew; whether every call returned the same numbers (same generator, same noise) is
reported too, since state carried from one call to the next would show there first.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from common import compose_config, median, rss_mb, sync

from ganexp.data import build_data, data_spec
from ganexp.data.images import to_uint8
from ganexp.engine.device import resolve_device
from ganexp.metrics.evaluator import BATCH, ImageEvaluator
from ganexp.models.common import generate
from ganexp.session.build import build_generator


def _evaluator(n: int, cache: Path) -> tuple[Any, Any, torch.device, ImageEvaluator]:
    _, cfg = compose_config(["logger=none", f"metrics.num_samples={n}", f"data.cache_dir={cache}"])
    spec = data_spec(cfg.data)
    device = resolve_device(cfg.device.name)
    return cfg, spec, device, ImageEvaluator(cfg, spec, device)


def _timed_call(evaluator: ImageEvaluator, generator: torch.nn.Module) -> tuple[float, dict]:
    start = time.perf_counter()
    results = evaluator(generator)
    sync(evaluator.device)
    return time.perf_counter() - start, results


def _generation_s(evaluator: ImageEvaluator, generator: torch.nn.Module) -> float:
    """Generating the evaluator's N images, batch by batch as it does (to uint8)."""
    start = time.perf_counter()
    for first in range(0, evaluator.n, BATCH):
        noise = evaluator.noise[first : first + BATCH].to(evaluator.device)
        to_uint8(generate(generator, noise, None))
    sync(evaluator.device)
    return time.perf_counter() - start


def evaluation(
    tmp: Path, *, samples: int, timed: int, leak_samples: int, leak_calls: int
) -> dict[str, Any]:
    cache = tmp / "cache"
    cfg, _, device, evaluator = _evaluator(samples, cache)
    build_data(cfg.data, BATCH, device, 0)  # stage the data into the empty cache: not timed
    torch.manual_seed(0)
    spec = data_spec(cfg.data)
    generator = build_generator(cfg, spec).to(device)
    features = evaluator.setup()["features"]

    rss_start = rss_mb()
    first_s, first = _timed_call(evaluator, generator)
    rss = [rss_mb()]
    times, outputs = [], [first]
    for _ in range(timed):
        seconds, results = _timed_call(evaluator, generator)
        times.append(seconds)
        outputs.append(results)
        rss.append(rss_mb())
    generation_s = _generation_s(evaluator, generator)

    leak, leak_outputs = evaluator, outputs
    if leak_samples != samples:
        leak = _evaluator(leak_samples, cache)[3]
        leak_outputs = [leak(generator)]  # builds its reference: not part of the series
    leak_rss = [rss_mb()]
    for _ in range(leak_calls):
        leak_outputs.append(leak(generator))
        leak_rss.append(rss_mb())
    same = all(o == outputs[0] for o in outputs) and all(o == leak_outputs[0] for o in leak_outputs)
    half = len(leak_rss) // 2
    return {
        "features": features,
        "num_samples": samples,
        "first_call_s": first_s,
        "call_s": median(times),
        "call_runs_s": times,
        "reference_s": first_s - median(times),
        "generation_s": generation_s,
        "rss_mb_before_first": rss_start,
        "rss_mb_after_calls": rss,
        "leak_check": {
            "num_samples": leak_samples,
            "calls": leak_calls,
            "rss_mb": leak_rss,
            "growth_mb": leak_rss[-1] - leak_rss[0],
            "growth_mb_per_call_second_half": (leak_rss[-1] - leak_rss[half])
            / max(len(leak_rss) - 1 - half, 1),
            "same_results_every_call": same,
        },
        "headline": {k: v for k, v in first.items() if k.startswith(("fd_", "fid"))},
    }
