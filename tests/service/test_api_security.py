"""Authentication, tenant isolation and rate limits, over every /v1 route the OpenAPI lists."""

from __future__ import annotations

import io
import json
import re
import tarfile

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.dashboard import STATIC_DIR
from service.settings import Settings
from service.store.keys import revoke_api_key

from .conftest import TINY_JOB, make_admin, make_tenant

# Alice's objects carry names and spec values found nowhere else, so that a leak shows in a body.
SECRET_JOB = {**TINY_JOB, "name": "alice-secret-job", "seed": 424242}
SWEEP = {
    "name": "alice-secret-sweep",
    "base": SECRET_JOB,
    "n_trials": 2,
    "search_space": {"optimizer.lr": {"type": "log_uniform", "low": 1.2345e-3, "high": 1e-1}},
}
STUDY = {
    "name": "alice-secret-study",
    "base": SECRET_JOB,
    "candidates": ["adamw", "muon"],
    "tuning": {"n_trials": 2, "search_space": SWEEP["search_space"], "sampler": "grid", "pruner": "none"},
    "seeds": 2,
}
SECRETS = ("alice", "424242", "1.2345", "0.0012345")
GHOST = "0123456789abcdef0123456789abcdef"  # an id of the same shape that no object has

# Routes answering without a key, on purpose. Adding a public route fails
# test_only_the_listed_routes_answer_without_a_key until it is listed here with its reason.
PUBLIC = {
    "/healthz": "liveness: {status: ok}",
    "/readyz": "readiness: database and migration checks, no tenant data",
    "/openapi.json": "the API schema",
    "/docs": "Swagger UI over the schema",
    "/docs/oauth2-redirect": "Swagger UI's OAuth helper page",
    "/redoc": "ReDoc over the schema",
    # The dashboard's static page and modules hold no data: the page asks for a key and sends it
    # with every /v1 call (service/dashboard/__init__.py); test_the_dashboard_is_static checks it.
    "/": "the dashboard's page (static)",
    "/dashboard": "the dashboard's static modules, styles and vendored uPlot",
}


def operations(client: TestClient) -> list[tuple[str, str]]:
    """(METHOD, path) of every operation the OpenAPI lists."""
    paths = client.get("/openapi.json").json()["paths"]
    return [(method.upper(), path) for path, item in paths.items() for method in item]


def v1_operations(client: TestClient) -> list[tuple[str, str]]:
    return [(method, path) for method, path in operations(client) if path.startswith("/v1")]


def routed_paths(client: TestClient) -> set[str]:
    """Every path the app routes, schema or not: routes, mounts, and the routes of included routers."""
    paths = set()
    for route in client.app.routes:
        if hasattr(route, "path"):  # Route, APIRoute, Mount
            paths.add(route.path)
        else:  # FastAPI >= 0.16x keeps an included router whole: ask it what it routes
            paths.update(candidate.path for candidate in route.effective_candidates())
    return paths


def fill(path: str, ids: dict[str, str]) -> str:
    """`path` with each {placeholder} replaced by its id; an unknown placeholder is an error, so a
    route with a new kind of parameter fails these tests until `owned` makes an object for it."""
    unknown = set(re.findall(r"{([^}]*)}", path)) - set(ids)
    if unknown:
        raise KeyError(f"{path}: no object of alice's for {sorted(unknown)}; create one in `owned`")
    return re.sub(r"{([^}]*)}", lambda match: ids[match.group(1)], path)


@pytest.fixture
def owned(client, alice) -> dict[str, str]:
    """Alice's job, sweep and study, by the path parameter that names each."""
    ids = {}
    for placeholder, kind, body in (("job_id", "jobs", SECRET_JOB), ("sweep_id", "sweeps", SWEEP),
                                    ("study_id", "studies", STUDY)):  # fmt: skip
        response = client.post(f"/v1/{kind}", json=body, headers=alice.headers)
        assert response.status_code == 201, response.text
        ids[placeholder] = response.json()["id"]
    for placeholder, route, upload in (("dataset_id", "/v1/datasets", b"alice's notes\n" * 100),
                                       ("model_id", "/v1/models/uploads", model_upload())):  # fmt: skip
        response = client.post(route, content=upload, headers=alice.headers)
        assert response.status_code == 201, response.text
        ids[placeholder] = response.json()["id"]
    ids["key"] = "0" * 64  # a trained tokenizer's cache key: none is trained here
    ids["key_id"] = alice.key.split("_")[1]  # her API key's public id (`/v1/keys/{key_id}/revoke`)
    return ids


def model_upload() -> bytes:
    """A tar of a model directory: a tiny llama config and a weights file (read only by a job)."""
    config = {"model_type": "llama", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (("config.json", json.dumps(config).encode()), ("model.safetensors", b"{}")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_fill_refuses_a_placeholder_it_does_not_know():
    assert fill("/v1/jobs/{job_id}/cancel", {"job_id": "j"}) == "/v1/jobs/j/cancel"
    with pytest.raises(KeyError, match="trial_id"):
        fill("/v1/sweeps/{sweep_id}/trials/{trial_id}", {"sweep_id": "s"})


def test_every_v1_route_needs_a_valid_key(client, alice, owned):
    v1 = v1_operations(client)
    assert len(v1) >= 19
    for headers in (
        {},
        {"Authorization": "Bearer sym_0000000000000000_nope"},
        {"Authorization": "Basic abc"},
        {"Authorization": alice.headers["Authorization"] + "x"},
    ):
        for method, path in v1:
            response = client.request(method, fill(path, owned), headers=headers, json=TINY_JOB)
            assert response.status_code == 401, (method, path, headers)
            refusal = "Invalid or missing API key"
            assert response.json() == {"message": refusal, "detail": refusal}
            assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/jobs", headers=alice.headers).json()["count"] == 1  # nothing was created


def test_only_the_listed_routes_answer_without_a_key(client, owned):
    """Every route the app has (the OpenAPI's and the unlisted ones): without a key, only PUBLIC answer."""
    routed = routed_paths(client)
    assert {path for _, path in operations(client)} <= routed
    assert routed >= set(PUBLIC), set(PUBLIC) - routed
    answered = set()
    for method, path in operations(client):
        response = client.request(method, fill(path, owned), json=TINY_JOB)
        if response.status_code < 400:
            answered.add(path)
        else:
            assert response.status_code == 401, (method, path, response.text)
    for path in routed - {p for _, p in operations(client)}:
        probe = "/dashboard/app.js" if path == "/dashboard" else path  # a mount: one of its files
        response = client.get(fill(probe, owned))
        if response.status_code < 400:
            answered.add(path)
        else:
            assert response.status_code == 401, (path, response.text)
    assert answered == set(PUBLIC), answered ^ set(PUBLIC)
    assert client.get("/metrics").status_code == 401  # admin keys only: it counts every tenant's jobs


def test_the_dashboard_is_static(client, owned):
    """What `/` and `/dashboard/` serve without a key is the files on disk, byte for byte: no data."""
    files = sorted(p for p in STATIC_DIR.rglob("*") if p.is_file())
    assert {p.suffix for p in files} <= {".html", ".js", ".css", ".LICENSE"}, files
    assert client.get("/").content == (STATIC_DIR / "index.html").read_bytes()
    for file in files:
        response = client.get(f"/dashboard/{file.relative_to(STATIC_DIR).as_posix()}")
        assert response.status_code == 200, file
        assert response.content == file.read_bytes()
        assert not any(object_id in response.text for object_id in owned.values())


def _snapshot(client: TestClient, tenant, owned: dict[str, str]) -> dict[str, object]:
    return {
        kind: client.get(f"/v1/{kind}/{owned[placeholder]}", headers=tenant.headers).json()
        for placeholder, kind in (("job_id", "jobs"), ("sweep_id", "sweeps"), ("study_id", "studies"))
    }


def test_another_tenants_objects_are_not_found_and_nothing_leaks(client, alice, bob, owned):
    """Bob's answer on each of alice's objects, for every /v1 operation with a path parameter,
    is the answer for an id that does not exist: a 404 that names nothing of hers."""
    before = _snapshot(client, alice, owned)
    assert {kind: body["status"] for kind, body in before.items()} == dict.fromkeys(before, "queued")
    checked = 0
    for method, path in v1_operations(client):
        if "{" not in path:
            continue
        response = client.request(method, fill(path, owned), headers=bob.headers, json=TINY_JOB)
        ghost = client.request(
            method, fill(path, dict.fromkeys(owned, GHOST)), headers=bob.headers, json=TINY_JOB
        )
        assert response.status_code == ghost.status_code == 404, (method, path, response.text)
        text = response.text
        for object_id in owned.values():
            text = text.replace(object_id, GHOST)
        assert text == ghost.text, (method, path)  # at most bob's own input is echoed
        assert not any(secret in response.text for secret in SECRETS), (method, path, response.text)
        checked += 1
    assert checked >= 14
    for kind in ("jobs", "sweeps", "studies"):
        assert client.get(f"/v1/{kind}", headers=bob.headers).json() == {"data": [], "count": 0}
    assert client.get(f"/v1/jobs?sweep_id={owned['sweep_id']}", headers=bob.headers).json()["count"] == 0
    # and alice's objects are untouched by bob's attempts (no cancel, no delete, no change at all)
    assert _snapshot(client, alice, owned) == before
    assert client.get("/v1/jobs", headers=alice.headers).json()["count"] == 1


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


def test_only_an_admin_key_creates_keys_and_a_new_key_sees_only_its_tenant(client, alice, owned):
    refused = client.post("/v1/keys", json={"tenant": "mallory"}, headers=alice.headers)
    assert refused.status_code == 403
    assert "admin API key" in refused.json()["detail"]
    admin = make_admin(client.app.state.store, "operator")
    created = client.post("/v1/keys", json={"tenant": "carol", "name": "ci"}, headers=admin.headers)
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["tenant"], body["is_admin"]) == ("carol", False)
    assert body["api_key"].startswith(f"sym_{body['key_id']}_")
    carol = {"Authorization": f"Bearer {body['api_key']}"}
    assert client.get("/v1/me", headers=carol).json() == {
        "tenant": "carol",
        "key_id": body["key_id"],
        "is_admin": False,
    }
    assert client.get("/v1/jobs", headers=carol).json()["count"] == 0  # alice's job is not hers
    assert client.get(f"/v1/jobs/{owned['job_id']}", headers=carol).status_code == 404
    # A second key of an existing tenant acts for the same tenant; a refused name says why.
    again = client.post("/v1/keys", json={"tenant": "alice"}, headers=admin.headers).json()
    assert (
        client.get("/v1/jobs", headers={"Authorization": f"Bearer {again['api_key']}"}).json()["count"] == 1
    )
    bad = client.post("/v1/keys", json={"tenant": "bad\nname"}, headers=admin.headers)
    assert bad.status_code == 422
    assert "tenant" in bad.json()["message"]
