"""`Job.result` as a `JobResult`: the scheduler's ingest builds it from a run's `result` event,
stores exactly what the run reported, and the API serves a stored row as it is."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import pytest

from service.scheduler.ingest import Pending, json_safe
from service.store.jobs import get_job
from service.store.results import JobResult
from symopt_core.training import Event, Result

from .conftest import Tenant
from .test_store import new_job

DIVERGED = Result(
    status="diverged",
    steps=12,
    tokens=3072,
    train_loss=4.5,
    val_loss=math.nan,
    best_val_loss=5.25,
    best_val_step=0,
    wall_time_s=1.5,
    tokens_per_s=2048.0,
    diverged_at=12,
    checkpoint=None,
    evals=[{"step": 0, "tokens": 0, "val_loss": 5.25}, {"step": 10, "tokens": 2560, "val_loss": math.inf}],
)
# What an agent's run stores (store/agents.py's run_result): other keys, some of Result's absent.
AGENT_ROW = {
    "val_loss": "nan",
    "best_val_loss": 2.5,
    "evals": [{"step": 5, "tokens": 640, "val_loss": 2.5}, {"step": 10, "tokens": 1280, "val_loss": "nan"}],
    "steps": 10,
    "tokens": 1280,
    "executor": "agents",
    "wall_time_s": None,
    "objective": 2.5,
}


def test_ingest_stores_exactly_what_the_run_reported() -> None:
    pending = Pending()
    pending.add_event("job", 1, Event("result", 12, DIVERGED.to_dict()).to_dict())
    outcome = pending.outcomes["job"]
    assert isinstance(outcome.result, JobResult)
    assert (outcome.status, outcome.diverged_at) == ("diverged", 12)
    assert outcome.result.to_json() == json_safe(asdict(DIVERGED))  # non-finite losses as strings
    assert outcome.result.to_json()["val_loss"] == "nan"
    assert math.isnan(outcome.result.val_loss or 0.0)


@pytest.mark.parametrize(
    "row", [AGENT_ROW, {"status": "succeeded"}, {"steps": 3, "from_a_newer_worker": [1]}]
)
def test_a_stored_row_reads_back_with_the_keys_it_has(row: dict[str, Any]) -> None:
    assert JobResult.model_validate(row).to_json() == row


def test_an_event_the_scheduler_cannot_read_fails_the_attempt_naming_the_field() -> None:
    pending = Pending()
    pending.add_event("job", 2, {"kind": "result", "step": "12", "data": {}})
    outcome = pending.outcomes["job"]
    assert (outcome.attempt, outcome.status) == (2, "failed")
    assert "Invalid event step: '12'" in str(outcome.error)
    pending.add_event("other", 1, {"kind": "result", "step": 1, "data": {"steps": "many"}})
    assert "steps" in str(pending.outcomes["other"].error)


def test_the_api_serves_a_stored_result_as_it_is(client, alice: Tenant) -> None:
    store = client.app.state.store
    job_id = new_job(store, alice.id)
    with store.transaction() as session:
        get_job(session=session, tenant_id=None, job_id=job_id).result = AGENT_ROW
    response = client.get(f"/v1/jobs/{job_id}", headers=alice.headers)
    assert response.status_code == 200, response.text
    assert response.json()["result"] == AGENT_ROW
