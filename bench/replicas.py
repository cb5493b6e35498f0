"""Section 5: replicas (``trainer.replicas=K``) against K sequential runs of the same setting.

Two settings (issue 13): the PacGAN toy (``experiment=pacgan_ring``: G 4 x 400, D 3 x 200 maxout
at batch 100) with K = 10, and DCGAN-32 on Fashion-MNIST at batch 64 with K = 4, as ganexp trains
it on the CPU (each replica's step in turn) and stacked (the vmap path a GPU takes). The sequential
baseline is K sessions built by ``ganexp.session.run.setup`` (seeds 0..K-1), one after another, each
calling its ``trainer.run_step()`` for the round's steps (as K separate jobs would: a run's
weights and optimizer state stay in the CPU's caches); the replicas are the same K sessions
grouped by ``ganexp.session.run.build_replicas``, calling the group's ``run_step()``. Both are
timed in interleaved rounds (the order alternating), after warm-up steps; the figure is
replica-steps per second (K x steps / time), its median over rounds, and the ratio is the median
of the per-round ratios.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import QUIET, Table, compose_config, median, resolved, sync

# name: (overrides, K, stacked): stacked None is what ganexp picks
# (ganexp.engine.replicas.vectorize)
SETTINGS = {
    "toy (pacgan_ring), K=10": (("experiment=pacgan_ring",), 10, None),
    "dcgan-32 fashion_mnist batch 64, K=4": (("trainer.batch_size=64",), 4, None),
    "  the same, stacked (vmap: grouped convs)": (("trainer.batch_size=64",), 4, True),
}


def _sequential_and_replicas(overrides: tuple[str, ...], k: int, stacked: bool | None, tmp: Path):
    from ganexp.engine.replicas import ReplicaGroup
    from ganexp.session.run import build_replicas, setup

    base = (*QUIET, *overrides, "trainer.progress_bar=false")
    sessions = []
    for seed in range(k):
        cfg, run_cfg = compose_config((*base, f"seed={seed}"))
        sessions.append(setup(run_cfg, resolved(cfg), tmp / f"run{seed}", name="b", group=None))
    cfg, run_cfg = compose_config((*base, f"trainer.replicas={k}"))
    _, group = build_replicas(run_cfg, resolved(cfg), tmp / "replicas", name="b", group=None)
    if stacked is not None and stacked != group.vectorized:
        group = ReplicaGroup(group.trainers, group.rng, vectorized=stacked)
    return sessions, group


def _timed(train, steps: int, device) -> float:
    sync(device)
    start = time.perf_counter()
    train(steps)
    sync(device)
    return time.perf_counter() - start


def replicas(rounds: int, steps: int, warmup: int) -> dict[str, dict[str, float]]:
    """Replica-steps per second of K sequential runs and of K replicas, and their ratio."""
    results = {}
    for name, (overrides, k, stacked) in SETTINGS.items():
        with tempfile.TemporaryDirectory() as tmp:
            sessions, group = _sequential_and_replicas(overrides, k, stacked, Path(tmp))
            device = sessions[0].trainer.device

            def sequential(steps: int, sessions=sessions) -> None:
                for session in sessions:  # one run's steps after another's, as K jobs are
                    for _ in range(steps):
                        session.trainer.run_step()

            def replicas(steps: int, group=group) -> None:
                for _ in range(steps):
                    group.run_step()

            sequential(warmup)
            replicas(warmup)
            seq, rep, ratios = [], [], []
            for r in range(rounds):
                order = [sequential, replicas] if r % 2 == 0 else [replicas, sequential]
                times = {fn: _timed(fn, steps, device) for fn in order}
                seq.append(k * steps / times[sequential])
                rep.append(k * steps / times[replicas])
                ratios.append(times[sequential] / times[replicas])
        results[name] = {
            "sequential_replica_steps_per_s": median(seq),
            "replicas_replica_steps_per_s": median(rep),
            "ratio": median(ratios),
        }
    return results


def print_replicas(results: dict[str, dict[str, float]]) -> None:
    table = Table(["setting", "sequential rep-steps/s", "replicas rep-steps/s", "ratio"])
    for name, row in results.items():
        seq, rep = row["sequential_replica_steps_per_s"], row["replicas_replica_steps_per_s"]
        table.add(name, f"{seq:.1f}", f"{rep:.1f}", f"{row['ratio']:.2f}x")
    table.print()
