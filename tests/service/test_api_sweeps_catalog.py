"""Sweeps, the catalog, health and metrics endpoints over HTTP."""

from __future__ import annotations

from service.store import JobStatus
from service.store.jobs import create_job, get_job, transition
from symopt_core.data import CORPORA
from symopt_core.models import MODEL_FAMILIES
from symopt_core.optim import RULES
from symopt_core.presets import PRESETS
from symopt_core.spec import load_spec

from .conftest import TINY_JOB
from .test_api_security import SWEEP


def test_sweep_lifecycle_with_trials_and_best(client, alice):
    created = client.post("/v1/sweeps", json={**SWEEP, "name": "lr"}, headers=alice.headers)
    assert created.status_code == 201
    sweep = created.json()
    assert sweep["status"] == "queued"
    assert sweep["study_name"] == f"symopt-{sweep['id']}"
    assert sweep["best"] is None
    store = client.app.state.store
    for number, (lr, loss) in enumerate([(0.01, 2.4), (0.05, 2.1), (0.09, None)]):
        with store.transaction() as session:
            job, _ = create_job(
                session=session,
                tenant_id=alice.id,
                spec=load_spec(TINY_JOB, {"optimizer.lr": lr}),
                sweep_id=sweep["id"],
                trial_number=number,
            )
            if loss is not None:
                transition(session=session, job=job, to=JobStatus.RUNNING)
                transition(session=session, job=job, to=JobStatus.SUCCEEDED, result={"best_val_loss": loss})
    read = client.get(f"/v1/sweeps/{sweep['id']}", headers=alice.headers).json()
    assert read["trials_finished"] == 2
    assert read["best"]["params"] == {"optimizer.lr": 0.05}
    assert read["best"]["objective"] == 2.1
    listed = client.get(f"/v1/sweeps/{sweep['id']}/trials", headers=alice.headers).json()
    assert [t["trial_number"] for t in listed["data"]] == [0, 1, 2]
    assert [t["status"] for t in listed["data"]] == ["succeeded", "succeeded", "queued"]
    cancelled = client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=alice.headers)
    assert cancelled.status_code == 202
    assert cancelled.json()["status"] == "cancelled"
    with store.transaction() as session:
        third = listed["data"][2]["job_id"]
        assert get_job(session=session, tenant_id=None, job_id=third).status == JobStatus.CANCELLED
    assert client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=alice.headers).status_code == 409
    assert client.get("/v1/sweeps?status=cancelled", headers=alice.headers).json()["count"] == 1


def test_invalid_sweeps_are_422_naming_the_path(client, alice):
    cases = [
        (
            {
                **SWEEP,
                "search_space": {"optimizer.learning_rate": {"type": "uniform", "low": 0.1, "high": 1}},
            },
            "search_space['optimizer.learning_rate']",
        ),
        (
            {**SWEEP, "search_space": {"steps": {"type": "int", "low": -5, "high": 10}}},
            "steps: Input should be greater",
        ),
        (
            {**SWEEP, "search_space": {"optimizer.lr": {"type": "log_uniform", "low": 0, "high": 1}}},
            "needs low > 0",
        ),
        ({**SWEEP, "presets": ["adamw", "lion"]}, "unknown preset 'lion'"),
        ({**SWEEP, "objective": "tokens_to_target"}, "needs target_loss"),
        ({**SWEEP, "sampler": "bayes"}, "'tpe', 'random', 'grid', 'cmaes' or 'gp'"),
        ({**SWEEP, "base": {**TINY_JOB, "model": {"family": "x"}}}, "valid families"),
    ]
    for body, message in cases:
        response = client.post("/v1/sweeps", json=body, headers=alice.headers)
        assert response.status_code == 422, body
        assert message in response.json()["message"], response.json()["message"]
    assert client.get("/v1/sweeps", headers=alice.headers).json()["count"] == 0


def test_catalog_comes_from_the_registries(client, alice):
    models = client.get("/v1/models", headers=alice.headers).json()["data"]
    assert [m["name"] for m in models] == list(MODEL_FAMILIES)
    qwen3 = next(m for m in models if m["name"] == "qwen3")
    assert set(qwen3["sizes"]) == {"tiny", "small", "0.6b"}
    assert {"n_layers", "d_model", "n_kv_heads"} <= {d["name"] for d in qwen3["dims"]}
    presets = client.get("/v1/presets", headers=alice.headers).json()["data"]
    assert [p["name"] for p in presets] == list(PRESETS)
    symmetric = next(p for p in presets if p["name"] == "symmetric")
    assert symmetric["rules"]["lm_head"] == "centered_row_norm"
    rules = client.get("/v1/rules", headers=alice.headers).json()["data"]
    assert [r["name"] for r in rules] == list(RULES)
    assert next(r for r in rules if r["name"] == "row_norm")["group"] == "S_m × O(n)"
    corpora = client.get("/v1/corpora", headers=alice.headers).json()["data"]
    assert [c["name"] for c in corpora] == [*CORPORA, "file:<path>"]


def test_health_readiness_metrics_and_openapi(client, alice):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"ready": True, "checks": {"database": "ok", "migrations": "head"}}
    client.post("/v1/jobs", json=TINY_JOB, headers=alice.headers)
    client.get("/v1/jobs/nope", headers=alice.headers)
    text = client.get("/metrics", headers=alice.headers).text
    assert 'symopt_http_requests_total{method="POST",route="/v1/jobs",status="201"} 1.0' in text
    assert 'symopt_http_requests_total{method="GET",route="/v1/jobs/{job_id}",status="404"} 1.0' in text
    assert 'symopt_jobs{status="queued"} 1.0' in text
    assert "symopt_http_request_duration_seconds_bucket" in text
    schema = client.get("/openapi.json").json()
    operation_ids = {op["operationId"] for item in schema["paths"].values() for op in item.values()}
    assert {
        "create_job",
        "list_jobs",
        "get_job",
        "cancel_job",
        "delete_job",
        "get_job_metrics",
        "stream_job_events",
        "get_job_logs",
        "create_sweep",
        "list_models",
        "readyz",
    } <= operation_ids
    assert client.get("/docs").status_code == 200
