"""Authentication, tenant isolation and rate limits, over every /v1 route the OpenAPI lists."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.settings import Settings
from service.store.keys import revoke_api_key

from .conftest import TINY_JOB, make_tenant

SWEEP = {
    "base": TINY_JOB,
    "n_trials": 2,
    "search_space": {"optimizer.lr": {"type": "log_uniform", "low": 1e-3, "high": 1e-1}},
}


def v1_operations(client: TestClient) -> list[tuple[str, str]]:
    paths = client.get("/openapi.json").json()["paths"]
    return [
        (method.upper(), path) for path, item in paths.items() if path.startswith("/v1") for method in item
    ]


def fill(path: str, job_id: str, sweep_id: str) -> str:
    return path.replace("{job_id}", job_id).replace("{sweep_id}", sweep_id)


@pytest.fixture
def owned(client, alice):
    job = client.post("/v1/jobs", json=TINY_JOB, headers=alice.headers).json()
    sweep = client.post("/v1/sweeps", json=SWEEP, headers=alice.headers).json()
    return job["id"], sweep["id"]


def test_every_v1_route_needs_a_valid_key(client, alice, owned):
    operations = v1_operations(client)
    assert len(operations) >= 14
    for headers in (
        {},
        {"Authorization": "Bearer sym_0000000000000000_nope"},
        {"Authorization": "Basic abc"},
        {"Authorization": alice.headers["Authorization"] + "x"},
    ):
        for method, path in operations:
            response = client.request(method, fill(path, *owned), headers=headers, json=TINY_JOB)
            assert response.status_code == 401, (method, path, headers)
            assert response.json() == {"detail": "Invalid or missing API key"}
            assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/metrics").status_code == 401


def test_another_tenants_objects_are_not_found_and_nothing_leaks(client, alice, bob, owned):
    job_id, sweep_id = owned
    for method, path in v1_operations(client):
        if "{" not in path:
            continue
        response = client.request(method, fill(path, job_id, sweep_id), headers=bob.headers)
        assert response.status_code == 404, (method, path)
        assert job_id not in response.text.replace(f"No job {job_id}", "")
        assert "tiny" not in response.text
    assert client.get("/v1/jobs", headers=bob.headers).json() == {"data": [], "count": 0}
    assert client.get("/v1/sweeps", headers=bob.headers).json() == {"data": [], "count": 0}
    assert client.get(f"/v1/jobs?sweep_id={sweep_id}", headers=bob.headers).json()["count"] == 0
    # and alice's objects are untouched by bob's attempts
    assert client.get(f"/v1/jobs/{job_id}", headers=alice.headers).json()["status"] == "queued"
    assert client.get(f"/v1/sweeps/{sweep_id}", headers=alice.headers).json()["status"] == "queued"


def test_a_revoked_key_stops_working(client, alice):
    assert client.get("/v1/jobs", headers=alice.headers).status_code == 200
    with client.app.state.store.transaction() as session:
        revoke_api_key(session=session, key_id=alice.key.split("_")[1])
    assert client.get("/v1/jobs", headers=alice.headers).status_code == 401


def test_job_creation_is_rate_limited_per_key(database_url, tmp_path):
    settings = Settings(database_url=database_url, home=tmp_path, job_rate_per_minute=6, job_rate_burst=3)
    with TestClient(create_app(settings)) as client:
        alice = make_tenant(client.app.state.store, "alice")
        bob = make_tenant(client.app.state.store, "bob")
        codes = [client.post("/v1/jobs", json=TINY_JOB, headers=alice.headers).status_code for _ in range(4)]
        assert codes == [201, 201, 201, 429]
        limited = client.post("/v1/jobs", json=TINY_JOB, headers=alice.headers)
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 10
        assert "retry in" in limited.json()["detail"]
        assert client.post("/v1/jobs", json=TINY_JOB, headers=bob.headers).status_code == 201  # per key
        assert client.get("/v1/jobs", headers=alice.headers).json()["count"] == 3  # reads are not limited
