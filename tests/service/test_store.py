"""The store contract: one suite, run on SQLite and on PostgreSQL (SYMOPT_TEST_DATABASE_URL)."""

from __future__ import annotations

import itertools
import math
import sqlite3
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from service.errors import AuthError, ConflictError, InvalidTransitionError, NotFoundError, StoreError
from service.store import JobStatus, Store, SweepStatus, check_transition
from service.store.db import SQLITE_BUSY_TIMEOUT_MS
from service.store.jobs import (
    NewEvent,
    append_events,
    create_job,
    delete_job,
    get_job,
    list_jobs,
    read_events,
    request_cancel,
    transition,
)
from service.store.keys import authenticate, create_api_key, create_tenant, revoke_api_key
from service.store.metrics import Point, read_metrics, record_metrics
from service.store.migrate import upgrade
from service.store.models import ApiKey, Job, JobEvent, MetricPoint, Tenant, utcnow
from service.store.sweeps import (
    create_sweep,
    get_sweep,
    list_sweeps,
    objective_of,
    request_cancel_sweep,
    trials,
)
from service.sweep_spec import SweepSpec
from symopt_core.spec import load_spec

from .conftest import TINY_JOB, make_tenant

SPEC = load_spec(TINY_JOB)


def new_job(store: Store, tenant_id: str, **kwargs: object) -> str:
    with store.transaction() as session:
        job, created = create_job(session=session, tenant_id=tenant_id, spec=SPEC, **kwargs)  # type: ignore[arg-type]
        assert created
        return job.id


def move(store: Store, job_id: str, *statuses: JobStatus) -> None:
    for status in statuses:
        with store.transaction() as session:
            transition(
                session=session, job=get_job(session=session, tenant_id=None, job_id=job_id), to=status
            )


def test_created_job_is_queued_with_its_spec_and_first_event(store):
    tenant = make_tenant(store, "t")
    job_id = new_job(store, tenant.id)
    with store.transaction() as session:
        job = get_job(session=session, tenant_id=tenant.id, job_id=job_id)
        assert job.status == JobStatus.QUEUED
        assert job.spec["model"] == {"family": "qwen3", "size": "tiny"}
        assert job.spec["optimizer"]["preset"] == "symmetric"  # defaults filled in
        assert job.created_at.tzinfo is not None
        events = read_events(session=session, job_id=job_id)
        assert [(e.kind, e.message) for e in events] == [("status", "queued")]


ALL_JOB = list(JobStatus)
LEGAL = {
    ("queued", "running"),
    ("queued", "cancelled"),
    ("queued", "pruned"),
    ("running", "succeeded"),
    ("running", "failed"),
    ("running", "diverged"),
    ("running", "cancelling"),
    ("running", "cancelled"),
    ("running", "pruned"),
    ("running", "queued"),
    ("cancelling", "cancelled"),
    ("cancelling", "pruned"),
    ("cancelling", "succeeded"),
    ("cancelling", "failed"),
    ("cancelling", "diverged"),
}


@pytest.mark.parametrize(("current", "target"), list(itertools.product(ALL_JOB, ALL_JOB)))
def test_job_state_machine(current, target):
    if (current.value, target.value) in LEGAL:
        check_transition(current, target)
    else:
        with pytest.raises(InvalidTransitionError, match=f"Cannot move from {current} to {target}"):
            check_transition(current, target)


def test_sweep_state_machine_is_its_own():
    check_transition(SweepStatus.RUNNING, SweepStatus.CANCELLING)
    with pytest.raises(InvalidTransitionError):
        check_transition(SweepStatus.RUNNING, SweepStatus.QUEUED)  # a job may go back to queued, a sweep not
    with pytest.raises(InvalidTransitionError):
        check_transition(SweepStatus.SUCCEEDED, SweepStatus.RUNNING)


def test_illegal_transition_in_the_store_changes_nothing(store):
    tenant = make_tenant(store, "t")
    job_id = new_job(store, tenant.id)
    move(store, job_id, JobStatus.RUNNING, JobStatus.SUCCEEDED)
    with pytest.raises(InvalidTransitionError), store.transaction() as session:
        transition(
            session=session, job=get_job(session=session, tenant_id=None, job_id=job_id), to=JobStatus.RUNNING
        )
    with store.transaction() as session:
        job = get_job(session=session, tenant_id=None, job_id=job_id)
        assert job.status == JobStatus.SUCCEEDED
        assert job.started_at is not None
        assert job.finished_at is not None


def test_cancel_queued_running_and_finished(store):
    tenant = make_tenant(store, "t")
    queued, running, done = (new_job(store, tenant.id) for _ in range(3))
    move(store, running, JobStatus.RUNNING)
    move(store, done, JobStatus.RUNNING, JobStatus.FAILED)
    with store.transaction() as session:
        assert (
            request_cancel(session=session, tenant_id=tenant.id, job_id=queued).status == JobStatus.CANCELLED
        )
        assert (
            request_cancel(session=session, tenant_id=tenant.id, job_id=running).status
            == JobStatus.CANCELLING
        )
        assert (
            request_cancel(session=session, tenant_id=tenant.id, job_id=running).status
            == JobStatus.CANCELLING
        )
    with pytest.raises(ConflictError, match="already finished \\(failed\\)"), store.transaction() as session:
        request_cancel(session=session, tenant_id=tenant.id, job_id=done)


def test_delete_only_finished_jobs_and_their_rows_go_with_them(store):
    tenant = make_tenant(store, "t")
    job_id = new_job(store, tenant.id)
    with store.transaction() as session:
        record_metrics(session=session, job_id=job_id, points=[Point("train_loss", 1, 3.0, 0.0)])
    with pytest.raises(ConflictError, match="is queued; cancel it"), store.transaction() as session:
        delete_job(session=session, tenant_id=tenant.id, job_id=job_id)
    move(store, job_id, JobStatus.CANCELLED)
    with store.transaction() as session:
        delete_job(session=session, tenant_id=tenant.id, job_id=job_id)
    with store.transaction() as session:
        assert session.scalar(select(func.count()).select_from(MetricPoint)) == 0
        assert session.scalar(select(func.count()).select_from(JobEvent)) == 0
        assert session.get(Job, job_id) is None


def test_metrics_round_trip_non_finite_values_and_overwrite_retried_steps(store):
    tenant = make_tenant(store, "t")
    job_id = new_job(store, tenant.id)
    values = [2.5, math.nan, math.inf, -math.inf, 1e-300, -0.0]
    with store.transaction() as session:
        record_metrics(
            session=session, job_id=job_id, points=[Point("x", i, v, 1.0) for i, v in enumerate(values)]
        )
        # attempt 2 re-reports steps 4 and 5 after resuming from a checkpoint: overwritten, not duplicated
        record_metrics(
            session=session, job_id=job_id, points=[Point("x", 4, 7.0, 2.0), Point("x", 5, 8.0, 2.0)]
        )
    with store.transaction() as session:
        page = read_metrics(session=session, job_id=job_id)
        assert session.scalar(select(func.count()).select_from(MetricPoint)) == 6
    assert page.series[0].steps == [0, 1, 2, 3, 4, 5]
    assert page.series[0].values == [2.5, "nan", "inf", "-inf", 7.0, 8.0]


def test_metric_pages_follow_steps_and_never_split_one(store):
    tenant = make_tenant(store, "t")
    job_id = new_job(store, tenant.id)
    points = [Point(name, step, float(step), 0.0) for step in range(1, 101) for name in ("a", "b", "c")]
    with store.transaction() as session:
        record_metrics(session=session, job_id=job_id, points=points)
        first = read_metrics(session=session, job_id=job_id, limit=10)  # 3 whole steps fit in 10 points
        assert first.truncated
        assert first.last_step == 3
        assert [s.name for s in first.series] == ["a", "b", "c"]
        assert first.series[0].steps == [1, 2, 3]
        rest = read_metrics(session=session, job_id=job_id, since_step=first.last_step, limit=1000)
        assert not rest.truncated
        assert rest.series[1].steps == list(range(4, 101))
        only_b = read_metrics(session=session, job_id=job_id, names=["b"], since_step=98)
        assert [(s.name, s.steps) for s in only_b.series] == [("b", [99, 100])]
        empty = read_metrics(session=session, job_id=job_id, since_step=100)
        assert empty.series == []
        assert empty.last_step == 100


def test_events_are_ordered_and_filterable(store):
    tenant = make_tenant(store, "t")
    job_id = new_job(store, tenant.id)
    with store.transaction() as session:
        append_events(
            session=session, job_id=job_id, events=[NewEvent("log", None, f"line {i}") for i in range(5)]
        )
        append_events(session=session, job_id=job_id, events=[NewEvent("eval", 10, "", {"val_loss": 2.0})])
    with store.transaction() as session:
        logs = read_events(session=session, job_id=job_id, kinds=["log"])
        assert [e.message for e in logs] == [f"line {i}" for i in range(5)]
        after = read_events(session=session, job_id=job_id, after_id=logs[2].id)
        assert [e.message for e in after][:2] == ["line 3", "line 4"]
        assert after[-1].data == {"val_loss": 2.0}


def test_idempotency_keys_per_tenant_and_for_24_hours(store):
    alice, bob = make_tenant(store, "alice"), make_tenant(store, "bob")
    with store.transaction() as session:
        first, created = create_job(session=session, tenant_id=alice.id, spec=SPEC, idempotency_key="k1")
        again, created_again = create_job(
            session=session, tenant_id=alice.id, spec=SPEC, idempotency_key="k1"
        )
        other, created_other = create_job(session=session, tenant_id=bob.id, spec=SPEC, idempotency_key="k1")
        assert (created, created_again, created_other) == (True, False, True)
        assert again.id == first.id
        assert other.id != first.id
        first.created_at = utcnow() - timedelta(hours=25)
    with store.transaction() as session:
        later, created_later = create_job(
            session=session, tenant_id=alice.id, spec=SPEC, idempotency_key="k1"
        )
        assert created_later
        assert later.id != first.id


def test_tenants_see_only_their_own_jobs(store):
    alice, bob = make_tenant(store, "alice"), make_tenant(store, "bob")
    job_id = new_job(store, alice.id)
    with pytest.raises(NotFoundError), store.transaction() as session:
        get_job(session=session, tenant_id=bob.id, job_id=job_id)
    with pytest.raises(NotFoundError), store.transaction() as session:
        request_cancel(session=session, tenant_id=bob.id, job_id=job_id)
    with store.transaction() as session:
        assert list_jobs(session=session, tenant_id=bob.id) == ([], 0)


def test_list_jobs_filters_pages_and_orders_newest_first(store):
    tenant = make_tenant(store, "t")
    ids = [new_job(store, tenant.id) for _ in range(5)]
    move(store, ids[0], JobStatus.RUNNING)
    with store.transaction() as session:
        page, count = list_jobs(session=session, tenant_id=tenant.id, limit=2, offset=1)
        assert count == 5
        assert [j.id for j in page] == [ids[3], ids[2]]
        running, running_count = list_jobs(session=session, tenant_id=tenant.id, statuses=["running"])
        assert running_count == 1
        assert running[0].id == ids[0]
        assert list_jobs(session=session, tenant_id=tenant.id, name="tiny")[1] == 5
        assert list_jobs(session=session, tenant_id=tenant.id, name="other")[1] == 0


def test_list_jobs_by_sweep_returns_exactly_its_jobs(store):
    tenant = make_tenant(store, "t")
    with store.transaction() as session:
        first, _ = create_sweep(session=session, tenant_id=tenant.id, spec=SWEEP)
        second, _ = create_sweep(session=session, tenant_id=tenant.id, spec=SWEEP)
        sweep_id, other_id = first.id, second.id
    before = new_job(store, tenant.id)
    mine = [new_job(store, tenant.id, sweep_id=sweep_id, trial_number=n) for n in range(3)]
    theirs = new_job(store, tenant.id, sweep_id=other_id, trial_number=0)
    after = new_job(store, tenant.id)
    with store.read() as session:
        jobs, count = list_jobs(session=session, tenant_id=tenant.id, sweep_id=sweep_id)
        assert count == 3
        assert [j.id for j in jobs] == mine[::-1]  # newest first
        page, count = list_jobs(session=session, tenant_id=tenant.id, sweep_id=sweep_id, limit=1, offset=1)
        assert (count, [j.id for j in page]) == (3, [mine[1]])
        other, _ = list_jobs(session=session, tenant_id=tenant.id, sweep_id=other_id)
        assert [j.id for j in other] == [theirs]
        assert list_jobs(session=session, tenant_id=tenant.id, sweep_id="no-such-sweep") == ([], 0)
        everything = {j.id for j in list_jobs(session=session, tenant_id=tenant.id)[0]}
        assert everything == {before, *mine, theirs, after}


def test_list_sweeps_pages_newest_first(store):
    tenant, other = make_tenant(store, "t"), make_tenant(store, "u")
    ids = []
    for _ in range(4):
        with store.transaction() as session:
            ids.append(create_sweep(session=session, tenant_id=tenant.id, spec=SWEEP)[0].id)
    with store.transaction() as session:
        create_sweep(session=session, tenant_id=other.id, spec=SWEEP)
    with store.read() as session:
        page, count = list_sweeps(session=session, tenant_id=tenant.id, limit=2, offset=1)
        assert count == 4
        assert [s.id for s in page] == [ids[2], ids[1]]
        assert [s.id for s in list_sweeps(session=session, tenant_id=tenant.id, offset=3)[0]] == [ids[0]]
        assert list_sweeps(session=session, tenant_id=tenant.id, offset=4) == ([], 4)


def test_read_transactions_see_committed_rows_and_refuse_writes(store):
    tenant = make_tenant(store, "t")
    job_id = new_job(store, tenant.id)
    with store.read() as session:
        assert get_job(session=session, tenant_id=tenant.id, job_id=job_id).status == JobStatus.QUEUED
    with pytest.raises(StoreError, match="database error"), store.read() as session:
        create_tenant(session=session, name="written-in-a-read")  # an INSERT, flushed
    with pytest.raises(StoreError), store.read() as session:
        session.execute(text("DELETE FROM symopt_jobs"))
    # The refused writes changed nothing, and the connection they used writes normally again.
    with store.transaction() as session:
        written = select(func.count()).select_from(Tenant).where(Tenant.name == "written-in-a-read")
        assert session.scalar(written) == 0
        assert session.get(Job, job_id) is not None
        create_tenant(session=session, name="written-in-a-write")


def sqlite_store(path: Path) -> Store:
    url = f"sqlite:///{path}"
    upgrade(url)
    return Store.connect(url)


def test_a_sqlite_store_uses_wal_and_a_busy_timeout(tmp_path):
    store = sqlite_store(tmp_path / "symopt.db")
    try:
        for scope in (store.transaction, store.read):
            with scope() as session:
                assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
                assert session.execute(text("PRAGMA busy_timeout")).scalar() == SQLITE_BUSY_TIMEOUT_MS
                assert session.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        store.close()
    # WAL is a property of the file itself: any other connection finds it too.
    with sqlite3.connect(tmp_path / "symopt.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_long_write_does_not_block_a_read_on_sqlite(tmp_path):
    store = sqlite_store(tmp_path / "symopt.db")
    tenant = make_tenant(store, "t")
    job_id = new_job(store, tenant.id)
    writing, read_done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def long_write() -> None:
        try:
            with store.transaction() as session:
                move_to = get_job(session=session, tenant_id=None, job_id=job_id)
                transition(session=session, job=move_to, to=JobStatus.RUNNING)
                session.flush()
                writing.set()
                read_done.wait(120)  # hold the write lock until the read below is over
        except BaseException as error:  # asserted below
            errors.append(error)
            writing.set()

    writer = threading.Thread(target=long_write)
    writer.start()
    try:
        assert writing.wait(60)
        # The write lock is really held: a writer that does not wait is refused at once.
        other = sqlite3.connect(tmp_path / "symopt.db", timeout=0, isolation_level=None)
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            other.execute("BEGIN IMMEDIATE")
        other.close()
        # A read goes ahead (it would wait out the 30 s busy timeout and fail behind the
        # IMMEDIATE lock), and sees the snapshot before the uncommitted write.
        with store.read() as session:
            assert get_job(session=session, tenant_id=None, job_id=job_id).status == JobStatus.QUEUED
            assert list_jobs(session=session, tenant_id=tenant.id)[1] == 1
    finally:
        read_done.set()
        writer.join(60)
    assert errors == []
    with store.read() as session:
        assert get_job(session=session, tenant_id=None, job_id=job_id).status == JobStatus.RUNNING
    store.close()


def test_keys_are_stored_hashed_and_checked(store):
    with store.transaction() as session:
        tenant = create_tenant(session=session, name="t")
        key = create_api_key(session=session, tenant_id=tenant.id, name="ci")
    _, key_id, secret = key.split("_", 2)
    with store.transaction() as session:
        stored = session.get(ApiKey, key_id)
        assert stored is not None
        assert secret not in stored.secret_hash
        assert authenticate(session=session, presented=key).tenant_id == tenant.id
    for presented in (
        None,
        "",
        "garbage",
        f"sym_{key_id}_wrong",
        f"sym_ffffffffffffffff_{secret}",
        key + "x",
    ):
        with pytest.raises(AuthError, match=r"^Invalid or missing API key$"), store.transaction() as session:
            authenticate(session=session, presented=presented)
    with store.transaction() as session:
        revoke_api_key(session=session, key_id=key_id)
    with pytest.raises(AuthError), store.transaction() as session:
        authenticate(session=session, presented=key)


def test_duplicate_tenant_is_a_conflict_and_database_errors_are_store_errors(store):
    make_tenant(store, "t")
    with pytest.raises(ConflictError), store.transaction() as session:
        create_tenant(session=session, name="t")
    with pytest.raises(StoreError, match="database error"), store.transaction() as session:
        session.add(Job(tenant_id="no-such-tenant", spec={}, status="queued"))  # foreign key enforced


SWEEP = SweepSpec.model_validate(
    {
        "base": TINY_JOB,
        "n_trials": 4,
        "search_space": {"optimizer.lr": {"type": "log_uniform", "low": 1e-3, "high": 1e-1}},
    }
)


def test_sweeps_trials_objectives_and_cancellation(store):
    tenant = make_tenant(store, "t")
    with store.transaction() as session:
        sweep, _ = create_sweep(session=session, tenant_id=tenant.id, spec=SWEEP)
        sweep_id = sweep.id
        assert sweep.study_name == f"symopt-{sweep.id}"
        assert sweep.n_trials == 4
    specs = [load_spec(TINY_JOB, {"optimizer.lr": lr}) for lr in (0.01, 0.03)]
    job_ids = []
    for number, spec in enumerate(specs):
        with store.transaction() as session:
            job, _ = create_job(
                session=session, tenant_id=tenant.id, spec=spec, sweep_id=sweep_id, trial_number=number
            )
            job_ids.append(job.id)
    move(store, job_ids[0], JobStatus.RUNNING, JobStatus.SUCCEEDED)
    with store.transaction() as session:
        get_job(session=session, tenant_id=None, job_id=job_ids[0]).result = {
            "best_val_loss": 2.5,
            "val_loss": 2.7,
        }
        sweep = get_sweep(session=session, tenant_id=tenant.id, sweep_id=sweep_id)
        sweep.status = SweepStatus.RUNNING
    with store.transaction() as session:
        found = trials(
            session=session, sweep=get_sweep(session=session, tenant_id=tenant.id, sweep_id=sweep_id)
        )
        assert [(t.params, t.objective) for t in found] == [
            ({"optimizer.lr": 0.01}, 2.5),
            ({"optimizer.lr": 0.03}, None),
        ]
        assert objective_of(found[0].job, "final_val_loss") == 2.7
        assert list_sweeps(session=session, tenant_id=tenant.id)[1] == 1
    with store.transaction() as session:
        cancelled = request_cancel_sweep(session=session, tenant_id=tenant.id, sweep_id=sweep_id)
        assert cancelled.status == SweepStatus.CANCELLING
    with store.transaction() as session:
        assert get_job(session=session, tenant_id=None, job_id=job_ids[1]).status == JobStatus.CANCELLED
        assert get_job(session=session, tenant_id=None, job_id=job_ids[0]).status == JobStatus.SUCCEEDED


def test_concurrent_writers_do_not_fail_with_database_locked(store):
    tenant = make_tenant(store, "t")
    job_ids = [new_job(store, tenant.id) for _ in range(4)]
    errors: list[Exception] = []

    def writer(job_id: str) -> None:
        try:
            for batch in range(25):
                with store.transaction() as session:
                    record_metrics(
                        session=session,
                        job_id=job_id,
                        points=[Point("loss", batch * 10 + i, 1.0, 0.0) for i in range(10)],
                    )
                    append_events(
                        session=session, job_id=job_id, events=[NewEvent("log", None, f"batch {batch}")]
                    )
        except Exception as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(job_id,)) for job_id in job_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with store.transaction() as session:
        assert session.scalar(select(func.count()).select_from(MetricPoint)) == 4 * 250


def test_tokens_to_target_skips_non_finite_evals():
    evals = [
        {"tokens": 100, "val_loss": "nan"},  # how a non-finite loss may come back from JSON
        {"tokens": 200, "val_loss": float("nan")},
        {"tokens": 300, "val_loss": 1.9},
        {"tokens": 400, "val_loss": 1.4},
    ]
    job = Job(tenant_id="t", spec={}, status="succeeded", result={"evals": evals})
    assert objective_of(job, "tokens_to_target", 1.5) == 400
    assert objective_of(job, "tokens_to_target", 2.0) == 300
    assert objective_of(job, "tokens_to_target", 1.0) is None
