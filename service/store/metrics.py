"""Metric points: written in batches (idempotently: a retried attempt rewrites the same steps),
read back as per-name series for charts and incremental polling."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import groupby
from operator import itemgetter
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .models import Job, MetricPoint
from .thinning import Thinning

__all__ = [
    "MetricsPage",
    "Point",
    "Series",
    "decode_value",
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
    last_step: int | None  # the newest step in this page: poll again with since_step=last_step
    truncated: bool  # more points exist after last_step
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
    """Insert or overwrite the points of several jobs in one statement (the scheduler's flush)."""
    rows = []
    for job_id, job_points in points.items():
        for point in job_points:
            value, kind = encode_value(float(point.value))
            rows.append(
                {
                    "job_id": job_id,
                    "name": point.name,
                    "step": point.step,
                    "value": value,
                    "kind": kind,
                    "wall_time": point.wall_time,
                }
            )
    if rows:
        # One constant statement with a list of parameter sets: compiled once (cached), sent as
        # batched multi-row inserts by the driver. Building `.values(rows)` anew each time would
        # recompile the SQL on every flush, which dominated the scheduler's write time.
        session.execute(_upsert(session.get_bind().dialect.name), rows)
    return len(rows)


@lru_cache(maxsize=4)
def _upsert(dialect: str) -> Any:
    statement = postgresql.insert(MetricPoint) if dialect == "postgresql" else sqlite.insert(MetricPoint)
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=["job_id", "name", "step"],
        set_={"value": excluded.value, "kind": excluded.kind, "wall_time": excluded.wall_time},
    )


def read_metrics(
    *,
    session: Session,
    job_id: str,
    names: Sequence[str] = (),
    since_step: int | None = None,
    limit: int = 10_000,
) -> MetricsPage:
    """Points after `since_step`, at most `limit`, never splitting a step across pages (unless
    one step alone holds more than `limit` points)."""
    query = select(MetricPoint.name, MetricPoint.step, MetricPoint.value, MetricPoint.kind).where(
        MetricPoint.job_id == job_id
    )
    if names:
        query = query.where(MetricPoint.name.in_(list(names)))
    if since_step is not None:
        query = query.where(MetricPoint.step > since_step)
    # The whole answer usually fits: then (name, step) order walks the primary key, no sort.
    rows = list(session.execute(query.order_by(MetricPoint.name, MetricPoint.step).limit(limit + 1)).all())
    truncated = len(rows) > limit
    if truncated:
        # A page: the oldest steps first, cut before the step that does not fit whole.
        by_step = session.execute(query.order_by(MetricPoint.step, MetricPoint.name).limit(limit + 1)).all()
        cut_step = by_step[limit].step
        rows = sorted([row for row in by_step[:limit] if row.step < cut_step] or by_step[:limit])
    series, last_step = [], since_step
    for name, group in groupby(rows, key=itemgetter(0)):
        _, steps, values, kinds = zip(*group, strict=True)
        decoded = [kind or value for value, kind in zip(values, kinds, strict=True)]
        series.append(Series(name, list(steps), decoded))
        last_step = steps[-1] if last_step is None else max(last_step, steps[-1])
    return MetricsPage(series, last_step, truncated)


def read_thinned_metrics(
    *,
    session: Session,
    job_id: str,
    names: Sequence[str] = (),
    since_step: int | None = None,
    max_points: int,
) -> MetricsPage:
    """Every point after `since_step`, each series thinned to at most `max_points` that keep its
    shape and extremes (service/store/thinning.py): a plot of a long history in one answer. The
    rows stream through in (name, step) order, the primary key's: only kept points are held."""
    where = [MetricPoint.job_id == job_id]
    if names:
        where.append(MetricPoint.name.in_(list(names)))
    if since_step is not None:
        where.append(MetricPoint.step > since_step)
    counts = dict(
        session.execute(select(MetricPoint.name, func.count()).where(*where).group_by(MetricPoint.name)).all()
    )
    query = select(MetricPoint.name, MetricPoint.step, MetricPoint.value, MetricPoint.kind).where(*where)
    ordered = query.order_by(MetricPoint.name, MetricPoint.step)
    # On the session's connection: plain rows, without the ORM's per-row loading.
    rows = session.connection().execute(ordered.execution_options(yield_per=10_000))
    series, last_step, thinned = [], since_step, False
    for name, group in groupby(rows, key=itemgetter(0)):
        thinning = Thinning(counts[name], max_points)
        for _, step, value, kind in group:
            thinning.add(step, kind or value or 0.0)  # a non-finite value is stored by its kind
        steps, values = thinning.points()
        series.append(Series(name, steps, values))
        thinned = thinned or thinning.thinned
        last_step = steps[-1] if last_step is None else max(last_step, steps[-1])
    return MetricsPage(series, last_step, truncated=False, thinned=thinned)


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
