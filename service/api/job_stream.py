"""A job's live event stream (GET /v1/jobs/{id}/events): its events (status, eval, checkpoint,
log) and its metric points as server-sent events, resumable exactly from any frame's id.

Each frame's `id` is `<event id>/seq=<seq>`: the newest event sent and the newest metric seq
(service/store/metrics.py) sent. A browser's EventSource, or `curl --retry`, reconnects to the same
URL with that id as Last-Event-ID, and the stream goes on after both: each event and each point
once, including a point stored late (a step's val_loss after its train_loss) or rewritten by a
retried attempt, which takes a new seq.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.sse import ServerSentEvent

from ..settings import Settings
from ..store import Store
from ..store.jobs import get_job, read_events
from ..store.metrics import MetricsPage, read_metrics
from ..store.status import JobStatus
from .params import MAX_EVENT_ID, MAX_STEP
from .schemas import EventPublic, MetricsPublic

__all__ = ["MAX_SEQ", "RECONNECT_AFTER_MS", "StreamCursor", "job_event_stream", "resume_at"]

MAX_SEQ = 2**63 - 1  # int8, as event ids
# How long a client of a stopping service waits before it reconnects (the SSE `retry` field).
RECONNECT_AFTER_MS = 2000
SEQ_PREFIX = "seq="


@dataclass(frozen=True)
class StreamCursor:
    event_id: int  # every event up to this id sent
    seq: int  # every metric point up to this seq sent
    since_step: int  # points at or before this step are not sent (the query's `since_step`)

    @property
    def sse_id(self) -> str:
        return f"{self.event_id}/{SEQ_PREFIX}{self.seq}"


def resume_at(last_event_id: str | None, query: StreamCursor) -> StreamCursor:
    """Where a stream resumes: after the Last-Event-ID's cursors, else the query's. Besides this
    stream's `event/seq=N` it reads older streams' ids: a bare event id, and `event/step` or
    `event/step/names` (resumed after `step`, or at `step` again: its points may come twice).
    An id this stream cannot have written (garbage, beyond the database's ranges) is ignored."""
    parts = (last_event_id or "").split("/")
    try:
        event_id = int(parts[0])
        if not 0 <= event_id <= MAX_EVENT_ID or len(parts) > 3:
            return query
        if len(parts) == 1:
            return replace(query, event_id=event_id)
        if parts[1].startswith(SEQ_PREFIX) and len(parts) == 2:
            seq = int(parts[1].removeprefix(SEQ_PREFIX))
            return replace(query, event_id=event_id, seq=seq) if 0 <= seq <= MAX_SEQ else query
        step = int(parts[1])
    except ValueError:
        return query
    if not -1 <= step <= MAX_STEP:
        return query
    # `event/step`: all of `step` was sent; `event/step/names`: only the named series at `step`.
    since_step = step if len(parts) == 2 else step - 1
    return StreamCursor(event_id, seq=0, since_step=since_step)


async def job_event_stream(
    *, store: Store, settings: Settings, request: Request, job_id: str, cursor: StreamCursor
) -> AsyncIterator[ServerSentEvent]:
    """Frames after `cursor`, live until the job has finished and everything is sent; then one
    `end` frame. A stopping service ends the stream with a `reconnect` frame."""

    def load(at: StreamCursor) -> tuple[str, list[EventPublic], MetricsPage]:
        with store.read() as session:
            # The status first: once it is final, every event and point before it is stored.
            job = get_job(session=session, tenant_id=None, job_id=job_id)
            events = read_events(session=session, job_id=job_id, after_id=at.event_id, limit=500)
            page = read_metrics(
                session=session,
                job_id=job_id,
                since_step=at.since_step,
                after_seq=at.seq,
                limit=settings.metrics_default_limit,
            )
        return job.status, [EventPublic.of(e) for e in events], page

    stopping = request.app.state.stopping
    while True:
        if stopping.is_set():  # uvicorn waits for open streams before it stops the scheduler
            reason = {"reason": "the service is stopping", "retry_ms": RECONNECT_AFTER_MS}
            yield ServerSentEvent(data=reason, event="reconnect", id=cursor.sse_id, retry=RECONNECT_AFTER_MS)
            return
        status, events, page = await run_in_threadpool(load, cursor)
        for event in events:
            cursor = replace(cursor, event_id=event.id)
            yield ServerSentEvent(data=event.model_dump(mode="json"), event="event", id=cursor.sse_id)
        cursor = replace(cursor, seq=page.next_seq)
        if page.series:
            metrics = MetricsPublic.of(job_id, page).model_dump(mode="json")
            yield ServerSentEvent(data=metrics, event="metrics", id=cursor.sse_id)
        drained = not events and not page.series
        if drained and JobStatus(status).terminal:
            yield ServerSentEvent(data={"status": status}, event="end", id=cursor.sse_id)
            return
        if drained:
            if await request.is_disconnected():
                return
            await asyncio.sleep(settings.sse_poll_seconds)
