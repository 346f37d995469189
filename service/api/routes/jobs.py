"""Jobs: submit, list, read, cancel, delete; metrics, logs and a live event stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent

from symopt_core.spec import JobSpec

from ...checkpoint_downloads import open_newest_checkpoint
from ...store.jobs import create_job, delete_job, get_job, list_jobs, read_events, request_cancel
from ...store.metrics import job_metrics_seq, read_metrics, read_thinned_metrics
from ...store.status import JobStatus
from ..deps import KeyDep, LimiterDep, PrincipalDep, SettingsDep, StoreDep, json_response, read_as
from ..errors import error_responses
from ..job_stream import MAX_SEQ, StreamCursor, job_event_stream, resume_at
from ..params import (
    MAX_EVENT_ID,
    MAX_STEP,
    IdempotencyKey,
    csv,
    documented_as,
    status_filter,
    statuses,
    validated,
)
from ..schemas import EventPublic, EventsPublic, JobPublic, JobsPublic, MetricsPublic
from ..submission import check_submission

MAX_PLOT_POINTS = 100_000  # per series, with max_points

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=error_responses(400, 401, 422, 503))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=JobPublic,
    responses=error_responses(413, 429)
    | {200: {"model": JobPublic, "description": "Replayed: the job this Idempotency-Key created"}},
)
def create_job_route(
    body: Annotated[Any, documented_as(JobSpec), Body()],
    principal: PrincipalDep,
    store: StoreDep,
    limiter: LimiterDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> JobPublic:
    """Queue a training job (201); a replayed Idempotency-Key returns the first job (200)."""
    # Rate-limited before validation, so that invalid specs take a token too (as sweeps do).
    limiter.check(principal.key_id, "job submissions")
    spec = validated(JobSpec, body)
    with store.read() as session:
        check_submission(session, tenant_id=principal.tenant_id, spec=spec, settings=settings)
    with store.transaction() as session:
        job, created = create_job(
            session=session,
            tenant_id=principal.tenant_id,
            spec=spec,
            idempotency_key=idempotency_key,
            max_attempts=settings.max_attempts,
        )
    if not created:
        response.status_code = status.HTTP_200_OK
    return JobPublic.of(job)


@router.get("", response_model=JobsPublic)
def list_jobs_route(
    key: KeyDep,
    store: StoreDep,
    status_: Annotated[str | None, status_filter(JobStatus)] = None,
    name: Annotated[str | None, Query(max_length=200)] = None,
    sweep_id: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    """This tenant's jobs, newest first."""
    chosen = statuses(status_, JobStatus)
    with read_as(store, key) as (principal, session):
        jobs, count = list_jobs(
            session=session,
            tenant_id=principal.tenant_id,
            statuses=chosen,
            name=name,
            sweep_id=sweep_id,
            limit=limit,
            offset=offset,
        )
        return json_response(JobsPublic(data=[JobPublic.of(job) for job in jobs], count=count))


@router.get("/{job_id}", response_model=JobPublic, responses=error_responses(404))
def get_job_route(job_id: str, principal: PrincipalDep, store: StoreDep) -> JobPublic:
    """One job, with its spec, status, progress and result."""
    with store.read() as session:
        return JobPublic.of(get_job(session=session, tenant_id=principal.tenant_id, job_id=job_id))


@router.post(
    "/{job_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobPublic,
    responses=error_responses(404, 409, 413),
)
def cancel_job_route(job_id: str, principal: PrincipalDep, store: StoreDep) -> JobPublic:
    """Cancel a job: queued ones at once, running ones as soon as their task stops."""
    with store.transaction() as session:
        return JobPublic.of(request_cancel(session=session, tenant_id=principal.tenant_id, job_id=job_id))


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(404, 409))
def delete_job_route(job_id: str, principal: PrincipalDep, store: StoreDep) -> Response:
    """Delete a finished job with its metrics and events (409 while it is queued or running)."""
    with store.transaction() as session:
        delete_job(session=session, tenant_id=principal.tenant_id, job_id=job_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{job_id}/metrics", response_model=MetricsPublic, responses=error_responses(404))
def get_job_metrics_route(
    job_id: str,
    key: KeyDep,
    store: StoreDep,
    settings: SettingsDep,
    names: Annotated[str | None, Query(max_length=4000, description="comma-separated series names")] = None,
    since_step: Annotated[
        int | None, Query(ge=-1, le=MAX_STEP, description="only steps after this one")
    ] = None,
    after_seq: Annotated[
        int | None,
        Query(
            ge=0,
            le=MAX_SEQ,
            description="only points stored after this seq (a previous answer's next_seq), in the order "
            "they were stored: a point stored late or rewritten by a retried attempt comes too",
        ),
    ] = None,
    limit: Annotated[int | None, Query(ge=1, description="most points returned")] = None,
    max_points: Annotated[
        int | None,
        Query(
            ge=2,
            le=MAX_PLOT_POINTS,
            description="a plot's worth: every point after since_step in one answer, each series thinned to "
            "at most this many points that keep its first, last, lowest and highest values (limit is "
            "then ignored); poll on with after_seq=next_seq for new points at full resolution",
        ),
    ] = None,
) -> Response:
    """Metric series of a job (train_loss, val_loss, lr_scale, grad_norm/<class>, ...), incrementally."""
    cap = min(limit or settings.metrics_default_limit, settings.metrics_max_limit)
    with read_as(store, key) as (principal, session):
        stored = job_metrics_seq(session=session, tenant_id=principal.tenant_id, job_id=job_id)
        if max_points is not None:
            page = read_thinned_metrics(
                session=session,
                job_id=job_id,
                names=csv(names),
                since_step=since_step,
                after_seq=after_seq,
                max_points=max_points,
                stored_seq=stored,
            )
        else:
            page = read_metrics(
                session=session,
                job_id=job_id,
                names=csv(names),
                since_step=since_step,
                after_seq=after_seq,
                limit=cap,
                stored_seq=stored,
            )
    return json_response(MetricsPublic.of(job_id, page))


@router.get("/{job_id}/logs", response_model=EventsPublic, responses=error_responses(404))
def get_job_logs_route(
    job_id: str,
    principal: PrincipalDep,
    store: StoreDep,
    after_id: Annotated[int, Query(ge=0, le=MAX_EVENT_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> EventsPublic:
    """Log lines of a job, oldest first, after event id `after_id`."""
    with store.read() as session:
        get_job(session=session, tenant_id=principal.tenant_id, job_id=job_id)
        events = read_events(session=session, job_id=job_id, after_id=after_id, kinds=("log",), limit=limit)
    return EventsPublic(
        data=[EventPublic.of(e) for e in events], last_id=events[-1].id if events else after_id
    )


@router.get(
    "/{job_id}/checkpoint",
    response_class=StreamingResponse,
    responses=error_responses(400, 401, 404, 422, 503, by_reference=True)
    | {
        200: {
            "content": {"application/octet-stream": {}, "application/x-tar": {}},
            "description": "a torch checkpoint, or a tar of a sharded (FSDP) one",
        }
    },
)
def download_checkpoint_route(
    job_id: str, principal: PrincipalDep, store: StoreDep, settings: SettingsDep
) -> Response:
    """The job's newest checkpoint (`torch.load(path, weights_only=True)` reads it); 404 before the first.

    An FSDP job's checkpoints are directories (step_<step>.dcp, torch.distributed.checkpoint):
    those come as one uncompressed tar of the directory (application/x-tar)."""
    with store.read() as session:
        get_job(session=session, tenant_id=principal.tenant_id, job_id=job_id)
    download = open_newest_checkpoint(settings.job_run_dir(job_id) / "checkpoints", job_id)
    return StreamingResponse(
        download.chunks(),
        media_type=download.media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{download.filename}"',
            "Content-Length": str(download.size),
        },
    )


def visible_job(job_id: str, principal: PrincipalDep, store: StoreDep) -> str:
    """The job id, once this tenant may see it (a 404 before any streaming starts)."""
    with store.read() as session:
        get_job(session=session, tenant_id=principal.tenant_id, job_id=job_id)
    return job_id


@router.get(
    "/{job_id}/events",
    response_class=EventSourceResponse,
    responses=error_responses(400, 401, 404, 422, 503, by_reference=True),
)
async def stream_job_events_route(
    job_id: Annotated[str, Depends(visible_job)],
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    after_id: Annotated[int, Query(ge=0, le=MAX_EVENT_ID, description="resume after this event id")] = 0,
    since_step: Annotated[int, Query(ge=-1, le=MAX_STEP, description="metrics after this step")] = -1,
    after_seq: Annotated[int, Query(ge=0, le=MAX_SEQ, description="metrics stored after this seq")] = 0,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> AsyncIterator[ServerSentEvent]:
    """Server-sent events: `event` (status, eval, checkpoint, log) and `metrics` (new points, as
    series), live until the job has finished and everything is sent; then one `end` event. Each
    carries an id that Last-Event-ID resumes from exactly; a stopping service sends `reconnect`."""
    # A browser's EventSource reconnects to the same URL: the Last-Event-ID it sends back wins
    # over the query's cursors.
    cursor = resume_at(last_event_id, StreamCursor(after_id, after_seq, since_step))
    frames = job_event_stream(store=store, settings=settings, request=request, job_id=job_id, cursor=cursor)
    async for frame in frames:
        yield frame
