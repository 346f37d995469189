"""Jobs over HTTP: status codes and bodies, with a real database behind the API."""

from __future__ import annotations

import json

import pytest

from service.store import JobStatus
from service.store.jobs import NewEvent, append_events, create_job, get_job, transition
from service.store.metrics import Point, record_metrics
from symopt_core.spec import load_spec

from .conftest import TINY_JOB
from .test_api_security import SWEEP


def submit(client, tenant, body=None, **headers):
    return client.post("/v1/jobs", json=body or TINY_JOB, headers={**tenant.headers, **headers})


def set_status(client, job_id, *statuses, **fields):
    store = client.app.state.store
    for status in statuses:
        with store.transaction() as session:
            transition(
                session=session,
                job=get_job(session=session, tenant_id=None, job_id=job_id),
                to=status,
                **fields,
            )


def test_submit_then_read_back(client, alice):
    response = submit(client, alice)
    assert response.status_code == 201
    job = response.json()
    assert job["status"] == "queued"
    assert job["attempt"] == 0
    assert job["spec"]["model"] == {"family": "qwen3", "size": "tiny"}
    assert job["spec"]["steps"] == 20
    fetched = client.get(f"/v1/jobs/{job['id']}", headers=alice.headers)
    assert fetched.status_code == 200
    assert fetched.json() == job


def test_idempotency_key_returns_the_first_job(client, alice):
    first = submit(client, alice, **{"Idempotency-Key": "abc"})
    again = submit(client, alice, **{"Idempotency-Key": "abc"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert client.get("/v1/jobs", headers=alice.headers).json()["count"] == 1


BAD_SPECS = [
    ({"model": {"family": "qwen9"}}, ["model"], "valid families: gpt2, qwen3, gemma3, olmoe, gpt-oss"),
    ({"model": {"family": "qwen3", "size": "huge"}}, ["model"], "valid sizes: tiny, small, 0.6b"),
    ({"model": {"family": "qwen3", "layers": 3}}, ["model"], "Unknown dim(s) 'layers'"),
    ({"model": {"family": "qwen3", "d_model": 1 << 30}}, ["model"], "beyond what symopt trains"),
    ({**TINY_JOB, "optimizer": {"preset": "lion"}}, ["optimizer"], "valid presets: adamw, muon"),
    (
        {**TINY_JOB, "optimizer": {"overrides": {"router": "magic"}}},
        ["optimizer"],
        "valid rules: adamw, sgd, polar",
    ),
    (
        {**TINY_JOB, "optimizer": {"overrides": {"head": "polar"}}},
        ["optimizer"],
        "unknown parameter class 'head'",
    ),
    ({**TINY_JOB, "optimizer": {"lr": 0}}, ["optimizer", "lr"], "greater than 0"),
    ({**TINY_JOB, "optimizer": {"lr": -1e-3}}, ["optimizer", "lr"], "greater than 0"),
    ({**TINY_JOB, "steps": 0}, ["steps"], "greater than 0"),
    ({**TINY_JOB, "steps": 10**12}, ["steps"], "less than or equal to 100000000"),
    ({**TINY_JOB, "batch": {"size": 0}}, ["batch", "size"], "greater than 0"),
    ({**TINY_JOB, "batch": {"size": 10**7}}, ["batch", "size"], "less than or equal to 65536"),
    (
        {**TINY_JOB, "data": {"corpus": "wikipedia"}},
        ["data"],
        "valid corpora: shakespeare, pystdlib, modular",
    ),
    ({**TINY_JOB, "data": {"corpus": "file:../../etc/passwd"}}, ["data"], "inside the data root"),
    ({**TINY_JOB, "data": {"corpus": "file:/etc/passwd"}}, ["data"], "inside the data root"),
    ({**TINY_JOB, "data": {"corpus": "modular", "options": {"url": 1}}}, ["data"], "unknown option(s) url"),
    (
        {**TINY_JOB, "schedule": {"kind": "exponential"}},
        ["schedule", "kind"],
        "'constant', 'cosine', 'linear'",
    ),
    ({**TINY_JOB, "model_class": "os.system"}, ["model_class"], "Extra inputs are not permitted"),
    ({**TINY_JOB, "name": "x" * 500}, ["name"], "at most 200 characters"),
]


@pytest.mark.parametrize(
    ("body", "loc", "message"), BAD_SPECS, ids=[str(b[1]) + b[2][:20] for b in BAD_SPECS]
)
def test_invalid_specs_are_422_with_a_message_naming_the_fix(client, alice, body, loc, message):
    response = submit(client, alice, body)
    assert response.status_code == 422, response.text
    payload = response.json()
    assert message in payload["message"]
    assert any(problem["loc"][: len(loc)] == loc for problem in payload["detail"])
    assert client.get("/v1/jobs", headers=alice.headers).json()["count"] == 0  # nothing stored


def test_malformed_json_and_wrong_types_are_422(client, alice):
    response = client.post(
        "/v1/jobs", content=b"{not json", headers={**alice.headers, "content-type": "application/json"}
    )
    assert response.status_code == 422
    assert submit(client, alice, {"model": "qwen3"}).status_code == 422
    assert client.post("/v1/jobs", json=[1, 2], headers=alice.headers).status_code == 422


def test_a_spec_over_64_kib_is_413_and_not_stored(client, alice):
    huge = {**TINY_JOB, "name": "n", "padding": "x" * 70_000}
    response = submit(client, alice, huge)
    assert response.status_code == 413
    assert "at most 65536 bytes" in response.json()["detail"]
    chunked = client.post(
        "/v1/jobs",
        content=iter([b'{"model":', b"x" * 70_000]),
        headers={**alice.headers, "content-type": "application/json"},
    )
    assert chunked.status_code == 413
    assert client.get("/v1/jobs", headers=alice.headers).json()["count"] == 0


def test_listing_filters_and_pages_newest_first(client, alice):
    ids = [submit(client, alice, {**TINY_JOB, "name": f"job{i % 2}"}).json()["id"] for i in range(5)]
    set_status(client, ids[1], JobStatus.RUNNING)
    everything = client.get("/v1/jobs", headers=alice.headers).json()
    assert everything["count"] == 5
    assert [j["id"] for j in everything["data"]] == ids[::-1]
    page = client.get("/v1/jobs?limit=2&offset=2", headers=alice.headers).json()
    assert [j["id"] for j in page["data"]] == [ids[2], ids[1]]
    running = client.get("/v1/jobs?status=running,cancelling", headers=alice.headers).json()
    assert [j["id"] for j in running["data"]] == [ids[1]]
    assert client.get("/v1/jobs?name=job0", headers=alice.headers).json()["count"] == 3
    bad = client.get("/v1/jobs?status=sleeping", headers=alice.headers)
    assert bad.status_code == 422
    assert "valid statuses: queued, running" in bad.json()["message"]
    assert client.get("/v1/jobs?limit=0", headers=alice.headers).status_code == 422
    assert client.get("/v1/jobs?limit=100000", headers=alice.headers).status_code == 422


def test_listing_by_sweep_returns_exactly_that_sweeps_jobs(client, alice, bob):
    sweep_id = client.post("/v1/sweeps", json=SWEEP, headers=alice.headers).json()["id"]
    other_sweep = client.post("/v1/sweeps", json=SWEEP, headers=alice.headers).json()["id"]
    store = client.app.state.store
    spec = load_spec(TINY_JOB)

    def trial(sweep: str, number: int) -> str:
        with store.transaction() as session:
            job, _ = create_job(
                session=session, tenant_id=alice.id, spec=spec, sweep_id=sweep, trial_number=number
            )
            return job.id

    submit(client, alice)  # a job of no sweep
    mine = [trial(sweep_id, n) for n in range(3)]
    trial(other_sweep, 0)
    submit(client, alice)
    listed = client.get(f"/v1/jobs?sweep_id={sweep_id}", headers=alice.headers).json()
    assert listed["count"] == 3
    assert [j["id"] for j in listed["data"]] == mine[::-1]
    assert {j["sweep_id"] for j in listed["data"]} == {sweep_id}
    page = client.get(f"/v1/jobs?sweep_id={sweep_id}&limit=2&offset=1", headers=alice.headers).json()
    assert (page["count"], [j["id"] for j in page["data"]]) == (3, [mine[1], mine[0]])
    set_status(client, mine[0], JobStatus.RUNNING)
    running = client.get(f"/v1/jobs?sweep_id={sweep_id}&status=running", headers=alice.headers).json()
    assert [j["id"] for j in running["data"]] == [mine[0]]
    unknown = client.get("/v1/jobs?sweep_id=nosuchsweep", headers=alice.headers)
    assert unknown.json() == {"data": [], "count": 0}
    assert client.get(f"/v1/jobs?sweep_id={sweep_id}", headers=bob.headers).json()["count"] == 0
    assert client.get("/v1/jobs", headers=alice.headers).json()["count"] == 6
    too_long = client.get(f"/v1/jobs?sweep_id={'x' * 33}", headers=alice.headers)
    assert too_long.status_code == 422
    assert "query.sweep_id: String should have at most 32 characters" in too_long.json()["message"]


def test_cancel_and_delete_follow_the_state_machine(client, alice):
    queued = submit(client, alice).json()["id"]
    running = submit(client, alice).json()["id"]
    set_status(client, running, JobStatus.RUNNING)
    assert client.delete(f"/v1/jobs/{queued}", headers=alice.headers).status_code == 409
    cancelled = client.post(f"/v1/jobs/{queued}/cancel", headers=alice.headers)
    assert cancelled.status_code == 202
    assert cancelled.json()["status"] == "cancelled"
    assert client.post(f"/v1/jobs/{running}/cancel", headers=alice.headers).json()["status"] == "cancelling"
    conflict = client.post(f"/v1/jobs/{queued}/cancel", headers=alice.headers)
    assert conflict.status_code == 409
    assert "already finished (cancelled)" in conflict.json()["detail"]
    assert client.delete(f"/v1/jobs/{queued}", headers=alice.headers).status_code == 204
    assert client.get(f"/v1/jobs/{queued}", headers=alice.headers).status_code == 404
    assert client.delete(f"/v1/jobs/{running}", headers=alice.headers).status_code == 409


def test_metrics_incremental_polling(client, alice):
    job_id = submit(client, alice).json()["id"]
    with client.app.state.store.transaction() as session:
        points = [Point("train_loss", s, 4.0 - s / 100, 0.0) for s in range(1, 51)]
        points += [Point("val_loss", s, float("nan") if s == 20 else 3.0, 0.0) for s in (10, 20, 30)]
        record_metrics(session=session, job_id=job_id, points=points)
    everything = client.get(f"/v1/jobs/{job_id}/metrics", headers=alice.headers).json()
    assert everything["last_step"] == 50
    assert not everything["truncated"]
    series = {s["name"]: s for s in everything["series"]}
    assert series["train_loss"]["steps"] == list(range(1, 51))
    assert series["val_loss"]["values"] == [3.0, "nan", 3.0]
    newer = client.get(
        f"/v1/jobs/{job_id}/metrics?since_step=45&names=train_loss", headers=alice.headers
    ).json()
    assert newer["series"] == [
        {
            "name": "train_loss",
            "steps": [46, 47, 48, 49, 50],
            "values": [4.0 - s / 100 for s in range(46, 51)],
        }
    ]
    paged = client.get(f"/v1/jobs/{job_id}/metrics?limit=5", headers=alice.headers).json()
    assert paged["truncated"]
    assert paged["last_step"] == 5
    assert client.get(f"/v1/jobs/{job_id}/metrics?limit=0", headers=alice.headers).status_code == 422


def test_logs_and_the_event_stream(client, alice):
    job_id = submit(client, alice).json()["id"]
    store = client.app.state.store
    with store.transaction() as session:
        append_events(
            session=session, job_id=job_id, events=[NewEvent("log", None, f"line {i}") for i in range(3)]
        )
        record_metrics(session=session, job_id=job_id, points=[Point("train_loss", 1, 4.0, 0.0)])
    logs = client.get(f"/v1/jobs/{job_id}/logs", headers=alice.headers).json()
    assert [e["message"] for e in logs["data"]] == ["line 0", "line 1", "line 2"]
    assert (
        client.get(f"/v1/jobs/{job_id}/logs?after_id={logs['last_id']}", headers=alice.headers).json()["data"]
        == []
    )
    set_status(client, job_id, JobStatus.RUNNING, JobStatus.SUCCEEDED)
    frames: list[tuple[str, dict]] = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=alice.headers) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                frames.append((event, json.loads(line.removeprefix("data: "))))
    kinds = [kind for kind, _ in frames]
    assert kinds[-1] == "end"
    assert frames[-1][1] == {"status": "succeeded"}
    statuses = [
        data["data"]["status"] for kind, data in frames if kind == "event" and data["kind"] == "status"
    ]
    assert statuses == ["queued", "running", "succeeded"]
    metrics = [data for kind, data in frames if kind == "metrics"]
    assert metrics[0]["series"] == [{"name": "train_loss", "steps": [1], "values": [4.0]}]
    # resuming after the last event id sends only what follows
    last_id = max(data["id"] for kind, data in frames if kind == "event")
    with client.stream(
        "GET",
        f"/v1/jobs/{job_id}/events?since_step=1",
        headers={**alice.headers, "Last-Event-ID": str(last_id)},
    ) as stream:
        rest = [line for line in stream.iter_lines() if line.startswith("event: ")]
    assert rest == ["event: end"]


def test_unknown_job_is_404_on_every_job_route(client, alice):
    missing = "0" * 32
    for method, path in [
        ("GET", ""),
        ("POST", "/cancel"),
        ("DELETE", ""),
        ("GET", "/metrics"),
        ("GET", "/logs"),
        ("GET", "/events"),
    ]:
        response = client.request(method, f"/v1/jobs/{missing}{path}", headers=alice.headers)
        assert response.status_code == 404, (method, path)
        assert response.json() == {"message": f"No job {missing}", "detail": f"No job {missing}"}


def test_the_event_stream_sends_a_point_written_later_at_the_newest_step(client, alice):
    # The scheduler may store step 10's train_loss in one write and its val_loss in the next.
    job_id = submit(client, alice).json()["id"]
    set_status(client, job_id, JobStatus.RUNNING)
    store = client.app.state.store
    with store.transaction() as session:
        record_metrics(session=session, job_id=job_id, points=[Point("train_loss", 10, 3.0, 0.0)])
    sent: list[tuple[str, int]] = []
    event = None
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=alice.headers) as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "metrics":
                page = json.loads(line.removeprefix("data: "))
                sent += [(s["name"], step) for s in page["series"] for step in s["steps"]]
                if sent == [("train_loss", 10)]:  # the first write is out: now the second one
                    with store.transaction() as session:
                        record_metrics(
                            session=session, job_id=job_id, points=[Point("val_loss", 10, 3.1, 0.0)]
                        )
                    set_status(client, job_id, JobStatus.SUCCEEDED)
    assert sent == [("train_loss", 10), ("val_loss", 10)]  # each point once, none lost
