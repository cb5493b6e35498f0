"""Run by tests/test_distributed.py under torchrun: a smoke run through ganexp.session.run in every
process, after which each process saves its own weights as OUT/rank<r>.pt for the test to compare.
With GANEXP_NAN_AT=RANK:STEP in the environment, that rank's D outputs NaN from that step on,
and each process that stops on the fault writes its one-line report to OUT/rank<r>.error (a file
of its own: two processes' lines on a shared stderr can interleave).

usage: python -m torch.distributed.run --nproc_per_node=N ddp_worker.py RUN_DIR OUT OVERRIDE...
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from helpers import smoke_config

from ganexp.config import register_schema
from ganexp.engine import distributed
from ganexp.engine.trainer import Trainer
from ganexp.errors import RunFailed
from ganexp.session.run import execute, setup


def main() -> None:
    run_dir, out, *overrides = sys.argv[1:]
    register_schema()
    world = distributed.start("cpu")
    cfg, resolved = smoke_config(*overrides)
    session = setup(cfg, resolved, Path(run_dir), name="ddp", group=None)
    trainer = session.trainer
    if "GANEXP_NAN_AT" in os.environ:
        rank, step = map(int, os.environ["GANEXP_NAN_AT"].split(":"))
        if rank == world.rank:
            poison_from(trainer, step)
    try:
        execute(session)
    except RunFailed as error:
        (Path(out) / f"rank{world.rank}.error").write_text(str(error))
        sys.exit(1)
    state = {
        "generator": trainer.generator.state_dict(),
        "discriminator": trainer.discriminator.state_dict(),
    }
    torch.save(state, Path(out) / f"rank{world.rank}.pt")


def poison_from(trainer: Trainer, step: int) -> None:
    def poison(module, inputs, output):
        return output * float("nan") if trainer.step + 1 >= step else output

    trainer.discriminator.register_forward_hook(poison)


if __name__ == "__main__":
    main()
