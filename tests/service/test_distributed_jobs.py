"""A 2-rank job through a real `symopt serve`: Ray Train ranks on the local Ray, gloo on CPU.

To the scheduler the group is one job: one status, one metric series (rank 0's), a cancel stops
every rank, and a rank killed with `kill -9` fails the attempt, which is retried from the newest
checkpoint with no rank left hanging. An FSDP job's sharded checkpoint downloads as a tar that
torch.distributed.checkpoint reads back in one process.
"""

from __future__ import annotations

import io
import os
import signal
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp

from ..waiting import wait_for
from .live import Api, alive, cancel_once_past, complete_series, events, logged_steps_whole, worker_starts
from .test_scheduler import tiny

pytestmark = pytest.mark.slow


def two_ranks(steps: int, **changes: Any) -> dict[str, Any]:
    return tiny(steps=steps, **{"resources": {"workers": 2}, **changes})


def rank_pids(api: Api, job_id: str, attempt: int) -> list[int]:
    """The pid of every rank of `attempt`, from rank 0's `ranks_started` event."""

    def reported() -> list[int] | None:
        started = [e for e in events(api.home, job_id, "status") if e.get("status") == "ranks_started"]
        return (
            [int(rank["pid"]) for rank in started[attempt - 1]["ranks"]] if len(started) >= attempt else None
        )

    def progress() -> tuple[Any, ...]:
        job = api.job(job_id)
        return job["status"], job["attempt"], job["step"], job["queued_reason"]

    return wait_for(reported, progress=progress, what=f"attempt {attempt} of {job_id} to report its ranks")


def wait_gone(pids: list[int], timeout: float = 60.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := [pid for pid in pids if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def test_a_two_rank_job_is_one_job_with_one_series(api: Api) -> None:
    job_id = api.submit(two_ranks(40))
    job = api.finished(job_id)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempt"] == 1
    assert job["result"]["steps"] == 40
    complete_series(api, job_id, 40, 5)  # rank 0 alone reports: each step once
    pids = rank_pids(api, job_id, 1)
    assert len(set(pids)) == 2
    assert api.series(job_id, "shard/rank1/matrices")[1][-1] > 0  # rank 1 did its share of the matrices
    assert wait_gone(pids) == []


def test_cancel_stops_every_rank(api: Api) -> None:
    job_id = api.submit(two_ranks(1_000_000))
    api.wait(job_id, lambda job: job["status"] == "running" and job["step"] >= 10)
    pids = rank_pids(api, job_id, 1)
    assert api.http.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    job = api.finished(job_id)
    assert job["status"] == "cancelled"
    assert wait_gone(pids) == [], "every rank's process must exit"


def test_a_killed_rank_fails_the_attempt_and_the_job_resumes_from_its_checkpoint(api: Api) -> None:
    job_id = api.submit(two_ranks(1_000_000, checkpoint={"every": 40, "keep": 2}, log_every=10))
    first = rank_pids(api, job_id, 1)
    api.wait(job_id, lambda job: job["step"] >= 50)  # a checkpoint exists
    os.kill(first[1], signal.SIGKILL)  # rank 1: rank 0 is left waiting in a collective
    assert wait_gone(first, timeout=120) == [], "no rank may hang once one has died"
    job = cancel_once_past(api, job_id, attempt=2, step=api.job(job_id)["step"] + 40)
    assert job["attempt"] == 2
    logged_steps_whole(api, job_id, 10)
    started = worker_starts(api.home, job_id)
    assert len(started) == 2
    assert started[1]["resume_from"].endswith(".pt")
    assert set(rank_pids(api, job_id, 2)).isdisjoint(first)


def test_an_fsdp_job_checkpoints_shards_that_download_as_one_tar(api: Api, tmp_path: Path) -> None:
    job_id = api.submit(two_ranks(20, resources={"workers": 2, "strategy": "fsdp"}, checkpoint={"every": 10}))
    job = api.finished(job_id)
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["checkpoint"].endswith("step_000000020.dcp")
    response = api.http.get(f"/v1/jobs/{job_id}/checkpoint")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-tar"
    assert f'filename="{job_id}-step_000000020.dcp.tar"' in response.headers["content-disposition"]
    with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
        tar.extractall(tmp_path, filter="data")
    shards = tmp_path / "step_000000020.dcp"
    assert sorted(path.name for path in shards.iterdir()) == [
        ".metadata",
        "__0_0.distcp",
        "__1_0.distcp",
        "run.pt",
    ]
    assert torch.load(shards / "run.pt", weights_only=True)["step"] == 20
    stored = dcp.FileSystemReader(str(shards)).read_metadata().state_dict_metadata
    sizes = {
        key.removeprefix("model."): meta.size for key, meta in stored.items() if key.startswith("model.")
    }
    assert "embed.weight" in sizes
    model = {name: torch.full(tuple(size), float("nan")) for name, size in sizes.items()}
    dcp.load({"model": model}, checkpoint_id=str(shards), no_dist=True)
    for name, value in model.items():  # every row of every parameter came back, from both ranks' files
        assert torch.isfinite(value).all(), name
