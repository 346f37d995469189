"""A live `symopt serve` shared by the tests of one xdist worker, and the helpers that drive it.

Starting `symopt serve` costs 10 s on an idle 2-core machine and over 30 s on a loaded one (a
local Ray cluster comes up with it). So each xdist worker starts one, for the whole session, and
every test that does not kill, restart or re-migrate a service runs in it as a tenant of its own:
isolation between tests is the product's own tenant isolation (another tenant's jobs, sweeps and
studies are 404s and absent from lists). Tests that need a service to themselves (faults,
restarts, other settings, a scheduler per database) still start one with `live_service`.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from service.store import Store
from service.store.jobs import read_events
from service.testing import LiveService

from ..waiting import wait_for

__all__ = [
    "FINAL",
    "SWEEP_FINAL",
    "Api",
    "SharedService",
    "Sweeps",
    "alive",
    "cancel_once_past",
    "complete_series",
    "events",
    "logged_steps_whole",
    "rows",
    "sqlite_url",
    "study_counts",
    "wait_for_checkpoint",
    "worker_starts",
]

FINAL = {"succeeded", "failed", "diverged", "cancelled"}
ACTIVE_JOBS = ("queued", "running", "cancelling")
ACTIVE_SWEEPS = ("queued", "running", "cancelling")


def sqlite_url(home: Path) -> str:
    """The embedded database of a service whose SYMOPT_HOME is `home`."""
    return f"sqlite:///{home / 'symopt.db'}"


def rows(home: Path, query: str, **params: Any) -> list[Any]:
    """Rows straight from a service's embedded database (every tenant's)."""
    engine = create_engine(sqlite_url(home))
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(query), params))
    finally:
        engine.dispose()


def events(home: Path, job_id: str, kind: str) -> list[dict[str, Any]]:
    """A job's events of one kind, straight from the embedded database (workers put their pid,
    host and torch threads in their `worker_started` event)."""
    store = Store.connect(sqlite_url(home))
    try:
        with store.transaction() as session:
            return [
                {"id": e.id, "message": e.message, **e.data}
                for e in read_events(session=session, job_id=job_id, kinds=[kind])
            ]
    finally:
        store.close()


@dataclass(frozen=True)
class ServiceTenant:
    """A tenant of a live service, shaped like LiveService where tests read it: where the service
    listens, the tenant's key, and the service's home (its database and artifacts)."""

    url: str
    api_key: str
    home: Path
    tenant: str


@dataclass
class SharedService:
    """One worker's live service, its admin key, and what a test needs to share it."""

    service: LiveService
    admin_key: str

    @property
    def url(self) -> str:
        return self.service.url

    @property
    def home(self) -> Path:
        return self.service.home

    @property
    def database_url(self) -> str:
        return sqlite_url(self.home)

    def new_key(self, tenant: str | None = None) -> str:
        """An API key of a new tenant (`tenant`, or a fresh name), from the admin key over HTTP."""
        name = tenant or f"test-{uuid.uuid4().hex[:12]}"
        response = httpx.post(
            f"{self.url}/v1/keys",
            json={"tenant": name, "name": "test"},
            headers={"Authorization": f"Bearer {self.admin_key}"},
            timeout=60,
        )
        assert response.status_code == 201, response.text
        return str(response.json()["api_key"])

    def tenant(self, name: str | None = None) -> ServiceTenant:
        """A new tenant of this service (`name`, or a fresh one), with its key."""
        name = name or f"test-{uuid.uuid4().hex[:12]}"
        return ServiceTenant(self.url, self.new_key(name), self.home, name)

    def mark(self) -> int:
        """Where the service's output stands now: `log_since(mark)` is what it printed after."""
        return len(self.service.output)

    def log_since(self, mark: int) -> str:
        return "".join(self.service.output[mark:])

    def lines_since(self, mark: int, pattern: str) -> list[str]:
        return [line for line in self.service.output[mark:] if re.search(pattern, line)]

    def active(self) -> tuple[int, int]:
        """(jobs queued, running or cancelling; sweeps and studies not yet ended), all tenants."""
        jobs = rows(self.home, f"SELECT count(*) FROM symopt_jobs WHERE status IN {ACTIVE_JOBS}")[0][0]
        sweeps = rows(self.home, f"SELECT count(*) FROM symopt_sweeps WHERE status IN {ACTIVE_SWEEPS}")[0][0]
        studies = rows(self.home, f"SELECT count(*) FROM symopt_studies WHERE status IN {ACTIVE_SWEEPS}")[0][
            0
        ]
        return int(jobs), int(sweeps) + int(studies)

    def wait_idle(self) -> None:
        """Until no job, sweep or study of any tenant is left active: for a test that counts the
        service's slots (an earlier test's cancelled job may still be giving its slot back)."""
        wait_for(lambda: self.active() == (0, 0), progress=self.active, what="the shared service to idle")


class Api:
    """A tenant's view of a live service over plain HTTP (the REST API as documented)."""

    def __init__(self, service: LiveService | SharedService, key: str) -> None:
        self.service = service
        self.url = service.url
        self.home = service.home
        self.key = key
        self.http = httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)

    def submit(self, spec: dict[str, Any]) -> str:
        response = self.http.post("/v1/jobs", json=spec)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.http.get(f"/v1/jobs/{job_id}").json())

    def jobs(self, ids: list[str]) -> list[dict[str, Any]]:
        """Several of this tenant's jobs from one read (one snapshot, not reads a moment apart)."""
        listed = {job["id"]: job for job in self.http.get("/v1/jobs", params={"limit": 200}).json()["data"]}
        return [listed[job_id] for job_id in ids]

    def series(self, job_id: str, name: str) -> tuple[list[int], list[Any]]:
        body = self.http.get(f"/v1/jobs/{job_id}/metrics", params={"names": name, "limit": 100000}).json()
        found = [s for s in body["series"] if s["name"] == name]
        return (found[0]["steps"], found[0]["values"]) if found else ([], [])

    def wait(self, job_id: str, until: Callable[[dict[str, Any]], bool], what: str = "") -> dict[str, Any]:
        """The job once `until(job)` holds, waiting as long as its status, attempt or step moves."""
        latest: dict[str, Any] = {}

        def check() -> dict[str, Any] | None:
            latest.update(self.job(job_id))
            return dict(latest) if until(latest) else None

        def progress() -> tuple[Any, ...]:
            return tuple(latest.get(k) for k in ("status", "attempt", "step", "queued_reason"))

        return wait_for(check, progress=progress, what=what or f"job {job_id}")

    def finished(self, job_id: str) -> dict[str, Any]:
        return self.wait(job_id, lambda job: job["status"] in FINAL, f"job {job_id} to finish")

    def cancel_all(self) -> None:
        """Cancel whatever this tenant still has queued or running (a test's leftovers)."""
        for job in self.http.get("/v1/jobs", params={"limit": 200}).json()["data"]:
            if job["status"] in ("queued", "running"):
                self.http.post(f"/v1/jobs/{job['id']}/cancel")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def worker_starts(home: Path, job_id: str) -> list[dict[str, Any]]:
    """Each attempt's `worker_started` event (pid, host, torch threads, resumed checkpoint)."""
    return [e for e in events(home, job_id, "status") if e.get("status") == "worker_started"]


def wait_for_checkpoint(api: Api, job_id: str, attempt: int = 1) -> int:
    """The pid of the worker of `attempt`, once that attempt has written a checkpoint."""

    def written() -> int | None:
        started = worker_starts(api.home, job_id)
        if len(started) >= attempt:
            mine = started[attempt - 1]
            if any(e["id"] > mine["id"] for e in events(api.home, job_id, "checkpoint")):
                return int(mine["pid"])
        return None

    def progress() -> tuple[Any, ...]:
        job = api.job(job_id)
        return job["status"], job["attempt"], job["step"]

    return wait_for(written, progress=progress, what=f"attempt {attempt} of {job_id} to write a checkpoint")


def complete_series(api: Api, job_id: str, steps: int, every: int) -> None:
    got, values = api.series(job_id, "train_loss")
    assert got == list(range(every, steps + 1, every)), "the series must have every step once"
    assert all(isinstance(v, float) for v in values)


SWEEP_FINAL = ("succeeded", "failed", "cancelled")


class Sweeps:
    """A tenant's sweeps over plain HTTP."""

    def __init__(self, url: str, key: str) -> None:
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)

    def create(self, base: dict[str, Any], **spec: Any) -> str:
        response = self.http.post("/v1/sweeps", json={"base": base, **spec})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def get(self, sweep_id: str) -> dict[str, Any]:
        return dict(self.http.get(f"/v1/sweeps/{sweep_id}").json())

    def trials(self, sweep_id: str) -> list[dict[str, Any]]:
        return list(self.http.get(f"/v1/sweeps/{sweep_id}/trials").json()["data"])

    def steps(self, job_id: str, name: str) -> list[int]:
        """The steps of one metric series of a job."""
        body = self.http.get(f"/v1/jobs/{job_id}/metrics", params={"names": name, "limit": 100000}).json()
        return next((list(s["steps"]) for s in body["series"] if s["name"] == name), [])

    def progress(self, sweep_id: str) -> tuple[Any, ...]:
        """Where a sweep stands: its status, and each trial job's status and step (one read)."""
        jobs = self.http.get("/v1/jobs", params={"sweep_id": sweep_id, "limit": 500}).json()["data"]
        return self.get(sweep_id)["status"], tuple(sorted((j["id"], j["status"], j["step"]) for j in jobs))

    def wait_until(self, sweep_id: str, done: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """The sweep once `done(sweep)` holds, waiting as long as its trials make progress."""

        def check() -> dict[str, Any] | None:
            sweep = self.get(sweep_id)
            return sweep if done(sweep) else None

        return wait_for(check, progress=lambda: self.progress(sweep_id), what=what, every=1.0)

    def wait(self, sweep_id: str) -> dict[str, Any]:
        return self.wait_until(sweep_id, lambda s: s["status"] in SWEEP_FINAL, f"sweep {sweep_id} to end")


def study_counts(url: str, study: str) -> dict[str, int]:
    """Optuna's own count of a study's trials by state, from its tables."""
    engine = create_engine(url)
    with engine.connect() as connection:
        found = connection.execute(
            text(
                "SELECT t.state, count(*) FROM trials t JOIN studies s ON s.study_id = t.study_id "
                "WHERE s.study_name = :name GROUP BY t.state"
            ),
            {"name": study},
        ).all()
    engine.dispose()
    return {str(state).split(".")[-1]: count for state, count in found}


def cancel_once_past(api: Api, job_id: str, *, attempt: int, step: int) -> dict[str, Any]:
    """Wait until `attempt` of a (long) job runs past `step`, cancel it, and return it finished.

    The fault tests use this instead of letting a short job run to its end: a tiny job trains
    about 100 steps a second, so on a fast machine a short one may finish before the fault it is
    meant to survive; a long one cancelled once it has shown its progress after the fault cannot."""
    api.wait(
        job_id,
        lambda job: job["attempt"] == attempt and job["status"] == "running" and job["step"] > step,
        f"attempt {attempt} of {job_id} past step {step}",
    )
    assert api.http.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    job = api.finished(job_id)
    assert job["status"] == "cancelled", job
    return job


def logged_steps_whole(api: Api, job_id: str, every: int) -> None:
    """The train_loss series has every logged step up to the job's last one, each once."""
    job = api.job(job_id)
    complete_series(api, job_id, job["step"], every)
