"""The client under real faults: answers lost on the wire, a service that restarts while a job is
being waited on, and the retry policy against a server answering 429/5xx."""

from __future__ import annotations

import re
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.client import Client, Job, RateLimitedError, ServerError
from service.client import jobs as client_jobs
from service.client.progress import Progress
from service.testing import free_port, live_service, restartable_port

from ..specs import tiny_job
from ..waiting import LIMIT, wait_for
from .faults import LoopbackProxy, LosingProxy, read_request, scripted_server
from .live import SharedService, rows

TINY = tiny_job(name="faults", steps=20, eval={"every": 10, "batches": 1})


def test_a_submission_whose_answer_is_lost_is_retried_and_creates_one_job(
    shared_service: SharedService,
) -> None:
    tenant, mark = shared_service.tenant(), shared_service.mark()
    proxy = LosingProxy(int(tenant.url.rsplit(":", 1)[1]), lose=1, lose_prefix=b"POST /v1/jobs")
    try:
        with Client(proxy.url, tenant.api_key, backoff=0.05) as client:
            job = client.submit(TINY)
    finally:
        proxy.close()
    assert proxy.lost == 1, "the proxy must really have lost the first answer"
    posts = shared_service.lines_since(mark, '"POST /v1/jobs HTTP/1.1"')
    assert [" 201" in posts[0], " 200" in posts[1]] == [True, True], posts  # created, then replayed
    [(stored,)] = rows(
        shared_service.home,
        "SELECT count(*) FROM symopt_jobs j JOIN symopt_tenants t ON t.id = j.tenant_id WHERE t.name = :name",
        name=tenant.tenant,
    )
    assert stored == 1  # one row in the store, not two
    with Client(tenant.url, tenant.api_key) as direct:
        assert [found.id for found in direct.jobs()] == [job.id]


def test_wait_survives_a_restart_of_the_service(tmp_path: Path) -> None:
    port, env = restartable_port(), {"SYMOPT_RAY_NUM_CPUS": "1"}
    # Long (it is cancelled once resumed): a short job could end before the service is killed.
    spec = {
        **TINY,
        "steps": 1_000_000,
        "log_every": 10,
        "eval": {"every": 100, "batches": 1},
        "checkpoint": {"every": 40},
    }
    outcome: dict[str, Any] = {}
    with live_service(tmp_path, env=env, port=port) as service:
        client = Client(service.url, service.api_key, backoff=0.2)
        job = client.submit(spec)

        def wait() -> None:
            try:
                outcome["job"] = job.wait(timeout=LIMIT, progress=False)
            except BaseException as error:  # reported to the test below
                outcome["error"] = error

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        wait_for(
            lambda: client.job(job.id).step >= 50,
            progress=lambda: (client.job(job.id).status, client.job(job.id).step),
            what="the job to pass step 50",
        )
        service.process.send_signal(signal.SIGKILL)  # no goodbye: connections simply drop
        service.process.wait()
    time.sleep(3)  # the waiter now meets a refused connection, again and again
    assert waiter.is_alive()
    with live_service(tmp_path, env=env, port=port):
        resumed = wait_for(
            lambda: (found := client.job(job.id)).data["attempt"] == 2 and found.step >= 100 and found,
            progress=lambda: (client.job(job.id).data["attempt"], client.job(job.id).step),
            what="the job resumed after the restart",
        )
        assert waiter.is_alive()  # still waiting: the job has not ended
        client.job(job.id).cancel()
        waiter.join(timeout=LIMIT)
    assert "error" not in outcome, outcome.get("error")
    finished = outcome["job"]
    assert finished.status == "cancelled"
    assert finished.data["attempt"] == 2  # resumed from its checkpoint after the restart
    assert finished.data["step"] >= resumed.step
    client.close()


def client_of(server: Any, **options: Any) -> Client:
    return Client(f"http://127.0.0.1:{server.server_port}", "sym_a_b", backoff=0.01, **options)


def test_retries_are_bounded_and_only_where_repeating_is_safe() -> None:
    with scripted_server([503, 503, 200]) as server, client_of(server) as client:
        assert client.request("GET", "/v1/jobs")["message"] == "scripted 200"
        assert len(server.requests) == 3
    with scripted_server([503]) as server, client_of(server, retries=3) as client:
        with pytest.raises(ServerError, match="scripted 503"):
            client.request("GET", "/v1/jobs")
        assert len(server.requests) == 4  # the first try and 3 retries
        with pytest.raises(ServerError):
            client.request("POST", "/v1/jobs/j1/cancel")  # no key, not marked repeatable: once
        assert len(server.requests) == 5
        with pytest.raises(ServerError):
            client.request("POST", "/v1/jobs", json={}, headers={"Idempotency-Key": "k"})
        assert len(server.requests) == 9  # with a key: retried
    with scripted_server([429, 201], headers={"Retry-After": "0"}) as server, client_of(server) as client:
        client.request("POST", "/v1/jobs", json={})  # 429: not processed, safe to repeat
        assert len(server.requests) == 2
    with (
        scripted_server([429], headers={"Retry-After": "0"}) as server,
        client_of(server, retries=2) as client,
    ):
        with pytest.raises(RateLimitedError) as limited:
            client.request("GET", "/v1/jobs")
        assert limited.value.retry_after == 0
    closed = free_port()  # nothing listens: connection refused, retried, then raised
    with (
        Client(f"http://127.0.0.1:{closed}", "sym_a_b", backoff=0.01, retries=2) as client,
        pytest.raises(httpx.ConnectError),
    ):
        client.request("GET", "/v1/jobs")


class SseBreakingProxy(LoopbackProxy):
    """An HTTP proxy in front of the service, one request per connection (it makes each request
    `Connection: close`). Every request is forwarded, except those for the job's event stream:
    the first `cut_after_metrics` of them are passed on until one `metrics` event has gone
    through and then cut; the rest are dropped before any answer. `.streams` counts the
    event-stream requests, `.others` the rest."""

    def __init__(self, target_port: int, *, cut_after_metrics: int = 0) -> None:
        self.to_cut = cut_after_metrics
        self.streams = self.others = 0
        self.cut_at_step: int | None = None  # the newest step the cut stream passed on
        super().__init__(target_port)

    def _serve(self, client: socket.socket) -> None:
        try:
            head, _, body = read_request(client).partition(b"\r\n\r\n")
            lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
            stream = re.match(rb"GET /v1/jobs/[^/?]+/events[?\s]", lines[0]) is not None
            with self.lock:
                if stream:
                    self.streams += 1
                    cut = self.streams <= self.to_cut
                else:
                    self.others += 1
            if stream and not cut:
                return  # refused: the connection closes with no answer
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            try:
                upstream.sendall(b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n" + body)
                passed = b""
                while data := upstream.recv(65536):
                    client.sendall(data)
                    passed += data if stream else b""
                    if stream and re.search(rb"event: ?metrics\r?\n(.*\r?\n)*?\r?\n", passed):
                        steps = re.findall(rb'"last_step": ?(\d+)', passed)
                        self.cut_at_step = max(int(step) for step in steps)
                        return  # one metrics event went through: cut the stream
            finally:
                upstream.close()
        except OSError:
            return
        finally:
            client.close()


class RecordingProgress(Progress):
    """The client's own Progress, noting every point that `follow()` hands it."""

    points: list[tuple[int, str]]

    def absorb(self, page: dict[str, Any]) -> bool:
        self.points += [(step, s["name"]) for s in page["series"] for step in s["steps"]]
        return super().absorb(page)


def follow_recorded(job: Job, monkeypatch: pytest.MonkeyPatch, **options: Any) -> tuple[list[Any], list[Any]]:
    """What `job.follow(**options)` yields (status and step of each state) and every point it took."""
    points: list[tuple[int, str]] = []
    monkeypatch.setattr(RecordingProgress, "points", points, raising=False)
    monkeypatch.setattr(client_jobs, "Progress", RecordingProgress)
    states = [(state.status, state.step) for state in job.follow(timeout=LIMIT, **options)]
    return states, points


def assert_followed_whole(
    job: Job, stored: list[tuple[int, str]], states: list[Any], points: list[Any], steps: int
) -> None:
    """Every point the job stored was taken once, in step order; the states move forward to the end."""
    assert sorted(points) == stored, "each stored point once, none missing"
    for name in {name for _, name in stored}:
        taken = [step for step, named in points if named == name]
        assert taken == sorted(taken), f"{name} in step order"
    assert {0, 5, 10, 15, 20} <= {step for step, _ in points}
    assert [step for _, step in states] == sorted(step for _, step in states)
    assert states[-1] == ("succeeded", steps)
    assert job.status == "succeeded"
    assert job.result is not None
    assert job.result["steps"] == steps


FOLLOWED = {**TINY, "name": "followed", "steps": 20, "log_every": 5, "eval": {"every": 5, "batches": 1}}


def test_follow_without_the_stream_polls_every_point_once_to_the_end(
    shared_service: SharedService, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = shared_service.tenant()
    proxy = SseBreakingProxy(int(tenant.url.rsplit(":", 1)[1]))  # counts; breaks nothing
    try:
        with Client(proxy.url, tenant.api_key) as client:
            job = client.submit(FOLLOWED)
            states, points = follow_recorded(job, monkeypatch, stream=False, poll=0.2)
            stored = [(row["step"], row["name"]) for row in job.metrics()]
    finally:
        proxy.close()
    assert proxy.streams == 0, "polled the REST API, never the stream"
    assert proxy.others > 3
    assert_followed_whole(job, stored, states, points, 20)


def test_follow_falls_back_to_polling_after_repeated_stream_failures(
    shared_service: SharedService, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Long enough that polls see it running after the cut: a warm worker runs 60 tiny steps in
    # about a second, and the first metrics frame may only come at step 55 of them.
    steps = 400
    spec = {**FOLLOWED, "steps": steps}
    tenant = shared_service.tenant()
    proxy = SseBreakingProxy(int(tenant.url.rsplit(":", 1)[1]), cut_after_metrics=1)
    try:
        with Client(proxy.url, tenant.api_key) as client:
            job = client.submit(spec)
            states, points = follow_recorded(job, monkeypatch, poll=0.2)
            polled_from = proxy.others
            stored = [(row["step"], row["name"]) for row in job.metrics()]
    finally:
        proxy.close()
    # One stream cut after its first metrics, then refused until the client stopped asking.
    assert proxy.streams == client_jobs.STREAM_FAILURES_BEFORE_POLLING
    assert polled_from > 2 * client_jobs.STREAM_FAILURES_BEFORE_POLLING
    assert_followed_whole(job, stored, states, points, steps)
    assert proxy.cut_at_step is not None
    polled = [step for status, step in states if status == "running" and step > proxy.cut_at_step]
    assert polled, f"the polls followed the running job, not only its end: {states}"
