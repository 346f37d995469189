"""Input limits over HTTP: every hostile body, URL and name gets a 4xx that says what to fix, and
nothing is stored. Runs on SQLite and on PostgreSQL (PostgreSQL is the stricter one: it rejects
NUL in text and NaN in jsonb, so a value that slips past validation shows up there as a 5xx)."""

from __future__ import annotations

import json

import pytest

from .conftest import TINY_JOB
from .test_api_security import STUDY, SWEEP

ROUTES = {"job": "/v1/jobs", "sweep": "/v1/sweeps", "study": "/v1/studies"}
BODIES = {"job": TINY_JOB, "sweep": SWEEP, "study": STUDY}


def stored(client, tenant) -> dict[str, int]:
    """How many jobs, sweeps and studies the tenant has."""
    return {kind: client.get(route, headers=tenant.headers).json()["count"] for kind, route in ROUTES.items()}


NOTHING = {"job": 0, "sweep": 0, "study": 0}


def post_raw(client, tenant, route: str, content: bytes):
    return client.post(route, content=content, headers={**tenant.headers, "content-type": "application/json"})


def with_job(kind: str, **job_fields) -> dict:
    """The kind's valid body with fields of its job spec (the body itself, or its `base`) replaced."""
    body = dict(BODIES[kind])
    if kind == "job":
        return {**body, **job_fields}
    return {**body, "base": {**body["base"], **job_fields}}


@pytest.mark.parametrize("kind", ROUTES)
def test_an_oversized_body_is_413_on_every_submit_route(client, alice, kind):
    body = with_job(kind, name="big")
    body["padding"] = "x" * 70_000
    response = client.post(ROUTES[kind], json=body, headers=alice.headers)
    assert response.status_code == 413
    assert "at most 65536 bytes" in response.json()["detail"]
    assert stored(client, alice) == NOTHING


@pytest.mark.parametrize("kind", ROUTES)
def test_deeply_nested_json_is_422_not_a_crash(client, alice, kind):
    # 30 000 levels fit in 64 KiB and are deeper than Python's recursion limit.
    for depth in (100, 5_000, 30_000):
        nested = "[" * depth + "]" * depth
        response = post_raw(client, alice, ROUTES[kind], f'{{"name": "deep", "model": {nested}}}'.encode())
        assert response.status_code == 422, (depth, response.text[:300])
        assert response.json()["message"]  # a spec error at depth 100, the nesting cap beyond it
    assert stored(client, alice) == NOTHING


def test_brackets_inside_strings_do_not_count_as_nesting(client, alice):
    response = client.post("/v1/jobs", json={**TINY_JOB, "name": "[{" * 90}, headers=alice.headers)
    assert response.status_code == 201, response.text[:300]


def test_nested_json_inside_free_form_options_is_422(client, alice):
    options = '{"a": ' * 2_000 + "{}" + "}" * 2_000  # json.dumps itself recurses too deep on it
    body = json.dumps(with_job("job", data={"corpus": "modular", "options": "OPTIONS"}))
    response = post_raw(client, alice, "/v1/jobs", body.replace('"OPTIONS"', options).encode())
    assert response.status_code == 422
    assert "deeper than 64 levels" in response.json()["message"]
    assert stored(client, alice) == NOTHING


HUGE_NUMBERS = [
    ({"steps": 10**12}, "steps", "less than or equal to 100000000"),
    ({"steps": 10**400}, "steps", "less than or equal to 100000000"),
    ({"seed": 2**63}, "seed", "less than or equal to 2147483647"),
    ({"seed": -1}, "seed", "greater than or equal to 0"),
    ({"batch": {"size": 10**9}}, "batch", "less than or equal to 65536"),
    ({"model": {"family": "qwen3", "n_layers": 10**9}}, "model", "beyond what symopt trains"),
]


@pytest.mark.parametrize("kind", ROUTES)
def test_huge_numbers_are_422_with_the_bound(client, alice, kind):
    for fields, loc, message in HUGE_NUMBERS:
        response = client.post(ROUTES[kind], json=with_job(kind, **fields), headers=alice.headers)
        assert response.status_code == 422, (fields, response.text[:300])
        payload = response.json()
        assert message in payload["message"], fields
        assert loc in json.dumps(payload["detail"]), fields
    assert stored(client, alice) == NOTHING


@pytest.mark.parametrize("kind", ROUTES)
def test_nan_and_infinity_literals_are_422(client, alice, kind):
    for literal in ("NaN", "Infinity", "-Infinity"):
        body = json.dumps(with_job(kind, optimizer={"lr": 0.5})).replace("0.5", literal)
        response = post_raw(client, alice, ROUTES[kind], body.encode())
        assert response.status_code == 422, (literal, response.text[:300])
    assert stored(client, alice) == NOTHING


def test_the_study_and_sweep_seeds_are_bounded_too(client, alice):
    bad = [
        ("/v1/sweeps", {**SWEEP, "seed": 2**40}),
        ("/v1/studies", {**STUDY, "tuning": {**STUDY["tuning"], "seed": -5}}),
        ("/v1/studies", {**STUDY, "seeds": [1, 2**40]}),
        ("/v1/studies", {**STUDY, "bootstrap_seed": 2**33}),
    ]
    for route, body in bad:
        response = client.post(route, json=body, headers=alice.headers)
        assert response.status_code == 422, (route, response.text[:300])
        message = response.json()["message"]
        assert "2147483647" in message or "greater than or equal to 0" in message
    assert stored(client, alice) == NOTHING


TRAVERSALS = [
    "file:../../etc/passwd",
    "file:books/../../../etc/passwd",
    "file:/etc/passwd",
    "file:~/.ssh/id_rsa",
    "file:..\\..\\windows\\win.ini",
    "file:C:/windows/win.ini",
    "file:%2e%2e/%2e%2e/etc/passwd",
    "file:\u2024\u2024/\u2024\u2024/etc/passwd",  # ONE DOT LEADER twice: ".." after NFKC
    "file:books/\x00/passwd",
    "file:",
]


@pytest.mark.parametrize("kind", ROUTES)
def test_path_traversal_in_a_corpus_path_is_422(client, alice, kind):
    for corpus in TRAVERSALS:
        response = client.post(
            ROUTES[kind], json=with_job(kind, data={"corpus": corpus}), headers=alice.headers
        )
        assert response.status_code == 422, (corpus, response.text[:300])
        assert "data" in json.dumps(response.json()["detail"]), corpus
    assert stored(client, alice) == NOTHING


ACCEPTED_NAMES = ["résumé-täst", "日本語のジョブ", "عربى", "🚀 sweep 🎉", "a'b\"c<script>", "x" * 80]


@pytest.mark.parametrize("kind", ROUTES)
def test_unicode_names_are_stored_and_read_back_exactly(client, alice, kind):
    ids = []
    for name in ACCEPTED_NAMES:
        response = client.post(ROUTES[kind], json={**BODIES[kind], "name": name}, headers=alice.headers)
        assert response.status_code == 201, (name, response.text[:300])
        ids.append(response.json()["id"])
        fetched = client.get(f"{ROUTES[kind]}/{ids[-1]}", headers=alice.headers).json()
        assert fetched["name"] == name
    listed = client.get(ROUTES[kind], headers=alice.headers).json()["data"]  # newest first
    assert [item["name"] for item in listed] == ACCEPTED_NAMES[::-1]
    if kind == "job":  # jobs are filtered by name too
        for name, job_id in zip(ACCEPTED_NAMES, ids, strict=True):
            by_name = client.get("/v1/jobs", params={"name": name}, headers=alice.headers).json()
            assert [item["id"] for item in by_name["data"]] == [job_id], name


REJECTED_NAMES = [
    ("nul\x00byte", "U+0000"),
    ("line\nbreak", "U+000A"),
    ("bell\x07", "U+0007"),
    ("del\x7f", "U+007F"),
    ("evil\u202egnp.exe", "U+202E"),  # RIGHT-TO-LEFT OVERRIDE
    ("isolate\u2066x", "U+2066"),
]


@pytest.mark.parametrize("kind", ROUTES)
def test_control_characters_and_bidi_overrides_in_names_are_422(client, alice, kind):
    for name, code in REJECTED_NAMES:
        response = client.post(ROUTES[kind], json={**BODIES[kind], "name": name}, headers=alice.headers)
        assert response.status_code == 422, (code, response.text[:300])
        assert code in response.json()["message"]
    assert stored(client, alice) == NOTHING


@pytest.mark.parametrize("kind", ROUTES)
def test_a_lone_surrogate_escape_is_422(client, alice, kind):
    # JSON may spell a lone surrogate (\ud800); no database can store it and UTF-8 cannot encode it.
    body = json.dumps({**BODIES[kind], "name": "PLACEHOLDER"}).replace("PLACEHOLDER", "a\\ud800b")
    response = post_raw(client, alice, ROUTES[kind], body.encode())
    assert response.status_code == 422, response.text[:300]
    assert "unicode string" in response.json()["message"]
    assert stored(client, alice) == NOTHING


def test_invalid_utf8_in_a_body_is_422(client, alice):
    body = json.dumps(TINY_JOB).replace("tiny", "ti\udcffny", 1).encode("utf-8", "surrogateescape")
    assert b"\xff" in body
    response = post_raw(client, alice, "/v1/jobs", body)
    assert response.status_code == 422, response.text[:300]
    assert "not UTF-8 (byte 0xFF at offset" in response.json()["message"]
    assert stored(client, alice) == NOTHING


def test_names_longer_than_their_bound_are_422(client, alice):
    for route, body, bound in [
        ("/v1/jobs", {**TINY_JOB, "name": "x" * 201}, 200),
        ("/v1/sweeps", {**SWEEP, "name": "x" * 151}, 150),
        ("/v1/studies", {**STUDY, "name": "x" * 81}, 80),
    ]:
        response = client.post(route, json=body, headers=alice.headers)
        assert response.status_code == 422
        assert f"at most {bound} characters" in response.json()["message"]
    assert stored(client, alice) == NOTHING


def test_control_characters_in_urls_are_400(client, alice):
    for url in [
        "/v1/jobs/a%00b",
        "/v1/jobs/a%0Ab",
        "/v1/sweeps/%1b[31m",
        "/v1/jobs?name=a%00b",
        "/v1/studies?status=%7f",
    ]:
        response = client.get(url, headers=alice.headers)
        assert response.status_code == 400, (url, response.text[:300])
        assert "control character" in response.json()["detail"]


def test_path_traversal_in_an_object_id_is_404(client, alice):
    job = client.post("/v1/jobs", json=TINY_JOB, headers=alice.headers).json()
    for url in [f"/v1/jobs/..%2F{job['id']}", f"/v1/jobs/{job['id']}%2F..%2F..", "/v1/jobs/%2e%2e"]:
        response = client.get(url, headers=alice.headers)
        assert response.status_code == 404, (url, response.status_code)
