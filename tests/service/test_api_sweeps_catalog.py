"""Sweeps, the catalog, health and metrics endpoints over HTTP."""

from __future__ import annotations

import json
import math

import pytest
import torch

from service.api.routes.health import RAY_NOT_USED
from service.store import JobStatus
from service.store.jobs import create_job, get_job, transition
from symopt_core.data import CORPORA
from symopt_core.models import MODEL_FAMILIES, build_model
from symopt_core.optim import RULES, SymOpt
from symopt_core.optim.options import GROUP_OPTIONS, readers_of
from symopt_core.presets import PRESETS, param_groups
from symopt_core.spec import load_spec

from .conftest import TINY_JOB, make_admin
from .test_api_security import STUDY, SWEEP


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


def test_sweep_listing_pages_newest_first(client, alice, bob):
    ids = [
        client.post("/v1/sweeps", json={**SWEEP, "name": f"s{i}"}, headers=alice.headers).json()["id"]
        for i in range(4)
    ]
    client.post("/v1/sweeps", json=SWEEP, headers=bob.headers)
    page = client.get("/v1/sweeps?limit=2&offset=1", headers=alice.headers).json()
    assert page["count"] == 4
    assert [s["id"] for s in page["data"]] == [ids[2], ids[1]]
    last = client.get("/v1/sweeps?limit=2&offset=3", headers=alice.headers).json()
    assert [s["id"] for s in last["data"]] == [ids[0]]
    assert client.get("/v1/sweeps?offset=4", headers=alice.headers).json() == {"data": [], "count": 4}
    for bad in ("limit=0", "limit=501", "offset=-1"):
        response = client.get(f"/v1/sweeps?{bad}", headers=alice.headers)
        assert response.status_code == 422, bad
        assert f"query.{bad.split('=')[0]}: Input should be" in response.json()["message"]


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


AUTO_SWEEP = {"name": "scales", "base": {**TINY_JOB, "optimizer": {"preset": "symmetric"}}, "n_trials": 2}


def test_per_class_lr_sweeps_and_studies_validate_through_the_api(client, alice):
    created = client.post("/v1/sweeps", json={**AUTO_SWEEP, "per_class_lr": True}, headers=alice.headers)
    assert created.status_code == 201, created.json()
    sweep = created.json()
    assert sweep["spec"]["per_class_lr"] is True
    scaled = [path for path in sweep["search_space"]["default"] if path.endswith(".lr_scale")]
    assert scaled == [f"optimizer.overrides.{c}.lr_scale" for c in ("embedding", "lm_head", "vector")]
    tuning = {"n_trials": 2, "search_space": "auto", "per_class_lr": True}
    study = client.post("/v1/studies", json={**STUDY, "tuning": tuning}, headers=alice.headers)
    assert study.status_code == 201, study.json()
    assert study.json()["spec"]["tuning"]["per_class_lr"] is True


def test_per_class_lr_belongs_to_the_auto_space(client, alice):
    explicit = {**SWEEP, "per_class_lr": True}
    tuning = {**STUDY["tuning"], "per_class_lr": True}
    for route, body in (("/v1/sweeps", explicit), ("/v1/studies", {**STUDY, "tuning": tuning})):
        response = client.post(route, json=body, headers=alice.headers)
        assert response.status_code == 422, route
        assert "per_class_lr applies to search_space auto only" in response.json()["message"]
    plain = client.post("/v1/sweeps", json=AUTO_SWEEP, headers=alice.headers)
    assert plain.status_code == 201
    assert list(plain.json()["search_space"]["default"]) == ["optimizer.lr", "batch.size"]  # off by default


def test_catalog_comes_from_the_registries(client, alice):
    models = client.get("/v1/models", headers=alice.headers).json()["data"]
    assert [m["name"] for m in models] == [*MODEL_FAMILIES, "hf"]
    assert {"llama", "mixtral", "gpt_oss"} <= set(models[-1]["architectures"])
    qwen3 = next(m for m in models if m["name"] == "qwen3")
    assert list(qwen3["sizes"]) == list(MODEL_FAMILIES["qwen3"].sizes)
    assert {"tiny", "small", "0.6b"} <= set(qwen3["sizes"])
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


def test_catalog_lists_each_rules_options_and_each_presets_class_settings(client, alice):
    rules = {r["name"]: r for r in client.get("/v1/rules", headers=alice.headers).json()["data"]}
    assert rules["adamw"]["options"] == {
        "lr": 0.02,
        "weight_decay": 0.0,
        "betas": [0.9, 0.95],
        "adam_eps": 1e-8,
    }
    assert rules["sgd"]["options"] == {"lr": 0.02, "momentum": 0.95, "nesterov": False, "weight_decay": 0.0}
    polar = rules["polar"]
    assert polar["options"]["polar_method"] == "polar_express"
    assert polar["options"]["polar_steps"] == 5
    assert polar["options"]["scale"] == "kj"
    assert "betas" not in polar["options"]
    assert (polar["transposable"], polar["shape_scaled"], polar["elementwise"]) == (True, True, False)
    assert rules["normuon"]["neuron_norm"] is True
    assert "normuon" not in rules["normuon"]["options"]  # always on for this rule
    assert rules["paired_row_norm"]["view"] == "paired"
    assert not rules["adamw"]["shape_scaled"]

    presets = {p["name"]: p for p in client.get("/v1/presets", headers=alice.headers).json()["data"]}
    symmetric = presets["symmetric"]["classes"]
    assert symmetric["attn_qkv"] == {
        "rule": "polar",
        "interleaved_rule": None,
        "lr_mult": 1.0,
        "lr_mult_times_sqrt_d": False,
        "lr": 0.02,
        "options": {"momentum": 0.95, "nesterov": True, "scale": "kj", "polar_method": "polar_express"},
    }
    assert symmetric["router"]["lr"] == pytest.approx(7.5e-4)  # ROUTER_SHARE × 0.02
    assert symmetric["router"]["options"]["invsqrt_method"] == "polar_express_converged"
    assert (symmetric["embedding"]["lr_mult"], symmetric["embedding"]["lr_mult_times_sqrt_d"]) == (0.05, True)
    assert symmetric["embedding"]["lr"] is None
    assert symmetric["lm_head"]["lr_mult"] == pytest.approx(0.01)
    assert symmetric["vector"]["lr"] == pytest.approx(1e-3)
    assert symmetric["vector"]["options"] == {"betas": [0.9, 0.95], "adam_eps": 1e-8}
    assert presets["muon"]["classes"]["mlp_in"]["options"]["polar_method"] == "newton_schulz"
    assert presets["symmetric-hybrid"]["classes"]["expert_in"]["interleaved_rule"] == "paired_hybrid"
    sf = presets["sf-normuon"]
    assert (sf["lr"], sf["weight_decay"], sf["schedule_free_options"]) == (0.01, 0.05, {"momentum": 0.9})
    assert sf["classes"]["hidden"]["options"]["scale"] == "rms"
    assert presets["adamw"]["schedule_free_options"] is None
    # Every cell is the registry's, for every preset and class (nothing listed twice).
    for name, preset in PRESETS.items():
        listed = presets[name]["classes"]
        assert set(listed) == {c.value for c in preset.cells}
        for param_class, cell in preset.cells.items():
            assert listed[param_class.value]["rule"] == cell.rule
            assert set(listed[param_class.value]["options"]) == set(cell.options)


def test_catalog_agrees_with_the_option_table_symopt_and_the_groups_presets_build(client, alice):
    """Each rule's options are the rows of GROUP_OPTIONS it reads, with SymOpt's own defaults; each
    class's listed lr is the one param_groups gives it on real models (√d included)."""
    defaults = SymOpt([torch.nn.Parameter(torch.zeros(2, 2))]).defaults
    rules = {r["name"]: r["options"] for r in client.get("/v1/rules", headers=alice.headers).json()["data"]}
    for name, rule in RULES.items():
        read = [key for key, option in GROUP_OPTIONS.items() if option.reads & readers_of(rule)]
        assert rules[name] == json.loads(json.dumps({key: defaults[key] for key in read})), name
    presets = {p["name"]: p for p in client.get("/v1/presets", headers=alice.headers).json()["data"]}
    models = [build_model("qwen3", "tiny", vocab_size=65), build_model("olmoe", "tiny", vocab_size=65)]
    for name, preset in PRESETS.items():
        for group in (g for model in models for g in param_groups(model, name)):
            listed = presets[name]["classes"][group["param_class"]]
            width = group["params"][0].shape[-1]
            lr = preset.lr * listed["lr_mult"] * (math.sqrt(width) if listed["lr_mult_times_sqrt_d"] else 1.0)
            assert group["lr"] == pytest.approx(lr, rel=1e-12), (name, group["param_class"])
            assert listed["lr"] in (None, pytest.approx(group["lr"], rel=1e-12))


def test_health_readiness_metrics_and_openapi(client, alice):
    assert client.get("/healthz").json() == {"status": "ok"}
    # This app runs no scheduler (as `symopt serve --no-scheduler`): Ray is not its business.
    assert client.get("/readyz").json() == {
        "ready": True,
        "checks": {"database": "ok", "migrations": "head", "ray": RAY_NOT_USED},
    }
    client.post("/v1/jobs", json=TINY_JOB, headers=alice.headers)
    client.get("/v1/jobs/nope", headers=alice.headers)
    admin = make_admin(client.app.state.store, "operator")
    text = client.get("/metrics", headers=admin.headers).text
    assert 'symopt_http_requests_total{method="POST",route="/v1/jobs",status="201"} 1.0' in text
    assert 'symopt_http_requests_total{method="GET",route="/v1/jobs/{job_id}",status="404"} 1.0' in text
    assert 'symopt_jobs{status="queued"} 1.0' in text
    assert "symopt_http_request_duration_seconds_bucket" in text
    # The gauge counts every tenant's jobs: a tenant's key may not read it.
    refused = client.get("/metrics", headers=alice.headers)
    assert refused.status_code == 403
    assert refused.json()["message"] == (
        "/metrics needs an admin API key (it counts every tenant's jobs); create one with "
        "`symopt keys create --tenant NAME --admin` and scrape with it"
    )
    assert "symopt_jobs" not in refused.text
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
