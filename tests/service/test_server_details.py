"""What a tenant reads says what to fix and nothing of the server (issue 26, item 9; issue 27,
item 8): no absolute path of the operator's roots or of symlink targets in errors and logs, one
error shape for every status, a malformed body located by line and column, and a 405 or an
OPTIONS that names every method of a path."""

from __future__ import annotations

import sys
from pathlib import Path

from fastapi.testclient import TestClient

from service.api import create_app
from service.redaction import SOURCE_ROOT, PathRedactor
from service.scheduler.ingest import Pending
from service.settings import Settings

from .conftest import TINY_JOB, make_tenant


def linked_roots(tmp_path: Path) -> Settings:
    """Settings whose model root is a symlink: its target must not show either."""
    (tmp_path / "disk" / "models").mkdir(parents=True)
    (tmp_path / "models").symlink_to(tmp_path / "disk" / "models")
    (tmp_path / "data").mkdir()
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'symopt.db'}",
        home=tmp_path / "home",
        model_root=tmp_path / "models",
        data_dir=tmp_path / "data",
    )


def test_a_spec_error_names_the_model_root_by_placeholder(tmp_path):
    with TestClient(create_app(linked_roots(tmp_path))) as client:
        alice = make_tenant(client.app.state.store, "alice")
        spec = {**TINY_JOB, "model": {"family": "hf", "path": "absent"}}
        response = client.post("/v1/jobs", json=spec, headers=alice.headers)
        assert response.status_code == 422
        message = response.json()["message"]
        assert "No model directory 'absent'" in message
        assert "<models>" in message
        assert str(tmp_path) not in response.text


def test_job_errors_and_logs_are_stored_without_server_paths(tmp_path):
    settings = linked_roots(tmp_path)
    pending = Pending(redact=PathRedactor.for_settings(settings))
    target = tmp_path / "disk" / "models" / "gpt" / "config.json"  # the symlink's target
    traceback = [
        f'  File "{SOURCE_ROOT}/worker/run.py", line 70, in run',
        f'  File "{sys.prefix}/lib/python3.11/site-packages/torch/nn/modules/module.py", line 1',
        f"FileNotFoundError: {target}",
    ]
    error = {"type": "FileNotFoundError", "message": f"{tmp_path / 'data' / 'a.txt'}", "traceback": traceback}
    pending.add_event("job", 1, {"kind": "error", "step": 3, "data": error})
    checkpoint = {"path": str(settings.home / "ck")}
    pending.add_event("log", 1, {"kind": "checkpoint", "step": 3, "data": checkpoint})
    pending.crashed("crash", 1, f"worker died reading {tmp_path / 'models' / 'gpt'}")
    stored = [
        pending.outcomes["job"].error,
        *[event.message for events in pending.events.values() for event in events],
        str([event.data for events in pending.events.values() for event in events]),
        pending.outcomes["crash"].error,
    ]
    assert all(str(tmp_path) not in text and sys.prefix not in text for text in stored), stored
    assert "FileNotFoundError: <data>/a.txt" in stored[0]
    assert "<symopt>/worker/run.py" in stored[0]
    assert "<python>/lib/python3.11/site-packages/torch" in stored[0]
    assert "FileNotFoundError: <models>/gpt/config.json" in stored[0]  # the target, by its link's name
    assert stored[-1] == "worker died reading <models>/gpt"


def test_every_error_has_one_shape(client, alice):
    answers = {
        401: client.get("/v1/jobs"),
        404: client.get("/v1/jobs/job_absent", headers=alice.headers),
        405: client.put("/v1/jobs", headers=alice.headers),
        413: client.post("/v1/jobs", content=b"x" * (2 << 20), headers=alice.headers),
        422: client.post("/v1/jobs", json={**TINY_JOB, "steps": 0}, headers=alice.headers),
    }
    for status, response in answers.items():
        assert response.status_code == status
        body = response.json()
        assert isinstance(body["message"], str), (status, body)
        assert body["message"], (status, body)
        assert "detail" in body
    assert isinstance(answers[422].json()["detail"], list)


def test_a_malformed_body_is_located_by_line_and_column(client, alice):
    headers = {**alice.headers, "content-type": "application/json"}
    response = client.post("/v1/jobs", content=b'{"name": "x",\n "steps": }', headers=headers)
    assert response.status_code == 422
    assert response.json()["message"] == (
        "body: not valid JSON: Expecting value at line 2, column 11 (character 24)"
    )


def test_options_and_405_name_every_method_of_the_path(client, alice):
    expected = {
        "/v1/jobs": "GET, OPTIONS, POST",
        "/v1/jobs/job_x": "DELETE, GET, OPTIONS",
        "/v1/jobs/job_x/checkpoint": "GET, OPTIONS, PUT",
        "/healthz": "GET, OPTIONS",
    }
    for path, allow in expected.items():
        response = client.options(path)
        assert (response.status_code, response.headers["allow"]) == (204, allow), path
    refused = client.put("/v1/jobs", headers=alice.headers)
    assert refused.headers["allow"] == "GET, OPTIONS, POST"
    assert refused.json()["message"] == "PUT is not allowed on /v1/jobs; allowed: GET, OPTIONS, POST"


def test_the_schema_declares_the_statuses_a_list_accepts(client):
    schema = client.get("/openapi.json").json()
    parameters = schema["paths"]["/v1/jobs"]["get"]["parameters"]
    status = next(p for p in parameters if p["name"] == "status")
    pattern = status["schema"].get("pattern") or status["schema"]["anyOf"][0]["pattern"]
    assert "queued" in pattern
    assert "succeeded" in pattern
