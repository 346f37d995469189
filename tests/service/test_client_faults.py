"""The client under real faults: answers lost on the wire, a service that restarts while a job is
being waited on, and the retry policy against a server answering 429/5xx."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from service.client import Client, RateLimitedError, ServerError
from service.testing import free_port, live_service, restartable_port

from .faults import LosingProxy, scripted_server

TINY: dict[str, Any] = {
    "name": "faults",
    "model": {"family": "qwen3", "size": "tiny"},
    "data": {"corpus": "pystdlib", "seq_len": 32},
    "batch": {"size": 4},
    "steps": 20,
    "log_every": 5,
    "eval": {"every": 10, "batches": 1},
    "schedule": {"kind": "constant"},
}


def jobs_in_store(home: Path) -> int:
    engine = create_engine(f"sqlite:///{home / 'symopt.db'}")
    with engine.connect() as connection:
        count = int(connection.execute(text("SELECT count(*) FROM symopt_jobs")).scalar_one())
    engine.dispose()
    return count


def test_a_submission_whose_answer_is_lost_is_retried_and_creates_one_job(tmp_path: Path) -> None:
    with live_service(tmp_path, env={"SYMOPT_RAY_NUM_CPUS": "1"}) as service:
        port = int(service.url.rsplit(":", 1)[1])
        proxy = LosingProxy(port, lose=1, lose_prefix=b"POST /v1/jobs")
        try:
            with Client(proxy.url, service.api_key, backoff=0.05) as client:
                job = client.submit(TINY)
        finally:
            proxy.close()
        assert proxy.lost == 1, "the proxy must really have lost the first answer"
        posts = [line for line in service.output if '"POST /v1/jobs HTTP/1.1"' in line]
        assert [" 201" in posts[0], " 200" in posts[1]] == [True, True], posts  # created, then replayed
        assert jobs_in_store(tmp_path) == 1
        with Client(service.url, service.api_key) as direct:
            assert [found.id for found in direct.jobs()] == [job.id]


def test_wait_survives_a_restart_of_the_service(tmp_path: Path) -> None:
    port, env = restartable_port(), {"SYMOPT_RAY_NUM_CPUS": "1"}
    spec = {
        **TINY,
        "steps": 200,
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
                outcome["job"] = job.wait(timeout=300, progress=False)
            except BaseException as error:  # reported to the test below
                outcome["error"] = error

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        deadline = time.monotonic() + 120
        while client.job(job.id).step < 50 and time.monotonic() < deadline:
            time.sleep(0.2)
        service.process.send_signal(signal.SIGKILL)  # no goodbye: connections simply drop
        service.process.wait()
    time.sleep(3)  # the waiter now meets a refused connection, again and again
    assert waiter.is_alive()
    with live_service(tmp_path, env=env, port=port):
        waiter.join(timeout=300)
    assert "error" not in outcome, outcome.get("error")
    finished = outcome["job"]
    assert finished.status == "succeeded"
    assert finished.data["attempt"] == 2  # resumed from its checkpoint after the restart
    assert finished.result["steps"] == 200
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
