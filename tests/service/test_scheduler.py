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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from service.scheduler.runtime import RESERVED_PORTS
from service.store import Store
from service.store.jobs import read_events
from service.testing import ROOT, LiveService, live_service

FINAL = {"succeeded", "failed", "diverged", "cancelled"}


def tiny(steps: int = 60, **changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"family": "qwen3", "size": "tiny"},
        "data": {"corpus": "pystdlib", "seq_len": 32},
        "batch": {"size": 4},
        "steps": steps,
        "log_every": 5,
        "eval": {"every": 30, "batches": 2},
        "schedule": {"kind": "constant"},
        "seed": 1,
    }
    spec.update(changes)
    return spec


class Api:
    def __init__(self, service: LiveService, key: str) -> None:
        self.service = service
        self.http = httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)

    def submit(self, spec: dict[str, Any]) -> str:
        response = self.http.post("/v1/jobs", json=spec)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.http.get(f"/v1/jobs/{job_id}").json())

    def series(self, job_id: str, name: str) -> tuple[list[int], list[Any]]:
        body = self.http.get(f"/v1/jobs/{job_id}/metrics", params={"names": name, "limit": 100000}).json()
        found = [s for s in body["series"] if s["name"] == name]
        return (found[0]["steps"], found[0]["values"]) if found else ([], [])

    def wait(
        self, job_id: str, until: Callable[[dict[str, Any]], bool], timeout: float = 180.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if until(job):
                return job
            time.sleep(0.2)
        raise AssertionError(f"timed out; job is {self.job(job_id)}")

    def finished(self, job_id: str, timeout: float = 180.0) -> dict[str, Any]:
        return self.wait(job_id, lambda job: job["status"] in FINAL, timeout)


def events(home: Path, job_id: str, kind: str) -> list[dict[str, Any]]:
    """Events straight from the embedded database (workers report their pid in them)."""
    store = Store.connect(f"sqlite:///{home / 'symopt.db'}")
    with store.transaction() as session:
        found = [
            {"id": e.id, "message": e.message, **e.data}
            for e in read_events(session=session, job_id=job_id, kinds=[kind])
        ]
    store.close()
    return found


def wait_for_checkpoint(home: Path, job_id: str, attempt: int = 1, timeout: float = 120.0) -> int:
    """The pid of the worker of `attempt`, once that attempt has written a checkpoint."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        started = [e for e in events(home, job_id, "status") if e.get("status") == "worker_started"]
        if len(started) >= attempt:
            mine = started[attempt - 1]
            if any(e["id"] > mine["id"] for e in events(home, job_id, "checkpoint")):
                return int(mine["pid"])
        time.sleep(0.2)
    raise AssertionError(f"attempt {attempt} wrote no checkpoint")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def worker_pids(home: Path, job_id: str) -> list[int]:
    """The pid of each attempt's Ray worker, from its `worker_started` event."""
    return [int(e["pid"]) for e in events(home, job_id, "status") if e.get("status") == "worker_started"]


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


def wait_until_gone(processes: dict[int, int], timeout: float = 60.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := still_running(processes)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def complete_series(api: Api, job_id: str, steps: int, every: int) -> None:
    got, values = api.series(job_id, "train_loss")
    assert got == list(range(every, steps + 1, every)), "the series must have every step once"
    assert all(isinstance(v, float) for v in values)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    home = tmp_path_factory.mktemp("shared")
    (home / "data").mkdir()
    with live_service(
        home, env={"SYMOPT_RAY_NUM_CPUS": "2", "SYMOPT_DATA_DIR": str(home / "data")}
    ) as service:
        assert service.api_key is not None
        yield Api(service, service.api_key)


def test_a_job_runs_to_success_and_its_loss_falls(shared: Api) -> None:
    job_id = shared.submit(tiny())
    job = shared.finished(job_id)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempt"] == 1
    assert job["started_at"] is not None
    assert job["result"]["steps"] == 60
    complete_series(shared, job_id, 60, 5)
    _, values = shared.series(job_id, "train_loss")
    assert values[-1] < values[0]
    assert shared.series(job_id, "val_loss")[0] == [0, 30, 60]
    assert job["best_val_loss"] == pytest.approx(min(shared.series(job_id, "val_loss")[1]))


def test_nan_ends_diverged_and_an_exception_ends_failed(shared: Api) -> None:
    diverging = shared.submit(tiny(optimizer={"preset": "adamw", "lr": 1e6}, grad_clip=None))
    failing = shared.submit(tiny(data={"corpus": "file:no/such/corpus.txt", "seq_len": 32}))
    job = shared.finished(diverging)
    assert job["status"] == "diverged"
    assert 1 <= job["diverged_at"] <= 60
    job = shared.finished(failing)
    assert job["status"] == "failed"
    assert "ConfigError" in job["error"]
    assert "no/such/corpus.txt" in job["error"]
    assert "Traceback" in job["error"]
    assert job["attempt"] == 1  # an exception in training is not retried
    # The scheduler keeps serving: a job submitted after both ends runs to success.
    after = shared.finished(shared.submit(tiny(steps=10)))
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


def test_an_exception_after_some_steps_ends_failed_with_the_traceback_tail(shared: Api) -> None:
    job_id = shared.submit(FAILS_AT_STEP_11)
    job = shared.finished(job_id)
    assert job["status"] == "failed"
    assert job["attempt"] == 1
    error = job["error"]
    assert error.startswith("ConfigError: seq_len=256 needs at least 257 tokens, but the train split has 199")
    assert "Traceback (most recent call last)" in error
    tail = error.splitlines()
    assert any("symopt_core/data/sampler.py" in line for line in tail)  # the frame that raised
    assert any("in train_step" in line for line in tail)  # inside a training step, not at setup
    assert shared.series(job_id, "train_loss")[0] == [5, 10]  # the steps before the failure stay
    assert job["step"] == 10
    after = shared.finished(shared.submit(tiny(steps=10)))
    assert after["status"] == "succeeded", after["error"]


def test_readyz_checks_the_schedulers_ray(shared: Api) -> None:
    response = httpx.get(f"{shared.service.url}/readyz", timeout=30)
    assert response.status_code == 200
    assert response.json() == {"ready": True, "checks": {"database": "ok", "migrations": "head", "ray": "ok"}}


def test_a_job_needing_a_missing_gpu_stays_queued_and_says_why(shared: Api) -> None:
    job_id = shared.submit(tiny(resources={"gpus": 1, "cpus": 1}))
    job = shared.wait(job_id, lambda job: job["queued_reason"] is not None, timeout=30)
    assert job["status"] == "queued"
    assert "needs 1 GPU(s)" in job["queued_reason"]
    assert "the Ray cluster has 0 GPU(s)" in job["queued_reason"]
    time.sleep(1.5)
    assert shared.job(job_id)["status"] == "queued"
    assert shared.http.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"


def test_cancel_stops_a_running_job_within_seconds(shared: Api) -> None:
    job_id = shared.submit(tiny(steps=1_000_000))
    shared.wait(job_id, lambda job: job["status"] == "running" and job["step"] >= 10, timeout=60)
    asked = time.monotonic()
    assert shared.http.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    job = shared.finished(job_id, timeout=30)
    assert job["status"] == "cancelled"
    assert time.monotonic() - asked < 10
    assert len(shared.series(job_id, "train_loss")[0]) >= 2  # the metrics it had stay


def test_cancel_frees_the_slot_and_the_worker_process(tmp_path: Path) -> None:
    with live_service(tmp_path, env={"SYMOPT_RAY_NUM_CPUS": "1"}) as service:
        api = Api(service, service.api_key or "")
        running = api.submit(tiny(steps=1_000_000))
        api.wait(running, lambda job: job["status"] == "running" and job["step"] >= 5, timeout=120)
        waiting = api.submit(tiny(steps=20))
        job = api.wait(waiting, lambda job: job["queued_reason"] is not None, timeout=30)
        assert job["status"] == "queued"
        assert job["queued_reason"] == "waiting for 0 GPU(s) and 1 CPU(s) to free up"  # the one CPU is taken
        [pid] = worker_pids(tmp_path, running)
        assert alive(pid)
        assert api.http.post(f"/v1/jobs/{running}/cancel").status_code == 202
        assert api.finished(running, timeout=60)["status"] == "cancelled"
        job = api.finished(waiting)
        assert job["status"] == "succeeded", job["error"]
        assert worker_pids(tmp_path, waiting) != [pid]  # a fresh worker process, not the cancelled one
        deadline = time.monotonic() + 30
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(pid), "the cancelled run's worker process must exit"


def test_local_ray_avoids_6379_and_stops_with_the_service(tmp_path: Path) -> None:
    with live_service(tmp_path, env={"SYMOPT_RAY_NUM_CPUS": "1"}) as service:
        api = Api(service, service.api_key or "")
        job = api.finished(api.submit(tiny(steps=10)))
        assert job["status"] == "succeeded", job["error"]
        ray_processes = descendants(service.process.pid)
        [gcs] = [pid for pid in ray_processes if "gcs_server" in command_line(pid)]
        found = re.search(r"--gcs_server_port=(\d+)", command_line(gcs))
        assert found is not None
        gcs_port = int(found.group(1))
        assert gcs_port not in {0, *RESERVED_PORTS}  # an explicit port, and not Redis's
        listening = listening_ports({service.process.pid, *ray_processes})
        assert gcs_port in listening[gcs]
        every_port = set().union(*listening.values())
        assert every_port.isdisjoint(RESERVED_PORTS), listening
        assert not any("dashboard.py" in command_line(pid) and pid in listening for pid in ray_processes)
        service.process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught: -15, not a crash (-6).
        assert service.process.wait(timeout=90) in (0, -signal.SIGTERM), "".join(service.output[-40:])
    output = "".join(service.output)
    assert "Application shutdown complete" in output  # the lifespan ran to its end: scheduler.stop()
    assert "Finished server process" in output
    assert wait_until_gone(ray_processes) == [], "Ray processes outlived the service"


def test_readyz_is_503_when_the_schedulers_ray_is_down(tmp_path: Path) -> None:
    with live_service(tmp_path, env={"SYMOPT_RAY_NUM_CPUS": "1"}) as service:
        ray_processes = descendants(service.process.pid)
        try:
            [gcs] = [pid for pid in ray_processes if "gcs_server" in command_line(pid)]
            os.kill(gcs, signal.SIGKILL)
            deadline, response = time.monotonic() + 60, None
            while time.monotonic() < deadline:
                response = httpx.get(f"{service.url}/readyz", timeout=30)
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
            # A driver whose GCS died does not stop cleanly: end it and its Ray now.
            service.process.kill()
            service.process.wait()
            for pid in wait_until_gone(ray_processes, timeout=30):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def test_k_slots_run_k_jobs_at_once(shared: Api) -> None:
    ids = [shared.submit(tiny(steps=80)) for _ in range(4)]
    most, deadline = 0, time.monotonic() + 240
    while time.monotonic() < deadline:
        # All four from one read: four reads one after another can see a job still running and,
        # a moment later, the job that took its slot running too (a count of 3 that never was).
        listed = {
            job["id"]: job["status"]
            for job in shared.http.get("/v1/jobs", params={"limit": 100}).json()["data"]
        }
        statuses = [listed[job_id] for job_id in ids]
        most = max(most, statuses.count("running"))
        if all(s in FINAL for s in statuses):
            break
        time.sleep(0.1)
    assert statuses == ["succeeded"] * 4
    assert most == 2  # the local cluster has 2 CPUs and each job asks for 1


def test_a_killed_worker_is_retried_from_its_checkpoint(tmp_path: Path) -> None:
    with live_service(tmp_path, env={"SYMOPT_RAY_NUM_CPUS": "1"}) as service:
        api = Api(service, service.api_key or "")
        job_id = api.submit(tiny(steps=200, checkpoint={"every": 40, "keep": 2}, log_every=10))
        pid = wait_for_checkpoint(tmp_path, job_id)
        os.kill(pid, signal.SIGKILL)
        job = api.finished(job_id)
        assert job["status"] == "succeeded", job["error"]
        assert job["attempt"] == 2
        complete_series(api, job_id, 200, 10)
        started = [e for e in events(tmp_path, job_id, "status") if e.get("status") == "worker_started"]
        assert len(started) == 2
        assert started[1]["resume_from"].endswith(".pt")  # attempt 2 resumed from a checkpoint
        assert any("attempt 1 lost" in e["message"] for e in events(tmp_path, job_id, "status"))


def test_retries_are_bounded(tmp_path: Path) -> None:
    with live_service(tmp_path, env={"SYMOPT_RAY_NUM_CPUS": "1", "SYMOPT_MAX_ATTEMPTS": "2"}) as service:
        api = Api(service, service.api_key or "")
        job_id = api.submit(tiny(steps=100_000, checkpoint={"every": 20, "keep": 1}))
        first = wait_for_checkpoint(tmp_path, job_id)
        os.kill(first, signal.SIGKILL)
        second = wait_for_checkpoint(tmp_path, job_id, attempt=2)
        assert second != first
        os.kill(second, signal.SIGKILL)
        job = api.finished(job_id, timeout=60)
        assert job["status"] == "failed"
        assert "the worker failed 2 time(s)" in job["error"]


def test_a_killed_service_resumes_its_jobs_after_restart(tmp_path: Path) -> None:
    with live_service(tmp_path, env={"SYMOPT_RAY_NUM_CPUS": "1"}) as service:
        key = service.api_key or ""
        api = Api(service, key)
        job_id = api.submit(tiny(steps=240, checkpoint={"every": 40, "keep": 2}, log_every=10))
        worker = wait_for_checkpoint(tmp_path, job_id)
        service.process.send_signal(signal.SIGKILL)
        service.process.wait()
    deadline = time.monotonic() + 30
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(worker), "the run must die with its service, so that it never runs twice at once"
    with live_service(tmp_path, env={"SYMOPT_RAY_NUM_CPUS": "1"}) as restarted:
        api = Api(restarted, key)
        job = api.finished(job_id)
        assert job["status"] == "succeeded", job["error"]
        assert job["attempt"] == 2
        complete_series(api, job_id, 240, 10)
        started = [e for e in events(tmp_path, job_id, "status") if e.get("status") == "worker_started"]
        assert started[-1]["resume_from"].endswith(".pt")
        assert any(
            "requeued: its scheduler stopped" in e["message"] for e in events(tmp_path, job_id, "status")
        )


STARTS = (
    "SELECT count(*) FROM symopt_job_events WHERE kind = 'status' "
    "AND data->>'status' = 'worker_started' AND job_id = ANY(:ids)"
)


def test_schedulers_per_database(tmp_path: Path, database_url: str) -> None:
    """PostgreSQL: two schedulers share one queue and no job is claimed twice (SKIP LOCKED).
    SQLite: one scheduler per database; a second one is refused and says why."""
    env = {
        **os.environ,
        "SYMOPT_HOME": str(tmp_path),
        "SYMOPT_DATABASE_URL": database_url,
        "SYMOPT_RAY_NUM_CPUS": "1",
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, "-m", "service.cli"]
    if database_url.startswith("sqlite"):
        with live_service(tmp_path, database_url, env={"SYMOPT_RAY_NUM_CPUS": "1"}):
            second = subprocess.run(
                [*command, "scheduler"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
            )
        assert second.returncode == 2
        assert "Another scheduler already runs on this SQLite database" in second.stderr
        return
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
            jobs = [api.finished(job_id, timeout=240) for job_id in ids]
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
