"""Section 4: peak memory of a short default training run.

Each run is its own process, ::

    ganexp logger=none metrics.enabled=false trainer.max_steps=K trainer.progress_bar=false \\
        hydra.run.dir=TMP [device.precision=bf16]

and its figure is that process's peak resident memory (``ru_maxrss`` from ``os.wait4``). The
evaluation is off: at the end of a run it would dominate the peak, and section 3 measures it.
For context, the peak of ``python -c "import torch"`` is measured the same way. The processes run
side by side, which changes how long they take, not how much memory each one peaks at.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import last_error_line, run_measured

PRECISIONS = (("fp32 (default)", ()), ("bf16", ("device.precision=bf16",)))


def peak_memory(tmp: Path, *, steps: int, floor: bool) -> dict[str, Any]:
    ganexp = str(Path(sys.executable).parent / "ganexp")
    base = ["logger=none", "metrics.enabled=false", f"trainer.max_steps={steps}"]
    base.append("trainer.progress_bar=false")
    jobs = {"import torch alone": [sys.executable, "-c", "import torch"]} if floor else {}
    for label, overrides in PRECISIONS:
        run_dir = tmp / f"memory-{len(jobs)}"
        jobs[label] = [ganexp, *base, *overrides, f"hydra.run.dir={run_dir}"]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = {label: pool.submit(run_measured, cmd) for label, cmd in jobs.items()}
    results: dict[str, Any] = {"steps": steps}
    for label, future in futures.items():
        code, peak_mb, stderr = future.result()
        status = "ok"
        if code == 2:
            status = f"skipped ({last_error_line(stderr)})"
        elif code != 0:
            status = f"failed (exit {code}: {last_error_line(stderr)})"
        results[label] = {"peak_rss_mb": peak_mb if code == 0 else None, "status": status}
    return results
