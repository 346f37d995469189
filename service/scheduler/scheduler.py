"""The scheduler: queued jobs -> Ray runs -> events -> the store.

One loop (a thread in `symopt serve`, or the `symopt scheduler` process): every tick it writes
what the runs reported (in one transaction, retried whole if the database fails), forwards
cancellations to Ray, heartbeats the jobs it owns, requeues jobs whose scheduler died, and
launches queued jobs that fit in the cluster. Runs stream their events through one consumer
thread each into a queue the loop drains.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from symopt_core.run_request import RunRequest

from ..errors import StoreError
from ..redaction import PathRedactor
from ..settings import Settings
from ..store import JobStatus, Store
from ..store.agents import expire_leases, extend_leases, has_expired_leases
from ..store.jobs import append_events, get_job, transition
from ..store.metrics import newest_stored_steps, note_progress, record_metrics_of_jobs
from ..store.models import Job, utcnow
from ..store.scheduling import claim_queued, heartbeat, orphaned, requeue, start_attempt, wanted_cancellations
from ..studies.controller import StudyController
from ..sweeps.controller import SweepController
from . import lifecycle
from .ingest import Outcome, Pending
from .lock import SchedulerLock
from .runtime import Capacity, RayRuntime

__all__ = ["Scheduler"]

log = logging.getLogger("symopt.scheduler")

# How often agents' leases are checked: a lease lasts at least 5 s (store/agents.py), so a lost
# attempt is re-offered within a second of its lease running out.
LEASE_CHECK_SECONDS = 1.0


@dataclass
class Run:
    job_id: str
    attempt: int
    cpus: int
    gpus: int
    events: Any  # Ray's ObjectRefGenerator
    cancel_requested_at: float | None = None
    thread: threading.Thread | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Message:
    job_id: str
    attempt: int
    kind: str  # event | end | crash | cancelled
    payload: Any = None


class Scheduler:
    """Connects the store to Ray; `start()` runs the loop in a thread, `stop()` ends it."""

    def __init__(self, store: Store, settings: Settings, runtime: RayRuntime | None = None) -> None:
        self.store = store
        self.settings = settings
        self.runtime = runtime or RayRuntime(
            settings.ray_address,
            settings.ray_num_cpus,
            warm=settings.warm_workers,
            dashboard=settings.ray_dashboard,
        )
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"[:64]
        self.runs: dict[str, Run] = {}
        self.inbox: queue.Queue[Message] = queue.Queue()
        self.redact = PathRedactor.for_settings(settings)
        self.pending = Pending(redact=self.redact)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = SchedulerLock.for_url(settings.resolved_database_url())
        self._last_heartbeat = 0.0
        self._last_orphan_check = 0.0
        self._last_lease_check = 0.0
        self.sweeps = SweepController(store, settings, self.owner, exclusive=self._lock.exclusive)
        self.studies = StudyController(store, settings, self.owner, exclusive=self._lock.exclusive)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._lock.acquire()
        self.runtime.start()
        # A SQLite database has one scheduler (the lock): every running job it finds is an orphan.
        self.recover_orphans(immediately=self._lock.exclusive)
        with self.store.transaction() as session:  # agents could not report while no service ran
            extended = extend_leases(session=session, now=utcnow())
        if extended:
            log.info("gave %d agent lease(s) their full length again after the start", extended)
        self._thread = threading.Thread(target=self._loop, name="symopt-scheduler", daemon=True)
        self._thread.start()
        log.info("scheduler %s started", self.owner)

    def stop(self, timeout: float = 60.0) -> None:
        """Stop launching, ask runs to stop at their next step, requeue their jobs to resume."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for run in list(self.runs.values()):
            with contextlib.suppress(Exception):
                self.runtime.cancel(run.events, force=False)
        deadline = time.monotonic() + timeout
        for run in list(self.runs.values()):
            if run.thread is not None:
                run.thread.join(max(0.0, deadline - time.monotonic()))
        self._collect(drop_outcomes=True)
        with contextlib.suppress(StoreError):
            self._flush()
            lines = []
            with self.store.transaction() as session:
                for run in self.runs.values():
                    job = get_job(session=session, tenant_id=None, job_id=run.job_id)
                    if job.owner == self.owner and job.status == JobStatus.RUNNING:
                        requeue(session=session, job=job, reason="the service stopped")
                        lines.append(lifecycle.requeued(job, "the service stopped"))
            _emit(lines)
        self.runs.clear()
        self.runtime.shutdown()
        self._lock.release()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except StoreError as error:  # the database is away: everything pending is kept
                log.warning("scheduler tick: %s (will retry)", error)
            except Exception:
                log.exception("scheduler tick failed (will retry)")
            self._stop.wait(self.settings.scheduler_poll_seconds)

    def tick_flush(self) -> None:
        """Write what the runs reported so far (one transaction)."""
        self._collect()
        self._flush()

    def tick(self) -> None:
        self.tick_flush()
        self._forward_cancellations()
        now = time.monotonic()
        if now - self._last_heartbeat >= self.settings.heartbeat_seconds:
            with self.store.transaction() as session:
                heartbeat(session=session, owner=self.owner, job_ids=list(self.runs))
            self._last_heartbeat = now
        if now - self._last_orphan_check >= self.settings.heartbeat_seconds * 2:
            self.recover_orphans(immediately=False)
            self._last_orphan_check = now
        if now - self._last_lease_check >= LEASE_CHECK_SECONDS:
            self.expire_agent_leases()
            self._last_lease_check = now
        self.studies.tick()  # may queue tuning sweeps and confirmation runs
        self.sweeps.tick()  # may queue trial jobs, launched just below
        self._launch()

    # -- events in ------------------------------------------------------------------------------

    def _consume(self, run: Run) -> None:
        try:
            for ref in run.events:
                self.inbox.put(Message(run.job_id, run.attempt, "event", self.runtime.get(ref)))
            self.inbox.put(Message(run.job_id, run.attempt, "end"))
        except BaseException as error:  # a crashed worker, a lost node, or our own cancel
            kind = "cancelled" if self.runtime.is_cancellation(error) else "crash"
            self.inbox.put(Message(run.job_id, run.attempt, kind, f"{type(error).__name__}: {error}"))

    def _collect(self, *, drop_outcomes: bool = False) -> None:
        while True:
            try:
                message = self.inbox.get_nowait()
            except queue.Empty:
                return
            run = self.runs.get(message.job_id)
            if run is None or run.attempt != message.attempt:
                continue  # a previous attempt's leftovers
            if message.kind == "event":
                self.pending.add_event(message.job_id, message.attempt, message.payload)
            elif drop_outcomes:
                continue
            elif message.kind == "cancelled":
                self.pending.cancelled(message.job_id, message.attempt)
            elif message.kind == "crash":
                self.pending.crashed(message.job_id, message.attempt, str(message.payload))
            elif message.job_id not in self.pending.outcomes:  # ended without a result: treat as a crash
                self.pending.crashed(message.job_id, message.attempt, "the run ended without a result")

    # -- the store ------------------------------------------------------------------------------

    def _flush(self) -> None:
        """Write everything pending in one transaction; on failure keep it all for the next tick."""
        if not self.pending:
            return
        pending, finished = self.pending, []
        lines: list[lifecycle.JobLine] = []
        with self.store.transaction() as session:
            record_metrics_of_jobs(session=session, points=pending.points)
            for job_id, events in pending.events.items():
                append_events(session=session, job_id=job_id, events=events)
            for job_id, (step, best) in pending.progress.items():
                job = get_job(session=session, tenant_id=None, job_id=job_id)
                note_progress(session=session, job=job, step=step, best_val_loss=best)
                lines += [
                    lifecycle.evaluated(lifecycle.JobRef.of(job), event.step, event.data.get("val_loss"))
                    for event in pending.events.get(job_id, [])
                    if event.kind == "eval"
                ]
            for job_id, outcome in pending.outcomes.items():
                job = get_job(session=session, tenant_id=None, job_id=job_id, for_update=True)
                if job.owner == self.owner and job.attempt == outcome.attempt:
                    self._finish(session, job, outcome)
                    lines.append(lifecycle.ended(job, outcome.error))
                finished.append(job_id)
        self.pending = Pending(redact=self.redact)
        for job_id in finished:
            self.runs.pop(job_id, None)
        _emit(lines)  # only now that their changes are stored: a failed flush is retried whole

    def _finish(self, session: Any, job: Job, outcome: Outcome) -> None:
        status = JobStatus(job.status)
        result = outcome.result.to_json() if outcome.result is not None else None  # Job.result's JSON
        if outcome.status == "crashed":
            failures = job.failures + 1
            if failures < job.max_attempts and status == JobStatus.RUNNING:
                transition(
                    session=session,
                    job=job,
                    to=JobStatus.QUEUED,
                    failures=failures,
                    owner=None,
                    queued_reason=f"retrying after a worker failure ({failures} of {job.max_attempts})",
                    message=f"attempt {job.attempt} lost: {outcome.error}",
                )
            else:
                target = JobStatus.CANCELLED if status == JobStatus.CANCELLING else JobStatus.FAILED
                transition(
                    session=session,
                    job=job,
                    to=target,
                    failures=failures,
                    error=f"the worker failed {failures} time(s); last: {outcome.error}",
                )
        elif outcome.status == "failed":
            transition(session=session, job=job, to=JobStatus.FAILED, error=outcome.error)
        elif outcome.status == "diverged":
            transition(
                session=session,
                job=job,
                to=JobStatus.DIVERGED,
                result=result,
                diverged_at=outcome.diverged_at,
                message=f"diverged at step {outcome.diverged_at}",
            )
        elif outcome.status == "cancelled":
            transition(session=session, job=job, to=JobStatus.CANCELLED, result=result)
        else:
            target = JobStatus.SUCCEEDED if status == JobStatus.RUNNING else JobStatus.CANCELLED
            transition(session=session, job=job, to=target, result=result)

    def recover_orphans(self, *, immediately: bool) -> None:
        """Requeue running jobs whose scheduler stopped heartbeating (all others', with the lock)."""
        stale_before = utcnow() - timedelta(seconds=0 if immediately else self.settings.orphan_after_seconds)
        lines = []
        with self.store.transaction() as session:
            for job in orphaned(session=session, owner=self.owner, stale_before=stale_before):
                if job.status == JobStatus.CANCELLING:
                    transition(
                        session=session,
                        job=job,
                        to=JobStatus.CANCELLED,
                        owner=None,
                        message="cancelled: its scheduler had stopped",
                    )
                    lines.append(lifecycle.ended(job, "its scheduler had stopped"))
                else:
                    requeue(session=session, job=job, reason="its scheduler stopped")
                    lines.append(lifecycle.requeued(job, "its scheduler stopped"))
        _emit(lines)

    def expire_agent_leases(self) -> None:
        """Requeue (or fail, or cancel) agent trials whose lease ran out: store/agents.py."""
        with self.store.read() as session:
            due = has_expired_leases(session=session, now=utcnow())
        if not due:
            return
        with self.store.transaction() as session:
            expired = expire_leases(session=session, now=utcnow())
        if expired:
            log.info("agent leases ran out on %d job(s): %s", len(expired), ", ".join(expired))

    # -- Ray out --------------------------------------------------------------------------------

    def _forward_cancellations(self) -> None:
        with self.store.transaction() as session:
            wanted = wanted_cancellations(session=session, owner=self.owner)
        now = time.monotonic()
        for job_id in wanted:
            run = self.runs.get(job_id)
            if run is None:
                continue
            if run.cancel_requested_at is None:
                run.cancel_requested_at = now
                self.runtime.cancel(run.events, force=False)
            elif now - run.cancel_requested_at > self.settings.cancel_grace_seconds:
                self.runtime.cancel(run.events, force=True)

    def _launch(self) -> None:
        capacity = self.runtime.capacity()
        free_cpus = capacity.cpus - sum(run.cpus for run in self.runs.values())
        free_gpus = capacity.gpus - sum(run.gpus for run in self.runs.values())
        started: list[tuple[Run, RunRequest]] = []
        lines = []
        assets = self.settings.assets()
        with self.store.transaction() as session:
            for job in claim_queued(session=session, limit=100):
                reason = self._waiting_reason(job, capacity, free_cpus, free_gpus)
                if reason is not None:
                    if job.queued_reason != reason:
                        job.queued_reason = reason
                    continue
                start_attempt(session=session, job=job, owner=self.owner)
                lines.append(lifecycle.started(job))
                free_cpus, free_gpus = free_cpus - job.cpus, free_gpus - job.gpus
                # The run reports again each point its checkpoint recorded after the newest
                # stored step of that point's series (an earlier attempt's events may have died
                # in flight with its service, step 0's evaluation or step T's val_loss included).
                request = RunRequest(
                    job.spec,
                    run_dir=self.settings.job_run_dir(job.id),
                    resume_newest=True,  # a retry continues from its newest checkpoint
                    replay_after=newest_stored_steps(session=session, job_id=job.id),
                    assets=assets,
                    job_id=job.id,
                    attempt=job.attempt,
                )
                started.append((Run(job.id, job.attempt, job.cpus, job.gpus, events=None), request))
        _emit(lines)
        for run, request in started:
            self.runs[run.job_id] = run
            try:
                run.events = self.runtime.submit(request, cpus=run.cpus, gpus=run.gpus)
            except Exception as error:  # counted like a crashed worker, so it is retried
                self.pending.crashed(run.job_id, run.attempt, f"could not start on Ray: {error}")
                continue
            run.thread = threading.Thread(
                target=self._consume, args=(run,), name=f"symopt-run-{run.job_id[:8]}", daemon=True
            )
            run.thread.start()

    @staticmethod
    def _waiting_reason(job: Job, capacity: Capacity, free_cpus: float, free_gpus: float) -> str | None:
        if job.gpus > capacity.gpus or job.cpus > capacity.cpus:
            return (
                f"needs {job.gpus} GPU(s) and {job.cpus} CPU(s), but the Ray cluster has {capacity.gpus:g} "
                f"GPU(s) and {capacity.cpus:g} CPU(s); it starts when the cluster grows"
            )
        if job.gpus > free_gpus or job.cpus > free_cpus:
            return f"waiting for {job.gpus} GPU(s) and {job.cpus} CPU(s) to free up"
        return None


def _emit(lines: list[lifecycle.JobLine]) -> None:
    """Write lifecycle lines once the transaction that made their changes has committed."""
    for line in lines:
        line.emit()
