"""A retried attempt's replay boundary from a real store (issue 26 item 4): the newest stored
step per series, handed to the worker, makes the store whole again, each point once.

The pieces the scheduler puts together, without Ray: attempt 1's events go through its ingest
(`Pending`) into the store until the service "dies"; the store's `newest_stored_steps` goes to
`run_training` as a retry's boundary; attempt 2's events go through the same ingest."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.scheduler.ingest import Pending
from service.store import Store
from service.store.metrics import (
    Point,
    newest_stored_steps,
    read_metrics,
    record_metrics,
    record_metrics_of_jobs,
)
from symopt_core.assets import Assets
from symopt_core.training import Event, RunRequest, train
from tests.core.test_training import tiny_spec
from worker.run import run_training

from .conftest import make_tenant
from .test_store import new_job


def points_of(job_id: str, events: list[dict[str, object]]) -> Pending:
    """What the scheduler's ingest makes of these events."""
    pending = Pending()
    for event in events:
        pending.add_event(job_id, 1, event)
    return pending


def keys(pending: Pending, job_id: str) -> set[tuple[str, int]]:
    return {(point.name, point.step) for point in pending.points.get(job_id, [])}


def flush(store: Store, job_id: str, events: list[dict[str, object]]) -> None:
    """What the scheduler's flush writes of these events: their metric points."""
    with store.transaction() as session:
        record_metrics_of_jobs(session=session, points=points_of(job_id, events).points)


def test_newest_stored_steps_are_per_series_and_absent_when_none(store):
    job_id = new_job(store, make_tenant(store, "t").id)
    with store.transaction() as session:
        assert newest_stored_steps(session=session, job_id=job_id) == {}  # not {..: 0}
        points = [
            Point("val_loss", 0, 4.0, 0.0),
            Point("train_loss", 10, 3.0, 0.0),
            Point("train_loss", 20, 2.0, 0.0),
        ]
        record_metrics(session=session, job_id=job_id, points=points)
    with store.transaction() as session:
        assert newest_stored_steps(session=session, job_id=job_id) == {"train_loss": 20, "val_loss": 0}


@pytest.mark.parametrize(
    ("stop_at", "delivered_through", "replayed_evals"),
    [
        (20, None, [0, 20]),  # case A: nothing stored (step 0's evaluation died in flight)
        (40, ("metrics", 40), [40]),  # case B: train_loss@40 stored, val_loss@40 in flight
    ],
)
def test_a_retry_from_the_stores_boundary_stores_every_point_once(
    store, tmp_path: Path, data_dir: Path, stop_at, delivered_through, replayed_evals
):
    job_id = new_job(store, make_tenant(store, "t").id)
    spec = tiny_spec("gpt2", "adamw", steps=60, checkpoint={"every": 20, "keep": 1}, log_every=10)
    polls = iter(range(1000))
    first: list[Event] = []
    train(
        spec,
        report=first.append,
        run_dir=tmp_path,
        data_root=data_dir,
        should_stop=lambda: next(polls) >= stop_at,
    )
    kinds = [(e.kind, e.step) for e in first]
    cut = 0 if delivered_through is None else kinds.index(delivered_through) + 1
    flush(store, job_id, [e.to_dict() for e in first[:cut]])

    with store.transaction() as session:
        boundary = newest_stored_steps(session=session, job_id=job_id)
    second = list(
        run_training(
            RunRequest(
                spec,
                run_dir=tmp_path,
                resume_newest=True,
                replay_after=boundary,
                assets=Assets(data_root=data_dir),
            ),
            watch_parent=False,
        )
    )
    resumed = next(i for i, e in enumerate(second) if e["data"].get("status") == "resumed")
    assert [e["step"] for e in second[:resumed] if e["kind"] == "eval"] == replayed_evals
    # The replay adds exactly the points attempt 1 made and the store lacks: none lost, none twice.
    made = keys(points_of(job_id, [e.to_dict() for e in first]), job_id)
    missing = made - keys(points_of(job_id, [e.to_dict() for e in first[:cut]]), job_id)
    replayed = points_of(job_id, second[:resumed]).points[job_id]
    assert sorted((p.name, p.step) for p in replayed) == sorted(missing)
    flush(store, job_id, second)

    with store.transaction() as session:
        series = {s.name: s.steps for s in read_metrics(session=session, job_id=job_id).series}
    assert series["val_loss"] == [0, 20, 40, 60]  # every evaluation step
    assert series["train_loss"] == [10, 20, 30, 40, 50, 60]
