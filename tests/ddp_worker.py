"""Run by tests/test_distributed.py under torchrun: a smoke run through ganexp.run in every
process, after which each process saves its own weights as OUT/rank<r>.pt for the test to compare.

usage: python -m torch.distributed.run --nproc_per_node=N ddp_worker.py RUN_DIR OUT OVERRIDE...
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from helpers import smoke_config

from ganexp import distributed
from ganexp.config import register_schema
from ganexp.run import execute, setup


def main() -> None:
    run_dir, out, *overrides = sys.argv[1:]
    register_schema()
    world = distributed.start("cpu")
    cfg, resolved = smoke_config(*overrides)
    session = setup(cfg, resolved, Path(run_dir), name="ddp", group=None)
    execute(session)
    trainer = session.trainer
    state = {
        "generator": trainer.generator.state_dict(),
        "discriminator": trainer.discriminator.state_dict(),
    }
    torch.save(state, Path(out) / f"rank{world.rank}.pt")


if __name__ == "__main__":
    main()
