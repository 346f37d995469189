"""Metric seqs (issue 28 item 3): each job's points numbered in the order they were stored, so
that a reader keeps one integer (`after_seq` = the last answer's `next_seq`) and gets each point
once, a step's val_loss stored after its train_loss and a point rewritten by a retried attempt
included; on SQLite and PostgreSQL, through the store, the REST API, the event stream and the
migration that numbers the points stored before it."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

from sqlalchemy import create_engine, text

from service.store import JobStatus, Store
from service.store.metrics import MetricsPage, Point, read_metrics, read_thinned_metrics, record_metrics
from service.store.migrate import downgrade, upgrade

from .conftest import make_tenant
from .test_api_jobs import set_status
from .test_shutdown_and_sse import sse_frames
from .test_store import new_job


def taken(page: MetricsPage) -> list[tuple[str, int, float | str]]:
    return [(s.name, step, value) for s in page.series for step, value in zip(s.steps, s.values, strict=True)]


def test_a_follower_gets_a_late_point_and_a_rewritten_one_once_each(store):
    job_id = new_job(store, make_tenant(store, "t").id)
    with store.transaction() as session:
        record_metrics(
            session=session, job_id=job_id, points=[Point("train_loss", s, 4.0, 0.0) for s in (1, 2, 3)]
        )
    with store.read() as session:
        first = read_metrics(session=session, job_id=job_id, after_seq=0)
    assert (first.next_seq, len(taken(first))) == (3, 3)
    with store.transaction() as session:
        record_metrics(session=session, job_id=job_id, points=[Point("val_loss", 3, 4.1, 0.0)])  # late
        record_metrics(session=session, job_id=job_id, points=[Point("train_loss", 2, 3.5, 0.0)])  # a retry's
    with store.read() as session:
        then = read_metrics(session=session, job_id=job_id, after_seq=first.next_seq)
        paged = read_metrics(session=session, job_id=job_id, after_seq=0, limit=2)
        rest = read_metrics(session=session, job_id=job_id, after_seq=paged.next_seq, limit=2)
        whole = read_metrics(session=session, job_id=job_id)  # by step, as before
        floored = read_metrics(session=session, job_id=job_id, since_step=2, after_seq=0)
        thinned = read_thinned_metrics(session=session, job_id=job_id, max_points=2)
        nothing = read_metrics(session=session, job_id=job_id, after_seq=then.next_seq)
    assert taken(then) == [("train_loss", 2, 3.5), ("val_loss", 3, 4.1)]
    assert then.next_seq == 5
    # Pages in store order, cut exactly: seqs 1 and 3 (step 2 took seq 5 when rewritten), then 4-5.
    assert (taken(paged), paged.truncated, paged.next_seq) == (
        [("train_loss", 1, 4.0), ("train_loss", 3, 4.0)],
        True,
        3,
    )
    assert (taken(rest), rest.truncated, rest.next_seq) == (
        [("train_loss", 2, 3.5), ("val_loss", 3, 4.1)],
        False,
        5,
    )
    assert (whole.next_seq, thinned.next_seq) == (5, 5)  # the job's newest seq: follow on from there
    assert taken(floored) == [("train_loss", 3, 4.0), ("val_loss", 3, 4.1)]
    assert (nothing.series, nothing.next_seq) == ([], 5)


def test_record_metrics_drops_the_points_of_a_job_that_is_gone(store):
    with store.transaction() as session:
        assert record_metrics(session=session, job_id="0" * 32, points=[Point("x", 1, 1.0, 0.0)]) == 0


def test_concurrent_writers_of_one_job_never_commit_below_a_seq_already_read(store: Store):
    # The row lock (PostgreSQL) or the write lock (SQLite) orders the writers: a follower polling
    # all along with after_seq gets every point once, none skipped by a later commit of a lower seq.
    job_id = new_job(store, make_tenant(store, "t").id)
    writers_done = threading.Event()

    def write(name: str) -> None:
        for batch in range(15):
            with store.transaction() as session:
                points = [Point(name, batch * 4 + i, 1.0, 0.0) for i in range(4)]
                record_metrics(session=session, job_id=job_id, points=points)

    threads = [threading.Thread(target=write, args=(name,)) for name in ("a", "b", "c")]
    for thread in threads:
        thread.start()
    seen: Counter[tuple[str, int]] = Counter()
    seq = 0
    while True:
        finished = writers_done.is_set()
        with store.read() as session:
            page = read_metrics(session=session, job_id=job_id, after_seq=seq, limit=7)
        seen.update((name, step) for name, step, _ in taken(page))
        seq = page.next_seq
        if finished and not page.truncated:
            break
        if not any(thread.is_alive() for thread in threads):
            writers_done.set()
        time.sleep(0 if page.truncated else 0.005)
    assert sorted(seen) == sorted((name, step) for name in "abc" for step in range(60))
    assert max(seen.values()) == 1
    assert seq == 3 * 60


def test_rest_pages_after_seq_and_the_stream_sends_a_rewritten_point(client, alice):
    store = client.app.state.store
    job_id = new_job(store, alice.id)  # as submitted, without a submission's checks
    set_status(client, job_id, JobStatus.RUNNING)
    with store.transaction() as session:
        record_metrics(
            session=session, job_id=job_id, points=[Point("train_loss", s, 4.0, 0.0) for s in (1, 2)]
        )
    url = f"/v1/jobs/{job_id}/metrics"
    page = client.get(url, params={"after_seq": 0, "limit": 1}, headers=alice.headers).json()
    assert (page["series"][0]["steps"], page["truncated"], page["next_seq"]) == ([1], True, 1)
    assert client.get(url, params={"max_points": 2}, headers=alice.headers).json()["next_seq"] == 2
    sent: list[tuple[str, int, object]] = []
    ids: list[str] = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=alice.headers) as stream:
        for frame in sse_frames(stream.iter_lines()):
            ids.append(frame["id"])
            if frame["event"] != "metrics":
                continue
            data = json.loads(frame["data"])
            sent += [
                (s["name"], st, v)
                for s in data["series"]
                for st, v in zip(s["steps"], s["values"], strict=True)
            ]
            if len(sent) == 2:  # a retried attempt rewrites step 1 after the stream has sent it
                with store.transaction() as session:
                    record_metrics(session=session, job_id=job_id, points=[Point("train_loss", 1, 3.0, 0.0)])
                set_status(client, job_id, JobStatus.SUCCEEDED)
    assert sent == [("train_loss", 1, 4.0), ("train_loss", 2, 4.0), ("train_loss", 1, 3.0)]
    assert ids[-1].endswith("/seq=3")  # the newest event id, then the newest seq sent
    # Resumed with that id (as EventSource does), or with the query's after_seq: nothing is sent twice.
    for headers, query in (({"Last-Event-ID": ids[-1]}, ""), ({}, "?after_id=999999&after_seq=3")):
        with client.stream(
            "GET", f"/v1/jobs/{job_id}/events{query}", headers={**alice.headers, **headers}
        ) as stream:
            assert [frame["event"] for frame in sse_frames(stream.iter_lines())] == ["end"]


def test_the_migration_numbers_stored_points_by_step_and_name(own_database_url):
    upgrade(own_database_url)
    store = Store.connect(own_database_url)
    ids = [new_job(store, make_tenant(store, "t").id), new_job(store, make_tenant(store, "u").id)]
    with store.transaction() as session:
        for job_id in ids:
            # Stored in another order than (step, name): the migration cannot know the real one.
            points = [Point(name, step, 1.0, 0.0) for name in ("val_loss", "train_loss") for step in (2, 1)]
            record_metrics(session=session, job_id=job_id, points=points)
    store.close()
    downgrade(own_database_url, "0007")  # the seqs go
    upgrade(own_database_url)  # and are numbered again from the points
    engine = create_engine(own_database_url)
    with engine.connect() as connection:
        for job_id in ids:
            query = "SELECT name, step, seq FROM symopt_metric_points WHERE job_id = :job ORDER BY seq"
            numbered = [tuple(row) for row in connection.execute(text(query), {"job": job_id})]
            assert numbered == [
                ("train_loss", 1, 1),
                ("val_loss", 1, 2),
                ("train_loss", 2, 3),
                ("val_loss", 2, 4),
            ]
            counter = "SELECT metrics_seq FROM symopt_jobs WHERE id = :job"
            assert connection.execute(text(counter), {"job": job_id}).scalar() == 4
    engine.dispose()
    store = Store.connect(own_database_url)
    with store.transaction() as session:
        record_metrics(session=session, job_id=ids[0], points=[Point("train_loss", 3, 1.0, 0.0)])
    with store.read() as session:
        page = read_metrics(session=session, job_id=ids[0], after_seq=4)
    store.close()
    assert (taken(page), page.next_seq) == ([("train_loss", 3, 1.0)], 5)
