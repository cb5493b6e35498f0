"""ganexp's performance figures on this machine: ``make bench`` (``ARGS=--quick`` for a short run).

All on DCGAN-32, Fashion-MNIST, batch 128 (the default experiment):

1. training throughput of ganexp's hot loop, in variants given as Hydra overrides, against the
   PyTorch DCGAN tutorial's loop on the same networks, timed in interleaved rounds
   (``throughput.py``); and the cost of the loop's hooks at their default intervals;
2. wall time from a ``ganexp`` command to its first step, against importing torch (``startup.py``);
3. time of an evaluation of 10k generated images, and memory over repeated evaluations
   (``evaluation.py``);
4. peak memory of a short training run, fp32 and bf16 (``memory.py``);
5. replicas against sequential runs (``replicas.py``);
6. the FID Inception's images/s, fp32 and bf16 (``inception.py``).

It prints figures and ratios and asserts nothing. Ratios compare figures measured in the same run.
On a shared machine absolute figures move with the load, and a lot: torch's threads wait for each
other at every operation, so one core taken by another process can slow a step several times.
Each section therefore says how many cores other processes kept busy meanwhile (and the load
average is printed at the start and the end). The
same results go to ``bench/results/latest.json``. A variant whose config key does not exist (yet)
is reported as skipped with ganexp's one-line error.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from common import OtherLoad, Table, machine, section
from evaluation import evaluation
from inception import inception_speed, print_inception
from memory import peak_memory
from replicas import print_replicas, replicas
from startup import SMOKE, startup
from throughput import TUTORIAL, VARIANTS, hook_overhead, interleaved

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
BATCH = 128  # the default trainer.batch_size, which the tutorial loop uses too
SECTIONS = ("throughput", "hooks", "startup", "evaluation", "memory", "replicas", "inception")


@dataclass(frozen=True)
class Settings:
    """How much of each measurement to do."""

    mode: str
    rounds: int  # interleaved rounds of the throughput comparison
    steps: int  # steps per loop per round
    warmup: int  # warm-up steps per loop
    compile: bool  # include device.compile=true (slow to compile)
    hook_steps: int  # max_steps of the train() run with hooks
    hot_steps: int  # run_step() calls timed before and after it
    startup_repeats: int
    bytecode_cache: bool  # also time startup with a bytecode cache (when there is none)
    eval_samples: int
    eval_calls: int  # timed evaluations after the first
    leak_samples: int
    leak_calls: int
    memory_steps: int
    memory_floor: bool  # also the peak of `python -c "import torch"`
    inception_batches: int  # timed batches of 32 images per variant


FULL = Settings(
    mode="full",
    rounds=5,
    steps=5,
    warmup=2,
    compile=True,
    hook_steps=100,
    hot_steps=8,
    startup_repeats=3,
    bytecode_cache=True,
    eval_samples=10000,
    eval_calls=3,
    leak_samples=10000,
    leak_calls=10,
    memory_steps=10,
    memory_floor=True,
    inception_batches=4,
)
QUICK = replace(
    FULL,
    mode="quick",
    rounds=3,
    steps=2,
    warmup=1,
    compile=False,
    hook_steps=50,
    hot_steps=3,
    startup_repeats=1,
    bytecode_cache=False,
    eval_samples=1000,
    eval_calls=1,
    leak_samples=1000,
    leak_calls=3,
    memory_steps=2,
    memory_floor=False,
    inception_batches=1,
)


def parse_args(argv: list[str]) -> tuple[Settings, tuple[str, ...], int | None]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 1-2 minute version")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--rounds", type=int, help="interleaved throughput rounds")
    parser.add_argument("--steps", type=int, help="steps per loop per round")
    parser.add_argument("--eval-samples", type=int, help="metrics.num_samples of section 3")
    parser.add_argument("--leak-samples", type=int, help="metrics.num_samples of the leak check")
    parser.add_argument("--leak-calls", type=int, help="evaluations in the leak check")
    parser.add_argument(
        "--threads", type=int, help="torch threads of the in-process sections (default: torch's)"
    )
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    chosen = {
        "rounds": args.rounds,
        "steps": args.steps,
        "eval_samples": args.eval_samples,
        "leak_samples": args.leak_samples,
        "leak_calls": args.leak_calls,
    }
    settings = replace(settings, **{k: v for k, v in chosen.items() if v is not None})
    return settings, tuple(args.only or SECTIONS), args.threads


# -- printing ------------------------------------------------------------------------------------
def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def print_machine(info: dict[str, Any], settings: Settings) -> None:
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in info["bf16_flags"].items())
    print(f"ganexp benchmark ({settings.mode}), {time.strftime('%Y-%m-%d %H:%M:%S')}")
    print(f"  cpu: {info['cpu']}; {info['cores']} cores ({info['cores_usable']} usable)")
    print(f"  bf16 instructions: {flags}")
    print(
        f"  torch {info['torch']} ({info['torch_threads']} threads), python {info['python']}, "
        f"cuda {'yes' if info['cuda'] else 'no'}; ganexp {info['ganexp_commit']}"
    )
    print(f"  load average at start (1/5/15 min): {_load()}", flush=True)


def _n(value: float, digits: int = 0) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def print_throughput(rows: list[dict[str, Any]], s: Settings) -> None:
    table = Table(["loop", "img/s", "(min-max)", "vs tutorial", "s/step", "setup s", "in effect"])
    default_setup = next((r["setup_s"] for r in rows if r["label"] == "ganexp (default)"), 0.0)
    for row in rows:
        if row["status"] != "ok":
            table.add(row["label"], "-", "", "", "", "", row["status"])
            continue
        rounds = row["img_per_s_rounds"]
        note = row["in_effect"]
        warm = f"{s.warmup} warm-up step(s) {row['warmup_overhead_s']:+.1f} s over steady"
        if row["label"].endswith("compile=true"):
            extra = row["setup_s"] - default_setup
            note += f"; compile: setup {extra:+.1f} s over the default's, {warm}"
        elif row["warmup_overhead_s"] > 2:
            note += f"; {warm}"
        table.add(
            row["label"],
            _n(row["img_per_s_median"]),
            f"({_n(min(rounds))}-{_n(max(rounds))})",
            f"{row['ratio_to_tutorial_median']:.2f}x",
            f"{row['step_s_median']:.3f}",
            f"{row['setup_s']:.1f}",
            note,
        )
    table.print()
    print(
        "  setup s: building the loop (ganexp.session.run.setup loads the data and, with"
        " device.compile=true,\n  compiles on a probe step). in effect: read off the objects"
        " (a D conv's output dtype and layout, optimizer flags)."
    )


def print_hooks(h: dict[str, Any]) -> None:
    hot, iv = h["hot_step_s"], h["intervals"]
    print(
        f"  trainer.train() of a default session, {h['max_steps']} steps, default intervals "
        f"(log {iv['log_every']}, sample {iv['sample_every']}, checkpoint "
        f"{iv['checkpoint_every']}; each also fires on the last step)"
    )
    table = Table()
    table.add(
        "step, run_step() alone",
        f"{hot['mean']:.3f} s",
        f"(before {hot['before']:.3f}, after {hot['after']:.3f})",
    )
    table.add(
        "step, train() with hooks",
        f"{h['train_step_s']:.3f} s",
        f"{h['train_vs_hot']:+.1%} vs run_step() (wall time, one pass: noisy)",
    )
    table.add(
        "time inside hooks",
        f"{h['in_hooks_s']:.2f} s",
        f"{h['in_hooks_fraction_of_train']:.1%} of train() time (timed inside the hooks)",
    )
    table.print()
    hooks = Table(["  hook", "interval", "ms/step", "firings", "ms/firing", "total s"])
    for r in h["hooks"]:
        hooks.add(
            "  " + r["name"],
            r["every"] or "every step",
            f"{r['per_step_ms']:.2f}",
            r["fired"],
            f"{r['per_firing_ms']:.1f}" if r["fired"] else "-",
            f"{r['total_s']:.3f}",
        )
    hooks.print()
    print(
        f"  projected for a default {h['default_run_steps']}-step run: "
        f"{h['projected_default_run_hooks_s']:.1f} s in hooks = "
        f"{h['projected_default_run_overhead']:.1%} of its step time"
    )
    logged = ", ".join(_n(v) for v in h["ganexp_logged_img_per_s"])
    print(f"  ganexp's own perf/img_per_s in metrics.jsonl: {logged}")


def print_startup(st: dict[str, Any], repeats: int) -> None:
    print(f"  {st['command']}: wall time to exit, median of {repeats}")
    table = Table()
    blocks = [("", st["as_is"])]
    if "bytecode_cache" in st:
        blocks.append((" (bytecode cache)", st["bytecode_cache"]))
    for tag, block in blocks:
        if block["error"]:
            table.add(f"ganexp command{tag}", "-", f"failed ({block['error']})")
            continue
        ratio = block["command_s"] / block["import_torch_s"]
        table.add(
            f"ganexp command{tag}",
            f"{block['command_s']:.1f} s",
            f"{ratio:.1f}x the import floor; runs " + _runs(block["command_runs_s"]),
        )
        table.add(
            f'python -c "import torch"{tag}',
            f"{block['import_torch_s']:.1f} s",
            "import floor; runs " + _runs(block["import_torch_runs_s"]),
        )
    table.print()
    if st["no_bytecode"]:
        print(
            "  note: PYTHONDONTWRITEBYTECODE=1 and no .pyc in .venv: every start compiles every "
            "imported module"
        )
        if "bytecode_cache" in st:
            prime = st["bytecode_cache"]["priming_run_s"]
            print(
                "  (bytecode cache) = PYTHONPYCACHEPREFIX=TMP, primed by one untimed run "
                f"({prime:.1f} s): what a machine that writes bytecode sees from its 2nd run"
            )


def _runs(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def print_evaluation(ev: dict[str, Any]) -> None:
    n = ev["num_samples"]
    print(f"  ImageEvaluator, {n} generated vs {n} real images, {ev['features']} features")
    table = Table()
    reference = ev["reference_s"]
    table.add(
        "first evaluation (reference)",
        f"{ev['first_call_s']:.1f} s",
        "cold cache: builds and caches the real side"
        + (f" (~{reference:.1f} s more than a later call)" if reference > 0 else ""),
    )
    table.add(
        f"evaluation, median of {len(ev['call_runs_s'])}",
        f"{ev['call_s']:.1f} s",
        "runs " + _runs(ev["call_runs_s"]),
    )
    table.add(
        f"  of which generating {n} images",
        f"{ev['generation_s']:.1f} s",
        f"{ev['generation_s'] / ev['call_s']:.0%} of an evaluation",
    )
    table.print()
    rss = ", ".join(f"{v:.0f}" for v in ev["rss_mb_after_calls"])
    print(f"  RSS before the first call {ev['rss_mb_before_first']:.0f} MB; after each call: {rss}")
    leak = ev["leak_check"]
    same = "yes" if leak["same_results_every_call"] else "NO"
    print(
        f"  long run: {leak['calls']} more calls (metrics.num_samples={leak['num_samples']}): "
        f"RSS {leak['rss_mb'][0]:.0f} -> {leak['rss_mb'][-1]:.0f} MB "
        f"({leak['growth_mb']:+.1f} MB; {leak['growth_mb_per_call_second_half']:+.2f} MB/call "
        f"over the second half); same results every call: {same}"
    )


def print_memory(mem: dict[str, Any]) -> None:
    print(
        f"  ganexp logger=none metrics.enabled=false trainer.max_steps={mem['steps']}, "
        "each in its own process (ru_maxrss)"
    )
    base = mem.get("fp32 (default)", {}).get("peak_rss_mb")
    table = Table(["", "peak RSS", "vs fp32", ""])
    for label, row in mem.items():
        if not isinstance(row, dict):
            continue
        peak = row["peak_rss_mb"]
        if peak is None:
            table.add(label, "-", "", row["status"])
            continue
        ratio = f"{peak / base:.2f}x" if base and label != "import torch alone" else ""
        table.add(label, f"{peak:,.0f} MB", ratio, "")
    table.print()


# -- running -------------------------------------------------------------------------------------
def run_section(
    results: dict[str, Any], key: str, title: str, measure: Callable[[], Any], show: Callable
) -> None:
    """Measure and print one section; a section that breaks is reported, the others go on."""
    section(title)
    start, others = time.perf_counter(), OtherLoad()
    try:
        results[key] = measure()
    except Exception as error:
        results[key] = {"error": f"{type(error).__name__}: {error}"}
        print(f"  section failed: {type(error).__name__}: {error}")
        traceback.print_exc(limit=3)
        return
    show(results[key])
    results.setdefault("other_load_cores", {})[key] = load = others.cores()
    print(
        f"  ({time.perf_counter() - start:.0f} s; other processes kept {load:.1f} cores busy "
        "on average meanwhile)",
        flush=True,
    )


def main(argv: list[str]) -> None:
    s, only, threads = parse_args(argv)
    if threads:
        torch.set_num_threads(threads)
    start, others = time.perf_counter(), OtherLoad()
    info = machine()
    print_machine(info, s)
    variants = [v for v in VARIANTS if s.compile or not v.full_only]
    results: dict[str, Any] = {"mode": s.mode, "settings": s.__dict__, "machine": info}
    with tempfile.TemporaryDirectory(prefix="ganexp-bench-") as name:
        tmp = Path(name)
        if "throughput" in only:
            run_section(
                results,
                "throughput",
                f"1. Training throughput: DCGAN-32, Fashion-MNIST, batch {BATCH}; "
                f"{s.rounds} interleaved rounds x {s.steps} steps after {s.warmup} warm-up step(s) "
                f"(median; ratio: median of per-round ratios to the {TUTORIAL})",
                lambda: [
                    t.summary(BATCH)
                    for t in interleaved(
                        variants,
                        tmp / "throughput",
                        rounds=s.rounds,
                        steps=s.steps,
                        warmup=s.warmup,
                        batch=BATCH,
                    )
                ],
                lambda rows: print_throughput(rows, s),
            )
        if "hooks" in only:
            run_section(
                results,
                "hooks",
                "1b. Logging/hook overhead",
                lambda: hook_overhead(tmp / "hooks", max_steps=s.hook_steps, hot_steps=s.hot_steps),
                print_hooks,
            )
        if "startup" in only:
            run_section(
                results,
                "startup",
                f"2. Command to first step (upper bound; {' '.join(SMOKE)})",
                lambda: startup(
                    tmp, repeats=s.startup_repeats, with_bytecode_cache=s.bytecode_cache
                ),
                lambda st: print_startup(st, s.startup_repeats),
            )
        if "evaluation" in only:
            run_section(
                results,
                "evaluation",
                f"3. Evaluation time (metrics.num_samples={s.eval_samples}, untrained G, "
                "generation included)",
                lambda: evaluation(
                    tmp,
                    samples=s.eval_samples,
                    timed=s.eval_calls,
                    leak_samples=s.leak_samples,
                    leak_calls=s.leak_calls,
                ),
                print_evaluation,
            )
        if "memory" in only:
            run_section(
                results,
                "memory",
                "4. Peak memory of a short default training run",
                lambda: peak_memory(tmp, steps=s.memory_steps, floor=s.memory_floor),
                print_memory,
            )
        if "replicas" in only:
            run_section(
                results,
                "replicas",
                f"5. Replicas (trainer.replicas=K) against K sequential runs; {s.rounds} "
                f"interleaved rounds x {s.steps} steps after {s.warmup} warm-up step(s)",
                lambda: replicas(s.rounds, s.steps, s.warmup),
                print_replicas,
            )
        if "inception" in only:
            run_section(
                results,
                "inception",
                "6. The FID Inception's speed (metrics.features=inception)",
                lambda: inception_speed(s.inception_batches),
                print_inception,
            )
    results["load_average_end"] = list(os.getloadavg())
    results["wall_s"] = time.perf_counter() - start
    results["other_load_cores_overall"] = overall = others.cores()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(
        f"\nload average at end (1/5/15 min): {_load()}; other processes kept {overall:.1f} cores"
        f" busy on average; benchmark wall time {results['wall_s']:.0f} s; results in "
        f"{os.path.relpath(RESULTS)}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
