"""Metric points: written in batches (idempotently: a retried attempt rewrites the same steps),
read back as per-name series for charts and incremental polling.

Each point written takes the job's next `seq`, a rewritten one too: following a job is asking
for `after_seq=N`, N the `next_seq` of the previous answer. Seqs are handed out by the job row's
counter, under its row lock, in the transaction that writes the points: a writer waits for the
one before it to commit, so the seqs a reader sees are a prefix, never a later commit below one
already read (a step's val_loss stored after its train_loss, a step rewritten by a retry)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from itertools import groupby
from operator import itemgetter
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ..errors import NotFoundError
from .models import Job, MetricPoint
from .thinning import Thinning

__all__ = [
    "MetricsPage",
    "Point",
    "Series",
    "decode_value",
    "job_metrics_seq",
    "newest_stored_steps",
    "read_metrics",
    "read_thinned_metrics",
    "record_metrics",
    "record_metrics_of_jobs",
]


@dataclass(frozen=True)
class Point:
    name: str
    step: int
    value: float
    wall_time: float


@dataclass
class Series:
    name: str
    steps: list[int]
    values: list[float | str]  # finite floats, or "nan" / "inf" / "-inf"


@dataclass
class MetricsPage:
    series: list[Series]
    last_step: int | None  # the newest step in this page (since_step paging: since_step=last_step)
    truncated: bool  # more points follow: after next_seq (after_seq), after last_step (since_step)
    # Follow on with after_seq=next_seq: each point stored (or rewritten) after this read comes.
    # A since_step read that was truncated pages on by step, then follows from its first next_seq.
    next_seq: int = 0
    thinned: bool = False  # some series hold fewer points than stored (read_thinned_metrics)


def encode_value(value: float) -> tuple[float | None, str]:
    """(value, kind): JSON and SQL have no NaN or infinity, so they are stored by kind."""
    if math.isfinite(value):
        return value, ""
    if math.isnan(value):
        return None, "nan"
    return None, "inf" if value > 0 else "-inf"


def decode_value(value: float | None, kind: str) -> float | str:
    return value if not kind and value is not None else kind


def record_metrics(*, session: Session, job_id: str, points: Iterable[Point]) -> int:
    """Insert or overwrite points (job, name, step) of one job; returns how many were written."""
    return record_metrics_of_jobs(session=session, points={job_id: points})


def record_metrics_of_jobs(*, session: Session, points: Mapping[str, Iterable[Point]]) -> int:
    """Insert or overwrite the points of several jobs in one statement (the scheduler's flush),
    each with the next seq of its job. The points of a job that is gone are dropped."""
    batches = {job_id: list(job_points) for job_id, job_points in points.items()}
    first_seqs = _take_seqs(session, {job_id: len(batch) for job_id, batch in batches.items() if batch})
    rows = []
    for job_id, first_seq in first_seqs.items():
        for seq, point in enumerate(batches[job_id], start=first_seq):
            value, kind = encode_value(float(point.value))
            rows.append(
                {
                    "job_id": job_id,
                    "name": point.name,
                    "step": point.step,
                    "value": value,
                    "kind": kind,
                    "wall_time": point.wall_time,
                    "seq": seq,
                }
            )
    if rows:
        # One constant statement with a list of parameter sets: compiled once (cached), sent as
        # batched multi-row inserts by the driver. Building `.values(rows)` anew each time would
        # recompile the SQL on every flush, which dominated the scheduler's write time.
        session.execute(_upsert(session.get_bind().dialect.name), rows)
    return len(rows)


def _take_seqs(session: Session, counts: Mapping[str, int]) -> dict[str, int]:
    """{job: the first of its `counts[job]` new seqs}, for the jobs that exist. Their rows stay
    locked until the transaction ends (FOR UPDATE; on SQLite the write lock), so the next writer
    of a job reads the counter this one leaves: a job's seqs rise in commit order."""
    if not counts:
        return {}
    # Locked in one order (id): concurrent writers of several jobs never deadlock. On the
    # session's connection: Core statements, without the ORM's bookkeeping.
    connection = session.connection()
    locked = (
        select(Job.id, Job.metrics_seq).where(Job.id.in_(list(counts))).order_by(Job.id).with_for_update()
    )
    first_seqs = {job_id: int(newest) + 1 for job_id, newest in connection.execute(locked)}
    if first_seqs:
        newest = [
            {"job": job_id, "newest": first + counts[job_id] - 1} for job_id, first in first_seqs.items()
        ]
        connection.execute(_count_seqs(), newest)
    return first_seqs


@lru_cache(maxsize=1)
def _count_seqs() -> Any:
    return (
        update(Job)
        .where(Job.id == bindparam("job"))
        # A counter, not a change of the job: updated_at stays as it was.
        .values(metrics_seq=bindparam("newest"), updated_at=Job.updated_at)
    )


@lru_cache(maxsize=4)
def _upsert(dialect: str) -> Any:
    statement = postgresql.insert(MetricPoint) if dialect == "postgresql" else sqlite.insert(MetricPoint)
    excluded = statement.excluded
    # A rewritten point takes its new seq: readers already past its old one receive it again.
    return statement.on_conflict_do_update(
        index_elements=["job_id", "name", "step"],
        set_={
            "value": excluded.value,
            "kind": excluded.kind,
            "wall_time": excluded.wall_time,
            "seq": excluded.seq,
        },
    )


# A point as read: (name, step, value, kind, seq).
_PointRow = Row[str, int, float | None, str, int]


def _stored_seq(session: Session, job_id: str) -> int:
    """The job's newest seq: read before its points, every point stored up to it is among them."""
    return int(session.scalar(select(Job.metrics_seq).where(Job.id == job_id)) or 0)


_JOB_SEQ = select(Job.metrics_seq).where(
    Job.id == bindparam("job_id"), Job.tenant_id == bindparam("tenant_id")
)


def job_metrics_seq(*, session: Session, tenant_id: str, job_id: str) -> int:
    """The newest seq of the tenant's job `job_id` (a NotFoundError as get_job's otherwise): what
    a read of its metrics checks and reads first, in one small query (not the whole job row)."""
    seq = session.execute(_JOB_SEQ, {"job_id": job_id, "tenant_id": tenant_id}).scalar_one_or_none()
    if seq is None:
        raise NotFoundError(f"No job {job_id}")
    return int(seq)


def read_metrics(
    *,
    session: Session,
    job_id: str,
    names: Sequence[str] = (),
    since_step: int | None = None,
    after_seq: int | None = None,
    limit: int = 10_000,
    stored_seq: int | None = None,
) -> MetricsPage:
    """Points after `since_step`, at most `limit`. With `after_seq`: those stored after that seq,
    paged in seq order (next_seq). Without it: paged by step, never splitting a step across pages
    (unless one step alone holds more than `limit` points). `stored_seq`: the job's newest seq,
    when the caller has read it (job_metrics_seq) before this call."""
    stored = _stored_seq(session, job_id) if stored_seq is None else stored_seq
    connection = session.connection()  # plain rows, without the ORM's per-row loading
    params = _read_params(job_id, names, since_step, after_seq, limit)
    shape = (bool(names), since_step is not None, after_seq is not None)
    if after_seq is not None:
        rows = list(connection.execute(_points_query(*shape, "seq"), params).all())
        truncated = len(rows) > limit
        del rows[limit:]
        newest_read = rows[-1][4] if rows else after_seq
        # A whole answer holds every point up to `stored` (and any stored since, up to its last).
        return _page(rows, since_step, truncated, newest_read if truncated else max(stored, newest_read))
    # The whole answer usually fits: then (name, step) order walks the primary key, no sort.
    rows = list(connection.execute(_points_query(*shape, "name"), params).all())
    truncated = len(rows) > limit
    if truncated:
        # A page: the oldest steps first, cut before the step that does not fit whole.
        by_step = connection.execute(_points_query(*shape, "step"), params).all()
        cut_step = by_step[limit][1]
        rows = [row for row in by_step[:limit] if row[1] < cut_step] or list(by_step[:limit])
        return _page(rows, since_step, truncated, stored)
    return _page(rows, since_step, truncated, None, stored)


_ORDERS = {
    "seq": (MetricPoint.seq,),
    "name": (MetricPoint.name, MetricPoint.step),
    "step": (MetricPoint.step, MetricPoint.name),
}


@cache
def _points_query(
    by_name: bool, since: bool, after: bool, order: str
) -> Select[str, int, float | None, str, int]:
    """The statement of one shape of read (which filters, which order), built once: a poll's
    statement is then not rebuilt per request, only bound (`_read_params`)."""
    columns = (MetricPoint.name, MetricPoint.step, MetricPoint.value, MetricPoint.kind, MetricPoint.seq)
    where = _where(by_name, since, after)
    return select(*columns).where(*where).order_by(*_ORDERS[order]).limit(bindparam("limit"))


def _where(by_name: bool, since: bool, after: bool) -> list[ColumnElement[bool]]:
    """The filters of a read, bound by `_read_params`: the job, and the names, steps after
    since_step and points after after_seq, where asked for."""
    where = [MetricPoint.job_id == bindparam("job_id")]
    if by_name:
        where.append(MetricPoint.name.in_(bindparam("names", expanding=True)))
    if since:
        where.append(MetricPoint.step > bindparam("since_step"))
    if after:
        where.append(MetricPoint.seq > bindparam("after_seq"))
    return where


def _read_params(
    job_id: str, names: Sequence[str], since_step: int | None, after_seq: int | None, limit: int | None
) -> dict[str, Any]:
    params: dict[str, Any] = {"job_id": job_id}
    if limit is not None:
        params["limit"] = limit + 1  # one more than asked: whether the answer is truncated
    if names:
        params["names"] = list(names)
    if since_step is not None:
        params["since_step"] = since_step
    if after_seq is not None:
        params["after_seq"] = after_seq
    return params


def _page(
    rows: Sequence[_PointRow],
    since_step: int | None,
    truncated: bool,
    next_seq: int | None,
    stored: int = 0,
) -> MetricsPage:
    """Rows (name, step, value, kind, seq), in any order, as series by name, each by step;
    next_seq None: the newest of `stored` and the rows' seqs (an answer that holds them all)."""
    held: dict[str, list[tuple[int, float | str]]] = {}
    newest = stored
    for name, step, value, kind, seq in rows:
        held.setdefault(name, []).append((step, decode_value(value, kind)))
        if seq > newest:
            newest = seq
    series = []
    for name in sorted(held):
        points = held[name]
        if any(points[i][0] > points[i + 1][0] for i in range(len(points) - 1)):
            points.sort()  # seq order puts a point rewritten later after newer steps
        series.append(Series(name, [step for step, _ in points], [value for _, value in points]))
    ends = [one.steps[-1] for one in series] + ([] if since_step is None else [since_step])
    return MetricsPage(series, max(ends, default=None), truncated, newest if next_seq is None else next_seq)


def read_thinned_metrics(
    *,
    session: Session,
    job_id: str,
    names: Sequence[str] = (),
    since_step: int | None = None,
    after_seq: int | None = None,
    max_points: int,
    stored_seq: int | None = None,
) -> MetricsPage:
    """Every point after `since_step` (and `after_seq`), each series thinned to at most
    `max_points` that keep its shape and extremes (service/store/thinning.py): a plot of a long
    history in one answer. The rows stream through in (name, step) order, the primary key's: only
    kept points are held. `stored_seq` as for read_metrics."""
    stored = _stored_seq(session, job_id) if stored_seq is None else stored_seq
    where = _where(bool(names), since_step is not None, after_seq is not None)
    params = _read_params(job_id, names, since_step, after_seq, limit=None)
    counted = select(MetricPoint.name, func.count()).where(*where).group_by(MetricPoint.name)
    counts = dict(session.execute(counted, params).all())
    query = select(MetricPoint.name, MetricPoint.step, MetricPoint.value, MetricPoint.kind, MetricPoint.seq)
    ordered = query.where(*where).order_by(MetricPoint.name, MetricPoint.step)
    # On the session's connection: plain rows, without the ORM's per-row loading.
    rows = session.connection().execute(ordered.execution_options(yield_per=10_000), params)
    series, last_step, thinned, reached = [], since_step, False, max(stored, after_seq or 0)
    for name, group in groupby(rows, key=itemgetter(0)):
        thinning = Thinning(counts[name], max_points)
        for _, step, value, kind, seq in group:
            thinning.add(step, kind or value or 0.0)  # a non-finite value is stored by its kind
            reached = max(reached, seq)
        steps, values = thinning.points()
        series.append(Series(name, steps, values))
        thinned = thinned or thinning.thinned
        last_step = steps[-1] if last_step is None else max(last_step, steps[-1])
    return MetricsPage(series, last_step, truncated=False, next_seq=reached, thinned=thinned)


def newest_stored_steps(*, session: Session, job_id: str) -> dict[str, int]:
    """{series: the newest step stored of it} for one job; a series without points is absent.

    What a retried attempt must report again is decided per series (train(replay_after=...)):
    one step for the whole job (its `step`) cannot tell "nothing stored" from "step 0 stored",
    nor a step whose train_loss was stored from one whose val_loss was too."""
    newest = func.max(MetricPoint.step)
    # Read from the primary key (job_id, name, step) in its order, without a sort; it visits each
    # of the job's points once, at a retry's start only.
    query = select(MetricPoint.name, newest).where(MetricPoint.job_id == job_id).group_by(MetricPoint.name)
    return {name: int(step) for name, step in session.execute(query).all()}


def note_progress(*, session: Session, job: Job, step: int, best_val_loss: float | None = None) -> None:
    """Keep the job row's newest step and best validation loss current (for listings)."""
    job.step = max(job.step, step)
    if best_val_loss is not None and math.isfinite(best_val_loss):
        job.best_val_loss = (
            best_val_loss if job.best_val_loss is None else min(job.best_val_loss, best_val_loss)
        )
