"""The Python client against a real `symopt serve` (uvicorn on a loopback port, SQLite, local Ray):
jobs submitted, followed live, read back, cancelled; sweeps; every error kind with the server's
message. The client is the only way the tests talk to the service, except where a test checks the
client against the raw REST body."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
import yaml

from service.client import (
    AuthError,
    Client,
    ConflictError,
    CredentialsError,
    NotFoundError,
    PayloadTooLargeError,
    ValidationError,
    compare,
    plot_comparison,
)
from symopt_core.spec import JobSpec

from ..specs import tiny_job
from ..waiting import LIMIT
from .live import ServiceTenant, SharedService

TINY = tiny_job(name="client-tiny", checkpoint={"every": 15, "keep": 2}, seed=2)


@pytest.fixture
def service(shared_service: SharedService) -> ServiceTenant:
    """A tenant of its own in the worker's shared service."""
    return shared_service.tenant()


@pytest.fixture
def client(service: ServiceTenant) -> Iterator[Client]:
    with Client(service.url, service.api_key) as connected:
        yield connected


def test_a_job_submitted_from_a_dict_runs_and_reads_back_like_the_rest_api(
    client: Client, service: ServiceTenant, capsys: pytest.CaptureFixture[str]
) -> None:
    job = client.submit(TINY, overrides={"optimizer.preset": "adamw", "optimizer.lr": "3e-3"})
    assert job.status == "queued"
    assert job.spec["optimizer"] == {**job.spec["optimizer"], "preset": "adamw", "lr": 3e-3}
    assert job.wait(timeout=LIMIT, progress="lines") is job
    assert job.status == "succeeded", job.data["error"]
    shown = capsys.readouterr().err.splitlines()
    assert any(line.startswith("step 30/30 succeeded") and "train_loss=" in line for line in shown), shown

    raw = httpx.get(
        f"{service.url}/v1/jobs/{job.id}/metrics",
        params={"limit": 100_000},
        headers={"Authorization": f"Bearer {service.api_key}"},
    ).json()
    expected = sorted(
        (series["name"], step, float(value))
        for series in raw["series"]
        for step, value in zip(series["steps"], series["values"], strict=True)
    )
    rows = job.metrics()
    assert sorted((r["name"], r["step"], r["value"]) for r in rows) == expected
    assert [r["step"] for r in job.metrics(["train_loss"])] == [5, 10, 15, 20, 25, 30]
    assert [r["step"] for r in job.metrics(["train_loss"], since_step=20)] == [25, 30]
    frame = job.metrics_frame(["train_loss", "val_loss"])
    assert list(frame.index) == [0, 5, 10, 15, 20, 25, 30]  # the first evaluation is before step 1
    assert frame["val_loss"].dropna().index.tolist() == [0, 15, 30]
    assert frame["train_loss"].dropna().index.tolist() == [5, 10, 15, 20, 25, 30]

    streamed = list(job.events())
    assert streamed[-1][0] == "end"
    assert any(kind == "metrics" for kind, _ in streamed)
    assert [e["data"]["status"] for kind, e in streamed if kind == "event" and e["kind"] == "status"][:2] == [
        "queued",
        "running",
    ]

    lines = [line["message"] for line in job.logs()]
    assert lines[0].startswith("qwen3 tiny: ")
    assert "step 30: val_loss" in " ".join(lines)
    assert lines[-1].startswith("succeeded after 30 steps")
    assert [line["message"] for line in job.logs(after_id=job.logs()[0]["id"])] == lines[1:]

    saved = job.download_checkpoint(service.home)
    assert saved.name == f"{job.id}-step_000000030.pt"
    checkpoint = torch.load(saved, map_location="cpu", weights_only=True)
    assert checkpoint["step"] == 30
    assert checkpoint["spec"]["optimizer"]["lr"] == 3e-3


def test_specs_come_as_yaml_paths_or_jobspecs_and_list_newest_first(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({**TINY, "name": "from-yaml"}))
    from_yaml = client.submit(path, overrides={"steps": "10", "eval.every": 10})
    from_model = client.submit(JobSpec.model_validate({**TINY, "name": "from-model", "steps": 10}))
    assert from_yaml.spec["steps"] == 10
    assert from_yaml.name == "from-yaml"
    listed = client.jobs(status=["queued", "running", "succeeded"], limit=500)
    assert [job.id for job in listed].index(from_model.id) < [job.id for job in listed].index(from_yaml.id)
    assert [job.id for job in client.jobs(name="from-yaml")] == [from_yaml.id]
    for job in (from_yaml, from_model):
        assert job.wait(timeout=LIMIT, progress=False).status == "succeeded"


def test_cancel_stops_a_running_job(client: Client) -> None:
    job = client.submit({**TINY, "name": "long", "steps": 20_000})
    for state in job.follow(timeout=LIMIT):
        if state.step > 0:
            break
    job.cancel()
    assert job.status in ("cancelling", "cancelled")
    assert job.wait(timeout=LIMIT, progress=False).status == "cancelled"
    assert 0 < job.step < 20_000
    with pytest.raises(ConflictError, match="already finished"):
        job.cancel()


def test_a_replayed_idempotency_key_returns_the_first_job(client: Client) -> None:
    first = client.submit({**TINY, "name": "once"}, idempotency_key="client-test-key")
    again = client.submit({**TINY, "name": "once"}, idempotency_key="client-test-key")
    assert again.id == first.id
    assert len(client.jobs(name="once")) == 1
    first.wait(timeout=LIMIT, progress=False)


def test_errors_have_one_type_per_meaning_and_carry_the_server_message(
    client: Client, service: ServiceTenant, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(ValidationError) as invalid:
        client.submit({**TINY, "model": {"family": "qwen9"}})
    assert "valid families: gpt2, qwen3" in invalid.value.message
    assert invalid.value.errors[0]["loc"] == ["model"]
    assert isinstance(invalid.value, ValueError)
    with pytest.raises(ValidationError, match="steps"):
        client.submit(TINY, overrides={"steps": 0})
    with pytest.raises(PayloadTooLargeError):
        client.submit({**TINY, "name": "x" * 70_000})
    with pytest.raises(NotFoundError, match="No job nope"):
        client.job("nope")
    with (
        pytest.raises(AuthError, match=r"rejected the key from api_key="),
        Client(service.url, "sym_0000_wrong") as stranger,
    ):
        stranger.jobs()
    monkeypatch.delenv("SYMOPT_API_KEY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "empty"))
    with pytest.raises(CredentialsError, match=r"looked at api_key=, \$SYMOPT_API_KEY, .*credentials.json"):
        Client(service.url)
    monkeypatch.setenv("SYMOPT_API_KEY", service.api_key or "")
    with Client(service.url) as from_env:
        assert from_env.key_source == "$SYMOPT_API_KEY"
        assert from_env.me()["tenant"] == service.tenant


def test_a_sweep_from_python(client: Client, tmp_path: Path) -> None:
    sweep = client.submit_sweep(
        {
            "name": "client-sweep",
            "base": {
                **TINY,
                "steps": 20,
                "eval": {"every": 10, "batches": 1},
                "optimizer": {"preset": "adamw"},
            },
            "search_space": {"optimizer.lr": {"type": "log_uniform", "low": 1e-3, "high": 1e-2}},
            "n_trials": 2,
            "parallelism": 2,
            "pruner": "none",
        }
    )
    assert sweep.wait(timeout=LIMIT, progress=False).status == "succeeded"
    trials = sweep.list_trials()
    assert len(trials) == 2
    assert {t["state"] for t in trials} == {"succeeded"}
    best = sweep.best()
    assert best is not None
    assert best["objective"] == min(t["objective"] for t in trials)
    assert sweep.best_by_preset()["adamw"]["job_id"] == best["job_id"]
    assert set(sweep.importances()) == {"adamw"}
    jobs = sweep.jobs()
    assert {job.id for job in jobs} == {t["job_id"] for t in trials}

    comparison = compare(jobs)
    assert comparison.target == max(row.best_val_loss or 0 for row in comparison.jobs)
    assert all(row.tokens_to_target is not None for row in comparison.jobs)
    assert {row.lr for row in comparison.jobs} == {t["params"]["optimizer.lr"] for t in trials}
    picture = plot_comparison(jobs, tmp_path / "compare.png")
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
