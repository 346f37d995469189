"""Operator limits and tenant quotas (issue 26, item 2): a spec that asks for more than the service
allows is a 422 that states the limit, a tenant over a quota gets a 429 that names it (and the
client reports it at once instead of retrying), on SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.client.errors import RateLimitedError
from service.client.http import Transport
from service.settings import Settings
from service.store.models import Job, utcnow
from tests.specs import tiny_job

from .conftest import Tenant, make_tenant

TINY = tiny_job(steps=20)


@pytest.fixture
def limited(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        database_url=database_url,
        home=tmp_path / "home",
        max_tokens_per_step=8192,
        max_job_tokens=10_000_000,
        max_model_params=50_000_000,
        max_checkpoint_bytes=100_000_000,
        max_job_cpus=8,
        max_job_gpus=2,
        quota_queued_jobs=2,
        quota_active_jobs=3,
        quota_gpu_hours=1.0,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def tenant(client: TestClient, name: str) -> Tenant:
    app: Any = client.app
    return make_tenant(app.state.store, name)


def with_(**changes: Any) -> dict[str, Any]:
    spec = {key: dict(value) if isinstance(value, dict) else value for key, value in TINY.items()}
    for path, value in changes.items():
        section, _, field = path.partition("__")
        if field:
            spec[section] = {**spec.get(section, {}), field: value}
        else:
            spec[section] = value
    return spec


@pytest.mark.parametrize(
    ("changes", "states"),
    [
        ({"model": {"family": "qwen3", "d_model": 999_996, "n_layers": 1 << 20, "max_seq_len": 64}},
         "parameters; this service allows at most 50,000,000"),
        ({"batch__size": 256, "data__seq_len": 64},
         "16,384 tokens per batch; this service allows at most 8,192"),
        ({"eval__batch_size": 512}, "eval.batch_size × data.seq_len asks for"),
        ({"steps": 100_000}, "tokens; this service allows at most 10,000,000"),
        ({"model": {"family": "qwen3", "size": "tiny", "d_model": 512, "n_heads": 8, "n_kv_heads": 2},
          "checkpoint__keep": 999}, "checkpoints of"),
        ({"resources": {"cpus": 4096}},
         "resources.cpus × ranks asks for 4,096 CPUs; this service allows at most 8"),
        ({"resources": {"gpus": 4, "workers": 4}}, "resources.gpus asks for 4 GPUs"),
    ],
)  # fmt: skip
def test_a_spec_over_a_limit_is_a_422_that_states_it(
    limited: TestClient, changes: dict[str, Any], states: str
):
    alice = tenant(limited, "alice")
    response = limited.post("/v1/jobs", json=with_(**changes), headers=alice.headers)
    assert response.status_code == 422, response.text
    assert states in response.text
    assert limited.get("/v1/jobs", headers=alice.headers).json()["count"] == 0  # nothing was created
    sweep = {"base": with_(**changes), "search_space": {"optimizer.lr": {"type": "log_uniform", "low": 1e-3,
             "high": 1e-1}}, "n_trials": 2}  # fmt: skip
    assert limited.post("/v1/sweeps", json=sweep, headers=alice.headers).status_code == 422


def test_schema_bounds_the_unbounded_fields(limited: TestClient):
    alice = tenant(limited, "alice")
    for changes in ({"eval__batch_size": 10**12}, {"checkpoint__keep": 10**9}):
        response = limited.post("/v1/jobs", json=with_(**changes), headers=alice.headers)
        assert response.status_code == 422, changes
        assert "less than or equal" in response.text


def test_quotas_are_429s_that_name_them_and_the_client_does_not_retry(limited: TestClient):
    alice, bob = tenant(limited, "alice"), tenant(limited, "bob")
    for _ in range(2):
        assert limited.post("/v1/jobs", json=TINY, headers=alice.headers).status_code == 201
    third = limited.post("/v1/jobs", json=TINY, headers=alice.headers)
    assert third.status_code == 429
    assert third.json()["detail"].startswith("Quota queued_jobs: this tenant has 2 jobs waiting")
    assert limited.post("/v1/jobs", json=TINY, headers=bob.headers).status_code == 201  # bob's own quota
    sweep = {
        "base": TINY,
        "search_space": {"optimizer.lr": {"type": "log_uniform", "low": 1e-3, "high": 0.1}},
    }
    assert limited.post("/v1/sweeps", json=sweep, headers=alice.headers).status_code == 429

    sent: list[str] = []

    class Counting(TestClient):
        def request(self, method: str, url: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            sent.append(f"{method} {url}")
            return super().request(method, url, **kwargs)

    transport = Transport("http://testserver", alice.key, retries=6)
    transport.http = Counting(limited.app, headers={"Authorization": f"Bearer {alice.key}"})
    with pytest.raises(RateLimitedError, match="Quota queued_jobs"):
        transport.request("POST", "/v1/jobs", json=TINY)
    assert sent == ["POST /v1/jobs"]  # reported at once: a used-up quota is not retried


def test_gpu_hours_and_active_jobs(limited: TestClient):
    alice = tenant(limited, "alice")
    app: Any = limited.app
    with app.state.store.transaction() as session:  # a finished 1-GPU job that ran for 2 hours
        now = utcnow()
        session.add(Job(tenant_id=alice.id, spec=TINY, status="succeeded", gpus=1,
                        started_at=now - timedelta(hours=2), finished_at=now))  # fmt: skip
    response = limited.post("/v1/jobs", json=TINY, headers=alice.headers)
    assert response.status_code == 429
    assert "Quota gpu_hours: this tenant's jobs have used 2.0 GPU-hours of 1" in response.json()["detail"]

    carol = tenant(limited, "carol")
    with app.state.store.transaction() as session:  # three running jobs: the active quota is 3
        for _ in range(3):
            session.add(Job(tenant_id=carol.id, spec=TINY, status="running", started_at=utcnow()))
    response = limited.post("/v1/jobs", json=TINY, headers=carol.headers)
    assert response.status_code == 429
    assert response.json()["detail"].startswith("Quota active_jobs: this tenant has 3 queued, running")
