"""Jobs run on a real local Ray through a real `symopt serve`, including the failures it must survive.

Faults are injected for real: `kill -9` of the Ray worker running a job, `kill -9` of the
service itself and of its Ray's GCS, a NaN loss, an exception inside training (at its start and
after some steps), a job asking for a GPU the cluster lacks. Every scenario ends by checking that
the metric series is complete and has no duplicate. Ray's processes are found through /proc (the
service's descendants): which ports they listen on, and that none outlives the service.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from service.scheduler.runtime import RESERVED_PORTS
from service.testing import ROOT, LiveService, live_service, one_thread_env
from worker.warm import socket_path

from ..specs import tiny_job
from ..waiting import wait_for
from .conftest import BACKENDS
from .live import (
    FINAL,
    Api,
    SharedService,
    alive,
    cancel_once_past,
    complete_series,
    events,
    logged_steps_whole,
    wait_for_checkpoint,
    worker_starts,
)


def tiny(steps: int = 60, **changes: Any) -> dict[str, Any]:
    return tiny_job(steps=steps, **{"eval": {"every": 30, "batches": 2}, "seed": 1, **changes})


def private_api(service: LiveService) -> Api:
    """The admin tenant of a service a test started for itself."""
    assert service.api_key is not None
    return Api(service, service.api_key)


# -- processes, from /proc (psutil is not a dependency) ---------------------------------------------


def _parent_and_start(pid: int) -> tuple[int, int] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ", which may hold spaces
    return int(fields[1]), int(fields[19])  # ppid, start time (tells a reused pid apart)


def descendants(root: int) -> dict[int, int]:
    """{pid: start time} of every process below `root`."""
    table = {int(e): info for e in os.listdir("/proc") if e.isdigit() and (info := _parent_and_start(int(e)))}
    found: dict[int, int] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, start) in table.items():
            if ppid == parent and pid not in found:
                found[pid] = start
                frontier.append(pid)
    return found


def still_running(processes: dict[int, int]) -> list[int]:
    return [pid for pid, start in processes.items() if (info := _parent_and_start(pid)) and info[1] == start]


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def listening_ports(pids: set[int]) -> dict[int, set[int]]:
    """{pid: TCP ports it listens on}: sockets in LISTEN state (0A) matched to the pids' fds."""
    ports_by_inode = {}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":
                ports_by_inode[fields[9]] = int(fields[1].rsplit(":", 1)[1], 16)
    found: dict[int, set[int]] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    inode = target.removeprefix("socket:[").removesuffix("]")
                    if target.startswith("socket:[") and inode in ports_by_inode:
                        found.setdefault(pid, set()).add(ports_by_inode[inode])
    return found


def warm_processes(ray_processes: dict[int, int]) -> dict[int, int]:
    """{pid: start time} of the warm process of each raylet among `ray_processes`."""
    found = {}
    for pid in ray_processes:
        if "raylet" in command_line(pid).split(" ", 1)[0]:
            written = Path(f"{socket_path(pid)}.pid")
            if written.exists() and (info := _parent_and_start(int(written.read_text()))):
                found[int(written.read_text())] = info[1]
    return found


def wait_until_gone(processes: dict[int, int], timeout: float = 120.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := still_running(processes)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def test_a_job_runs_to_success_and_its_loss_falls(api: Api) -> None:
    job_id = api.submit(tiny())
    job = api.finished(job_id)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempt"] == 1
    assert job["started_at"] is not None
    assert job["result"]["steps"] == 60
    complete_series(api, job_id, 60, 5)
    _, values = api.series(job_id, "train_loss")
    assert values[-1] < values[0]
    assert api.series(job_id, "val_loss")[0] == [0, 30, 60]
    assert job["best_val_loss"] == pytest.approx(min(api.series(job_id, "val_loss")[1]))
    # The worker ran one torch thread: the test helpers start every service with the guard.
    [started] = worker_starts(api.home, job_id)
    assert started["torch_threads"] == 1


def test_nan_ends_diverged_and_an_exception_ends_failed(api: Api) -> None:
    diverging = api.submit(tiny(optimizer={"preset": "adamw", "lr": 1e6}, grad_clip=None))
    failing = api.submit(tiny(data={"corpus": "file:no/such/corpus.txt", "options": {}}))
    job = api.finished(diverging)
    assert job["status"] == "diverged"
    assert 1 <= job["diverged_at"] <= 60
    job = api.finished(failing)
    assert job["status"] == "failed"
    assert "ConfigError" in job["error"]
    assert "no/such/corpus.txt" in job["error"]
    assert "Traceback" in job["error"]
    assert job["attempt"] == 1  # an exception in training is not retried
    # The scheduler keeps serving: a job submitted after both ends runs to success.
    after = api.finished(api.submit(tiny(steps=10)))
    assert after["status"] == "succeeded", after["error"]
    assert after["attempt"] == 1


# Training that raises after some steps, with nothing faked: the batch ramp doubles seq_len from
# 128 to 256 once ~5,000 tokens are seen (c = 3.45: after step 10 at 4 × 128 tokens), but the
# train split holds 199 tokens (val_fraction=0.9 of 2,000 bytes of stdlib source; the 1,801 val
# tokens let evaluation run at seq_len 256 from step 0). The sampler raises a ConfigError in step 11.
FAILS_AT_STEP_11 = tiny(
    data={"corpus": "pystdlib", "seq_len": 256, "val_fraction": 0.9, "options": {"max_bytes": 2000}},
    batch={"size": 4, "ramp": {"start_size": 4, "start_seq_len": 128, "c": 3.45}},
)


def test_an_exception_after_some_steps_ends_failed_with_the_traceback_tail(api: Api) -> None:
    job_id = api.submit(FAILS_AT_STEP_11)
    job = api.finished(job_id)
    assert job["status"] == "failed"
    assert job["attempt"] == 1
    error = job["error"]
    assert error.startswith("ConfigError: seq_len=256 needs at least 257 tokens, but the train split has 199")
    assert "Traceback (most recent call last)" in error
    tail = error.splitlines()
    assert any("symopt_core/data/sampler.py" in line for line in tail)  # the frame that raised
    assert any("in train_step" in line for line in tail)  # inside a training step, not at setup
    assert api.series(job_id, "train_loss")[0] == [5, 10]  # the steps before the failure stay
    assert job["step"] == 10
    after = api.finished(api.submit(tiny(steps=10)))
    assert after["status"] == "succeeded", after["error"]


def test_readyz_checks_the_schedulers_ray(shared_service: SharedService) -> None:
    response = httpx.get(f"{shared_service.url}/readyz", timeout=60)
    assert response.status_code == 200
    assert response.json() == {"ready": True, "checks": {"database": "ok", "migrations": "head", "ray": "ok"}}


def test_a_job_needing_a_missing_gpu_stays_queued_and_says_why(api: Api) -> None:
    job_id = api.submit(tiny(resources={"gpus": 1, "cpus": 1}))
    job = api.wait(job_id, lambda job: job["queued_reason"] is not None)
    assert job["status"] == "queued"
    assert "needs 1 GPU(s)" in job["queued_reason"]
    assert "the Ray cluster has 0 GPU(s)" in job["queued_reason"]
    time.sleep(1.5)
    assert api.job(job_id)["status"] == "queued"
    assert api.http.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"


def test_cancel_stops_a_running_job_at_a_step_boundary(api: Api) -> None:
    job_id = api.submit(tiny(steps=1_000_000))
    api.wait(job_id, lambda job: job["status"] == "running" and job["step"] >= 10)
    assert api.http.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    job = api.finished(job_id)
    assert job["status"] == "cancelled"
    assert job["step"] < 1_000_000
    assert len(api.series(job_id, "train_loss")[0]) >= 2  # the metrics it had stay


def test_cancel_frees_the_slot_and_the_worker_process(api: Api, shared_service: SharedService) -> None:
    shared_service.wait_idle()  # this test counts the service's 2 slots
    running = [api.submit(tiny(steps=1_000_000)) for _ in range(2)]
    for job_id in running:
        api.wait(job_id, lambda job: job["status"] == "running" and job["step"] >= 5)
    waiting = api.submit(tiny(steps=20))
    job = api.wait(waiting, lambda job: job["queued_reason"] is not None)
    assert job["status"] == "queued"
    assert job["queued_reason"] == "waiting for 0 GPU(s) and 1 CPU(s) to free up"  # both CPUs are taken
    [started] = worker_starts(api.home, running[0])
    pid = int(started["pid"])
    assert alive(pid)
    assert api.http.post(f"/v1/jobs/{running[0]}/cancel").status_code == 202
    assert api.finished(running[0])["status"] == "cancelled"
    job = api.finished(waiting)
    assert job["status"] == "succeeded", job["error"]
    assert int(worker_starts(api.home, waiting)[0]["pid"]) != pid  # a fresh worker process
    deadline = time.monotonic() + 120
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(pid), "the cancelled run's worker process must exit"


def test_local_ray_avoids_6379_and_listens_on_explicit_ports(shared_service: SharedService) -> None:
    ray_processes = descendants(shared_service.service.process.pid)
    [gcs] = [pid for pid in ray_processes if "gcs_server" in command_line(pid)]
    found = re.search(r"--gcs_server_port=(\d+)", command_line(gcs))
    assert found is not None
    gcs_port = int(found.group(1))
    assert gcs_port not in {0, *RESERVED_PORTS}  # an explicit port, and not Redis's
    listening = listening_ports({shared_service.service.process.pid, *ray_processes})
    assert gcs_port in listening[gcs]
    every_port = set().union(*listening.values())
    assert every_port.isdisjoint(RESERVED_PORTS), listening
    assert not any("dashboard.py" in command_line(pid) and pid in listening for pid in ray_processes)


def test_readyz_is_503_when_the_schedulers_ray_is_down(tmp_path: Path) -> None:
    with live_service(tmp_path, env={"SYMOPT_RAY_NUM_CPUS": "1"}) as service:
        ray_processes = descendants(service.process.pid)
        try:
            [gcs] = [pid for pid in ray_processes if "gcs_server" in command_line(pid)]
            os.kill(gcs, signal.SIGKILL)
            deadline, response = time.monotonic() + 120, None
            while time.monotonic() < deadline:
                response = httpx.get(f"{service.url}/readyz", timeout=60)
                if response.status_code != 200:
                    break
                time.sleep(0.2)
            assert response is not None
            assert response.status_code == 503
            body = response.json()
            assert body["ready"] is False
            assert body["checks"]["database"] == "ok"
            assert body["checks"]["ray"] == "not answering: the local Ray gave no answer within 5 s"
            assert httpx.get(f"{service.url}/healthz").status_code == 200  # up, only not ready
        finally:
            # A driver whose GCS died does not stop cleanly (its raylet waits a minute for the GCS
            # to come back): end it and its Ray now.
            service.process.kill()
            service.process.wait()
            for pid in still_running(ray_processes):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            assert wait_until_gone(ray_processes) == []


def test_k_slots_run_k_jobs_at_once(api: Api, shared_service: SharedService) -> None:
    shared_service.wait_idle()  # this test counts the service's 2 slots
    ids = [api.submit(tiny(steps=200)) for _ in range(4)]  # 2 s each: long enough to overlap
    most = 0

    def all_final() -> list[str] | None:
        nonlocal most
        # All four from one read: four reads one after another can see a job still running and,
        # a moment later, the job that took its slot running too (a count of 3 that never was).
        statuses = [job["status"] for job in api.jobs(ids)]
        most = max(most, statuses.count("running"))
        return statuses if all(s in FINAL for s in statuses) else None

    def progress() -> tuple[Any, ...]:
        return tuple((job["status"], job["step"]) for job in api.jobs(ids))

    statuses = wait_for(all_final, progress=progress, what="four jobs on two slots", every=0.1)
    assert statuses == ["succeeded"] * 4
    assert most == 2  # the local cluster has 2 CPUs and each job asks for 1


def test_a_killed_worker_is_retried_from_its_checkpoint(api: Api) -> None:
    job_id = api.submit(tiny(steps=1_000_000, checkpoint={"every": 40, "keep": 2}, log_every=10))
    pid = wait_for_checkpoint(api, job_id)
    os.kill(pid, signal.SIGKILL)
    job = cancel_once_past(api, job_id, attempt=2, step=api.job(job_id)["step"] + 40)
    assert job["attempt"] == 2
    logged_steps_whole(api, job_id, 10)  # nothing lost, nothing twice across the kill
    started = worker_starts(api.home, job_id)
    assert len(started) == 2
    assert started[1]["resume_from"].endswith(".pt")  # attempt 2 resumed from a checkpoint
    assert any("attempt 1 lost" in e["message"] for e in events(api.home, job_id, "status"))


@pytest.fixture(scope="module")
def cold(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A service of its own that trains each job in a fresh Ray worker (warm_workers off: the
    reference path) and retries a job at most twice."""
    env = {"SYMOPT_RAY_NUM_CPUS": "1", "SYMOPT_MAX_ATTEMPTS": "2", "SYMOPT_WARM_WORKERS": "false"}
    with live_service(tmp_path_factory.mktemp("cold"), env=env) as service:
        yield private_api(service)


@pytest.mark.xdist_group("cold")
def test_retries_are_bounded(cold: Api) -> None:
    job_id = cold.submit(tiny(steps=100_000, checkpoint={"every": 20, "keep": 1}))
    first = wait_for_checkpoint(cold, job_id)
    os.kill(first, signal.SIGKILL)
    second = wait_for_checkpoint(cold, job_id, attempt=2)
    assert second != first
    os.kill(second, signal.SIGKILL)
    job = cold.finished(job_id)
    assert job["status"] == "failed"
    assert "the worker failed 2 time(s)" in job["error"]


@pytest.mark.xdist_group("cold")
def test_a_warm_fork_trains_exactly_as_a_fresh_worker(api: Api, cold: Api) -> None:
    """The warm path (a fork of the node's warm process) against the reference (a fresh Ray
    worker that imports everything itself): the same spec gives the same numbers, bit for bit."""
    spec = tiny(steps=30, log_every=1, eval={"every": 10, "batches": 2}, seed=5)
    warm_id, cold_id = api.submit(spec), cold.submit(spec)
    for tenant, job_id in ((api, warm_id), (cold, cold_id)):
        job = tenant.finished(job_id)
        assert job["status"] == "succeeded", job["error"]
    [warm_start], [cold_start] = worker_starts(api.home, warm_id), worker_starts(cold.home, cold_id)
    assert warm_start.get("warm") is True
    assert "warm" not in cold_start
    assert warm_start["torch_threads"] == cold_start["torch_threads"] == 1
    for name in ("train_loss", "val_loss", "grad_norm"):
        warm, reference = api.series(warm_id, name), cold.series(cold_id, name)
        assert reference[0], name
        assert warm == reference, name


def test_a_killed_service_resumes_its_jobs_and_a_sigterm_stops_it_with_its_ray(tmp_path: Path) -> None:
    with live_service(tmp_path, env={"SYMOPT_RAY_NUM_CPUS": "1"}) as service:
        api = private_api(service)
        job_id = api.submit(tiny(steps=1_000_000, checkpoint={"every": 40, "keep": 2}, log_every=10))
        worker = wait_for_checkpoint(api, job_id)
        service.process.send_signal(signal.SIGKILL)
        service.process.wait()
    deadline = time.monotonic() + 120
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(worker), "the run must die with its service, so that it never runs twice at once"
    with live_service(tmp_path, env={"SYMOPT_RAY_NUM_CPUS": "1"}) as restarted:
        api = Api(restarted, api.key)
        job = cancel_once_past(api, job_id, attempt=2, step=api.job(job_id)["step"] + 40)
        assert job["attempt"] == 2
        logged_steps_whole(api, job_id, 10)
        started = worker_starts(tmp_path, job_id)
        assert started[-1]["resume_from"].endswith(".pt")
        assert any(
            "requeued: its scheduler stopped" in e["message"] for e in events(tmp_path, job_id, "status")
        )
        # A graceful stop ends the service and every Ray process it started, and the node's warm
        # process (detached from Ray's process tree, it follows its raylet).
        ray_processes = descendants(restarted.process.pid)
        assert any("gcs_server" in command_line(pid) for pid in ray_processes)
        warm = warm_processes(ray_processes)
        assert len(warm) == 1, warm
        ray_processes.update(warm)
        restarted.process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught: -15, not a crash (-6).
        assert restarted.process.wait(timeout=120) in (0, -signal.SIGTERM), "".join(restarted.output[-40:])
    output = "".join(restarted.output)
    assert "Application shutdown complete" in output  # the lifespan ran to its end: scheduler.stop()
    assert "Finished server process" in output
    assert wait_until_gone(ray_processes) == [], "Ray processes outlived the service"


STARTS = (
    "SELECT count(*) FROM symopt_job_events WHERE kind = 'status' "
    "AND data->>'status' = 'worker_started' AND job_id = ANY(:ids)"
)


def test_a_second_scheduler_on_a_sqlite_database_is_refused(shared_service: SharedService) -> None:
    """SQLite: one scheduler per database (the shared service's runs one); a second says why."""
    env = one_thread_env(
        SYMOPT_HOME=str(shared_service.home), SYMOPT_DATABASE_URL=shared_service.database_url
    )
    second = subprocess.run(
        [sys.executable, "-m", "service.cli", "scheduler"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert second.returncode == 2
    assert "Another scheduler already runs on this SQLite database" in second.stderr
    assert httpx.get(f"{shared_service.url}/readyz", timeout=60).status_code == 200  # the first goes on


@pytest.mark.parametrize("database_url", [b for b in BACKENDS if b != "sqlite"], indirect=True)
def test_two_schedulers_share_one_postgresql_queue(tmp_path: Path, database_url: str) -> None:
    """PostgreSQL: two schedulers share one queue and no job is claimed twice (SKIP LOCKED)."""
    env = one_thread_env(SYMOPT_HOME=str(tmp_path), SYMOPT_DATABASE_URL=database_url, SYMOPT_RAY_NUM_CPUS="1")
    command = [sys.executable, "-m", "service.cli"]
    key = subprocess.run(
        [*command, "keys", "create", "--tenant", "pg"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    schedulers = [
        subprocess.Popen(
            [*command, "scheduler"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(2)
    ]
    try:
        with live_service(
            tmp_path, database_url, env={"SYMOPT_RAY_NUM_CPUS": "1"}, args=("--no-scheduler",)
        ) as served:
            api = Api(served, key)
            ids = [api.submit(tiny(steps=40)) for _ in range(6)]
            jobs = [api.finished(job_id) for job_id in ids]
    finally:
        for process in schedulers:
            process.send_signal(signal.SIGTERM)
        for process in schedulers:
            process.wait(timeout=60)
    assert [job["status"] for job in jobs] == ["succeeded"] * 6
    assert [job["attempt"] for job in jobs] == [1] * 6  # each claimed once
    engine = create_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT owner FROM symopt_jobs WHERE id = ANY(:ids)"), {"ids": ids})
        owners = {row[0] for row in rows}
        starts = connection.execute(text(STARTS), {"ids": ids}).scalar()
    engine.dispose()
    assert starts == 6
    assert len(owners) == 2  # both schedulers took jobs from the one queue
