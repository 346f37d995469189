"""The test harness's own guarantees: processes it starts run one torch thread, the training
package starts without the FSDP machinery, and waits follow progress, not the clock."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

from service.testing import ROOT, THREAD_VARIABLES, one_thread_env

from .waiting import wait_for

THREADS = "import torch; print(torch.get_num_threads())"


def python(code: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_process_started_through_the_helper_runs_one_torch_thread() -> None:
    assert python(THREADS, one_thread_env()) == "1"
    # The control: a test about threads sets its own count, and gets it: the check above can fail.
    assert python(THREADS, one_thread_env(**dict.fromkeys(THREAD_VARIABLES, "2"))) == "2"


def test_importing_the_training_loop_does_not_import_the_fsdp_machinery() -> None:
    """DTensor, DCP and fully_shard (with sympy and torch.fx) load on the FSDP path only: every
    job's worker and every CLI command imports symopt_core.training."""
    probe = (
        "import sys, symopt_core.training, worker.run; "
        "print(sorted(m for m in ('torch.distributed.tensor', 'torch.distributed.checkpoint', "
        "'torch.distributed.fsdp', 'sympy') if m in sys.modules))"
    )
    assert python(probe, one_thread_env()) == "[]"
    # The control: the FSDP path does load them, in the same kind of fresh interpreter.
    loaded = python(
        probe.replace("worker.run; ", "worker.run, symopt_core.training.sharded_checkpoint; "),
        one_thread_env(),
    )
    assert "torch.distributed.checkpoint" in loaded
    assert "torch.distributed.tensor" in loaded


def test_a_wait_goes_on_while_things_move_and_fails_when_they_stand_still() -> None:
    counter = itertools.count()
    # Moving: a check that succeeds only after 10 polls passes although each poll sleeps, and
    # the stall bound is shorter than the whole wait.
    polls = iter(range(10))
    assert wait_for(lambda: next(polls, None) is None, progress=lambda: next(counter), what="moving",
                    stall=0.2, every=0.05)  # fmt: skip
    with pytest.raises(AssertionError, match="standing: no progress for 0 s"):
        wait_for(lambda: None, progress=lambda: "same", what="standing", stall=0.2, every=0.05)
    with pytest.raises(AssertionError, match="busy: not done after 0 s"):
        wait_for(lambda: None, progress=lambda: next(counter), what="busy", stall=60, limit=0.3, every=0.05)


GROUPED = """
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.xdist_group("together")


@pytest.mark.parametrize("i", range(6))
def test_where(i):
    (Path(__file__).parent / f"ran-{i}").write_text(os.environ["PYTEST_XDIST_WORKER"])
"""


def test_tests_of_one_xdist_group_share_one_worker(tmp_path) -> None:
    """scripts/test runs `--dist loadgroup`: the dashboard's, the fuzz's and the Ray Train tests
    rely on one worker holding their module's browser, app or runs. (pytest 9.2 with
    pytest-xdist 3.8 silently stops grouping: pyproject.toml pins pytest below it.)"""
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    command = [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider"]
    env = one_thread_env()
    done = subprocess.run(
        [*command, str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    workers = {(tmp_path / f"ran-{i}").read_text() for i in range(6)}
    assert len(workers) == 1, workers
