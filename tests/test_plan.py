"""One plan per job: the command's check reads and verifies the resume checkpoint, builds the
networks on the meta device, and the job Hydra starts next trains from that plan."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import compose_config, smoke_run

from ganexp.engine import checkpoint
from ganexp.session import preflight, run
from ganexp.session.preflight import plan_job


def test_a_resumed_job_reads_its_checkpoint_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = tmp_path / "first"
    smoke_run(first, "trainer.max_steps=2", "metrics.enabled=false")
    reads: list[object] = []
    load_resume = checkpoint.load_resume

    def counted(source):
        reads.append(source)
        return load_resume(source)

    monkeypatch.setattr(checkpoint, "load_resume", counted)  # the checks import it when run
    monkeypatch.setattr(run, "load_resume", counted)  # setup's own import
    second = tmp_path / "second"
    args = ["experiment=smoke", "logger=none", "metrics.enabled=false", "trainer.max_steps=3"]
    args += [f"resume={first}", f"hydra.run.dir={second}"]
    preflight.preflight(args)  # the command's check, before Hydra starts the job
    assert len(reads) == 1
    cfg = compose_config(*args[:-1])
    plan = plan_job(cfg, second)  # the job's own check takes the command's plan over
    assert len(reads) == 1
    assert plan.resumed is not None and plan.resumed[0]["step"] == 2
    assert next(plan.generator.parameters()).is_meta
    result = run.run(plan, second, name="test", group=None)
    assert len(reads) == 1 and result.steps == 3


def test_a_checkpoint_written_since_the_check_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan is only reused while the checkpoint it read is the one the job would read."""
    folder = tmp_path / "run"
    args = ["experiment=smoke", "logger=none", "metrics.enabled=false", "trainer.max_steps=2"]
    preflight.preflight([*args, f"hydra.run.dir={folder}"])
    smoke_run(folder, *args[2:])  # an earlier attempt leaves checkpoints in the job's folder
    plan = plan_job(compose_config(*args), folder)
    assert plan.resumed is not None and plan.resumed[0]["step"] == 2
