"""A tenant's hostile input (issue 26): invalid specs are rate-limited before they are validated,
the validation one spec may ask for is bounded, and malformed input or out-of-range queries are
422s that name the field, never a 500 or a 503 that a client would retry as an outage."""

from __future__ import annotations

import time

import pytest
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient

from benchmarks.abusive_tenant import AT_CAP_CHOICES, expensive_sweep
from service.api import create_app
from service.api.params import MAX_EVENT_ID, MAX_STEP
from service.settings import Settings
from service.sweep_spec import MAX_JOB_CHECKS

from .conftest import TINY_JOB, make_tenant
from .test_api_security import STUDY, SWEEP

# Per route: an invalid body, and a valid one.
SUBMISSIONS = {
    "job": ("/v1/jobs", {**TINY_JOB, "steps": 0}, TINY_JOB),
    "sweep": ("/v1/sweeps", {**SWEEP, "n_trials": 0}, SWEEP),
    "study": ("/v1/studies", {**STUDY, "seeds": 0}, STUDY),
}


@pytest.mark.parametrize("kind", SUBMISSIONS)
def test_invalid_submissions_take_rate_limit_tokens(database_url, tmp_path, kind):
    settings = Settings(database_url=database_url, home=tmp_path, job_rate_per_minute=6, job_rate_burst=3)
    route, invalid, valid = SUBMISSIONS[kind]
    with TestClient(create_app(settings)) as client:
        alice = make_tenant(client.app.state.store, "alice")
        bob = make_tenant(client.app.state.store, "bob")
        codes = [client.post(route, json=invalid, headers=alice.headers).status_code for _ in range(5)]
        assert codes == [422, 422, 422, 429, 429]
        # The invalid ones spent alice's burst: her valid spec waits too, bob's does not.
        assert client.post(route, json=valid, headers=alice.headers).status_code == 429
        assert client.post(route, json=valid, headers=bob.headers).status_code == 201


def test_a_search_space_past_the_expansion_cap_is_a_prompt_422_naming_the_cap(client, alice):
    body = expensive_sweep()  # issue 26's 53 KB sweep: 45,000 job specs, 3-8 s of CPU to reject before
    began = time.perf_counter()
    response = client.post("/v1/sweeps", json=body, headers=alice.headers)
    elapsed = time.perf_counter() - began
    assert response.status_code == 422
    message = response.json()["message"]
    assert "make 45015 jobs to check" in message  # 5 presets + 5 x (9,000 choices + 2 bounds)
    assert f"at most {MAX_JOB_CHECKS} are accepted" in message
    assert elapsed < 1.0, elapsed


def test_a_search_space_at_the_cap_is_checked_path_by_path(client, alice):
    response = client.post("/v1/sweeps", json=expensive_sweep(AT_CAP_CHOICES), headers=alice.headers)
    assert response.status_code == 422
    assert "search_space['steps'] = -5 makes an invalid job" in response.json()["message"]


def test_a_study_is_capped_over_all_its_candidates(client, alice):
    choices = {"type": "categorical", "choices": [i / 1000 for i in range(500)]}
    tuning = {**STUDY["tuning"], "search_space": {"optimizer.weight_decay": choices}}
    response = client.post("/v1/studies", json={**STUDY, "tuning": tuning}, headers=alice.headers)
    assert response.status_code == 422
    message = response.json()["message"]
    assert "make 1002 jobs to check" in message  # 2 candidates x (the base job + 500 choices)
    assert f"at most {MAX_JOB_CHECKS} are accepted" in message
    assert client.get("/v1/studies", headers=alice.headers).json()["count"] == 0


@pytest.mark.parametrize("optimizer", [[1, 2], 5, "adamw"], ids=["array", "number", "string"])
def test_a_study_whose_base_optimizer_is_no_mapping_is_422_naming_it(client, alice, optimizer):
    body = {**STUDY, "base": {**STUDY["base"], "optimizer": optimizer}}
    response = client.post("/v1/studies", json=body, headers=alice.headers)
    assert response.status_code == 422, response.text[:300]
    assert [problem["loc"] for problem in response.json()["detail"]] == [["base", "optimizer"]]


# Each integer query parameter just past the column it is compared with: int4 steps on PostgreSQL,
# int8 event ids everywhere (2^63 overflowed SQLite's driver as a 500).
BEYOND = [
    ("metrics", "since_step", MAX_STEP + 1),
    ("metrics", "since_step", 2**63),
    ("logs", "after_id", MAX_EVENT_ID + 1),
    ("events", "after_id", MAX_EVENT_ID + 1),
    ("events", "since_step", MAX_STEP + 1),
]


def test_integer_queries_beyond_the_database_range_are_422(client, alice):
    job = client.post("/v1/jobs", json=TINY_JOB, headers=alice.headers).json()["id"]
    answers = []
    for route, name, value in BEYOND:
        response = client.get(f"/v1/jobs/{job}/{route}", params={name: value}, headers=alice.headers)
        answers.append(response.status_code)
        if response.status_code == 422:
            assert response.json()["detail"][0]["loc"] == ["query", name]
    assert answers == [422] * len(BEYOND)
    # The bounds themselves reach the database, and find nothing after them.
    at_step = client.get(f"/v1/jobs/{job}/metrics", params={"since_step": MAX_STEP}, headers=alice.headers)
    assert at_step.status_code == 200
    assert at_step.json()["series"] == []
    at_id = client.get(f"/v1/jobs/{job}/logs", params={"after_id": MAX_EVENT_ID}, headers=alice.headers)
    assert at_id.status_code == 200
    assert at_id.json()["data"] == []


def test_a_key_out_of_tokens_gets_its_429_before_its_body_is_read(database_url, tmp_path):
    settings = Settings(database_url=database_url, home=tmp_path, job_rate_per_minute=0.6, job_rate_burst=1)
    deep = b"[" * 100 + b"]" * 100  # BodyLimits reads this body and answers 422 (nested too deep)
    with TestClient(create_app(settings)) as client:
        alice = make_tenant(client.app.state.store, "alice")
        bob = make_tenant(client.app.state.store, "bob")
        headers = {**alice.headers, "content-type": "application/json"}
        assert client.post("/v1/sweeps", content=deep, headers=headers).status_code == 422  # no token taken
        assert client.post("/v1/sweeps", json={**SWEEP, "n_trials": 0}, headers=headers).status_code == 422
        answers = [client.post(route, content=deep, headers=headers) for route in ("/v1/sweeps", "/v1/jobs")]
        assert [a.status_code for a in answers] == [429, 429]  # the gate: the body was never read
        assert answers[0].json()["detail"].startswith("Too many sweep submissions for this API key")
        assert answers[1].json()["detail"].startswith("Too many job submissions for this API key")
        assert all(int(a.headers["retry-after"]) >= 1 for a in answers)
        # A forged key naming bob's key id is a 401 and spends none of his tokens: the gate only
        # reads a bucket, and the route takes a token once the key is authenticated.
        forged = {"Authorization": f"Bearer sym_{bob.headers['Authorization'].split('_')[1]}_forged"}
        assert [client.post("/v1/jobs", json=TINY_JOB, headers=forged).status_code for _ in range(3)] == [
            401
        ] * 3
        assert client.post("/v1/jobs", json=TINY_JOB, headers=bob.headers).status_code == 201
        assert client.get("/healthz").status_code == 200  # reads are not gated


def test_large_sweeps_are_checked_in_the_worker_process_with_the_same_answers(database_url, tmp_path):
    from service.api.params import validated
    from service.api.spec_checks import INLINE_JOB_CHECKS, SpecChecker
    from service.study_spec import StudySpec
    from service.sweep_spec import SweepSpec

    valid = {
        **SWEEP,
        "search_space": {"optimizer.weight_decay": {"type": "categorical", "choices": list(range(60))}},
    }
    invalid = expensive_sweep(AT_CAP_CHOICES)
    study = {**STUDY, "tuning": {**STUDY["tuning"], "search_space": valid["search_space"]}}
    checker = SpecChecker()
    try:
        assert SweepSpec.model_validate(valid).job_checks > INLINE_JOB_CHECKS
        assert checker.validated(SweepSpec, valid) == validated(SweepSpec, valid)
        assert checker.validated(StudySpec, study) == validated(StudySpec, study)
        assert checker._pool is not None  # they went to the worker
        with pytest.raises(RequestValidationError) as in_worker:
            checker.validated(SweepSpec, invalid)
        with pytest.raises(RequestValidationError) as inline:
            validated(SweepSpec, invalid)
        assert in_worker.value.errors() == located_like(inline.value.errors())
        # A worker that dies (killed, out of memory) is replaced, and the check still answers.
        for process in list(checker._pool._processes.values()):
            process.kill()
            process.join(timeout=30)
        assert checker.validated(SweepSpec, valid) == validated(SweepSpec, valid)
    finally:
        checker.close()


def located_like(errors):
    return [{"loc": e["loc"], "msg": e["msg"], "type": e["type"]} for e in errors]
