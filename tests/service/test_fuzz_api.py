"""Schemathesis over the service's own OpenAPI: every operation, with a valid tenant key.

Positive cases (what the schema allows) and negative ones (what it forbids) go to the app in
process. Every answer must be no 5xx, a status the operation declares, and a body and headers
that match its declared schema. Path parameters point now and then at real objects (a finished
job with metrics and logs, a queued job, a sweep whose trials Optuna knows, a study, another
tenant's objects, an agents sweep and study, a job an agent holds with its lease token), and
bodies are now and then valid specs, so the fuzz reaches past the 404s and 422s into the routes
themselves. Derandomized: CI sends the same requests on every run.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.api import create_app
from service.settings import Settings
from service.store import JobStatus, Store
from service.store.agents import claim_trial
from service.store.jobs import NewEvent, append_events, create_job, get_job, list_jobs, transition
from service.store.keys import create_api_key
from service.store.metrics import Point, record_metrics
from service.store.migrate import upgrade
from service.store.models import Dataset, Job, utcnow
from service.store.uploads import get_upload
from service.sweeps.controller import SweepController
from symopt_core.data import dataset_source, tokenized_dataset
from symopt_core.data.token_cache import find_tokenizers
from symopt_core.spec import JobSpec
from symopt_core.training import save_checkpoint

from .conftest import TINY_JOB, Tenant, make_admin, make_tenant
from .test_api_security import STUDY, SWEEP, model_upload

pytestmark = pytest.mark.xdist_group("fuzz_api")

# Examples per operation: 28 operations x (30 + 12) stays over 1,000 requests (asserted below)
# and near 40 s on two slow cores.
EXAMPLES = {GenerationMode.POSITIVE: 30, GenerationMode.NEGATIVE: 12}
AT_LEAST = {GenerationMode.POSITIVE: 750, GenerationMode.NEGATIVE: 250}  # 1,000 requests in all
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Operations without negative cases, and why.
NOT_NEGATED = {
    "GET /healthz": "no parameters to make invalid",
    "GET /readyz": "no parameters to make invalid",
    # schemathesis 4 cannot negate the SweepSpec schema (UnsupportedSchema: "a `not` whose
    # complement is not spelled out"); tests/service/test_fuzz_specs.py fuzzes sweep specs.
    "POST /v1/sweeps": "schemathesis cannot negate its body schema",
}
TINY_LLAMA = {"model_type": "llama", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}
VALID_BODIES = {
    "/v1/jobs": TINY_JOB,
    "/v1/sweeps": SWEEP,
    "/v1/studies": STUDY,
    "/v1/models:classify": {"model": {"family": "hf", "config": TINY_LLAMA}},
}
# Which real object a path parameter is set to (None: keep the generated value); "agents": an
# agents sweep or study with queued trials, and a job an agent holds (its lease token is sent).
KINDS = [None, "finished", "queued", "foreign", "agents"]
AGENT_BASE = {**TINY_JOB, "model": {"family": "custom", "d_model": 64}}
AGENT_SWEEP = {**SWEEP, "base": AGENT_BASE, "executor": "agents", "parallelism": 2}
AGENT_STUDY = {**STUDY, "base": AGENT_BASE, "executor": "agents"}
LEASE_HEADER = "Symopt-Lease"
ENDLESS = "/v1/jobs/{job_id}/events"  # streams until its job finishes: never a queued job's
ADMIN_ONLY = {"/metrics", "/v1/keys"}  # called with the admin key (a tenant's key gets a 403)


@dataclass
class World:
    """The app, its schema, and the objects path parameters may point at, by kind."""

    schema: Any  # schemathesis' OpenApiSchema
    client: TestClient  # for setting up: the schema's calls go through schemathesis
    store: Store
    settings: Settings
    alice: Tenant
    admin: Tenant
    ids: dict[str, dict[str, str]] = field(default_factory=dict)
    lease: str = ""  # the token of the agent job's lease
    sent: Counter[str] = field(default_factory=Counter)
    statuses: defaultdict[str, set[int]] = field(default_factory=lambda: defaultdict(set))

    def remake(self, parameter: str, kind: str) -> None:
        """A fresh object for what a DELETE removed or a cancel finished."""
        makers: dict[tuple[str, str], Callable[[], str]] = {
            ("job_id", "finished"): lambda: finished_job(self.store, self.settings, self.alice),
            ("job_id", "queued"): lambda: queued_job(self.store, self.alice),
            ("sweep_id", "queued"): lambda: self.post("/v1/sweeps", SWEEP),
            ("study_id", "queued"): lambda: self.post("/v1/studies", STUDY),
            ("job_id", "agents"): self.held_job,
            ("sweep_id", "agents"): self.agent_sweep,
            ("study_id", "agents"): lambda: self.post("/v1/studies", AGENT_STUDY),
            ("dataset_id", "finished"): lambda: self.upload("/v1/datasets", DATASET),
            ("model_id", "finished"): lambda: self.upload("/v1/models/uploads", model_upload()),
        }
        if (parameter, kind) in makers:
            self.ids[parameter][kind] = makers[parameter, kind]()

    def agent_sweep(self) -> str:
        """An agents sweep whose trials the controller has queued for agents to claim."""
        sweep_id = self.post("/v1/sweeps", AGENT_SWEEP)
        SweepController(self.store, self.settings, "fuzz").tick()
        return sweep_id

    def held_job(self) -> str:
        """A job an agent holds: its lease token goes in the header of the agent routes."""
        with self.store.transaction() as session:
            job, _ = create_job(
                session=session,
                tenant_id=self.alice.id,
                spec=JobSpec.model_validate(AGENT_BASE),
                executor="agents",
            )
            claim = claim_trial(
                session=session, tenant_id=self.alice.id, scope=Job.id == job.id, lease_seconds=3600,
                host="fuzz", now=utcnow(),
            )  # fmt: skip
            assert claim is not None
            self.lease = claim.token
            return job.id

    def upload(self, path: str, body: bytes, tenant: Tenant | None = None) -> str:
        response = self.client.post(path, content=body, headers=(tenant or self.alice).headers)
        assert response.status_code == 201, response.text
        identifier: str = response.json()["id"]
        return identifier

    def post(self, path: str, body: dict[str, Any], tenant: Tenant | None = None) -> str:
        response = self.client.post(path, json=body, headers=(tenant or self.alice).headers)
        assert response.status_code == 201, response.text
        identifier: str = response.json()["id"]
        return identifier


# A dataset with text enough for a 300-token BPE (this file's own source), and the strategies
# for upload bodies: a good file now and then, else any bytes (schemathesis cannot make them).
DATASET = Path(__file__).read_bytes()
schemathesis.openapi.media_type(
    "application/octet-stream", st.one_of(st.sampled_from([DATASET, model_upload()]), st.binary(max_size=512))
)


def trained_tokenizer(world: World, dataset_id: str) -> str:
    """The cache key of a 300-token BPE trained on the dataset, as a job on it would leave it."""
    directory = world.settings.assets().dataset_dir(dataset_id)
    tokenized_dataset(
        dataset_source(directory, dataset_id),
        "bpe",
        vocab_size=300,
        cache_dir=world.settings.assets().token_cache(),
        val_fraction=0.1,
    )
    with world.store.read() as session:
        dataset = get_upload(session, Dataset, tenant_id=world.alice.id, upload_id=dataset_id)
        [found] = find_tokenizers(world.settings.assets().token_cache(), dataset.text_sha256)
    return str(found["key"])


def spare_key(store: Store, tenant: Tenant) -> str:
    """The id of a new key of the tenant's."""
    with store.transaction() as session:
        return create_api_key(session=session, tenant_id=tenant.id, name="spare").split("_")[1]


def queued_job(store: Store, tenant: Tenant, spec: dict[str, Any] = TINY_JOB) -> str:
    with store.transaction() as session:
        job, _ = create_job(session=session, tenant_id=tenant.id, spec=JobSpec.model_validate(spec))
        return job.id


def finished_job(store: Store, settings: Settings, tenant: Tenant) -> str:
    """A succeeded job with logs, metrics (non-finite values among them) and a checkpoint."""
    job_id = queued_job(store, tenant)
    save_checkpoint(settings.job_run_dir(job_id) / "checkpoints", 20, {"step": 20}, keep=1)
    with store.transaction() as session:
        append_events(
            session=session, job_id=job_id, events=[NewEvent("log", 1, f"line {i}") for i in range(3)]
        )
        points = [Point("train_loss", s, 4.0 - s / 10, 0.0) for s in range(1, 21)]
        points += [Point("val_loss", 10, float("nan"), 0.0), Point("grad_norm", 10, float("inf"), 0.0)]
        record_metrics(session=session, job_id=job_id, points=points)
        job = get_job(session=session, tenant_id=None, job_id=job_id)
        transition(session=session, job=job, to=JobStatus.RUNNING)
        result = {"best_val_loss": 3.0, "val_loss": 3.0}
        transition(
            session=session, job=job, to=JobStatus.SUCCEEDED, step=20, best_val_loss=3.0, result=result
        )
    return job_id


def finished_sweep(world: World) -> str:
    """A sweep whose two trials finished and were told to Optuna (importances, history)."""
    spec = {**SWEEP, "pruner": "none", "parallelism": 2}
    sweep_id = world.post("/v1/sweeps", spec)
    controller = SweepController(world.store, world.settings, "fuzz")
    controller.tick()  # asks Optuna for both trials and queues their jobs
    with world.store.transaction() as session:
        trials, _ = list_jobs(
            session=session,
            tenant_id=world.alice.id,
            statuses=[],
            name=None,
            sweep_id=sweep_id,
            limit=10,
            offset=0,
        )
        for loss, job in enumerate(trials, start=3):
            record_metrics(session=session, job_id=job.id, points=[Point("val_loss", 10, loss, 0.0)])
            transition(session=session, job=job, to=JobStatus.RUNNING)
            result = {"best_val_loss": loss, "val_loss": loss}
            transition(session=session, job=job, to=JobStatus.SUCCEEDED, step=20, result=result)
    controller.tick()  # tells Optuna the objectives; the sweep succeeds
    return sweep_id


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root: Path = tmp_path_factory.mktemp("fuzz_api")
    url = f"sqlite:///{root / 'symopt.db'}"
    upgrade(url)
    # No rate limit here: the fuzz submits far more than a person would.
    fuzz_settings = Settings(
        database_url=url, home=root / "home", job_rate_per_minute=1e9, job_rate_burst=1_000_000_000
    )
    app = create_app(fuzz_settings)
    store: Store = app.state.store
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # starts the app's lifespan
    alice, bob = make_tenant(store, "alice"), make_tenant(store, "bob")
    # The lifespan runs once, started by schemathesis: this client only sends the setup's requests.
    client = TestClient(app)
    world = World(schema, client, store, fuzz_settings, alice, make_admin(store, "admin"))
    world.ids = {
        "job_id": {
            "finished": finished_job(store, fuzz_settings, alice),
            "queued": queued_job(store, alice),
            "foreign": queued_job(store, bob),
            "agents": world.held_job(),
        },
        "sweep_id": {
            "finished": finished_sweep(world),
            "queued": world.post("/v1/sweeps", SWEEP),
            "foreign": world.post("/v1/sweeps", SWEEP, bob),
            "agents": world.agent_sweep(),
        },
        "study_id": {
            "queued": world.post("/v1/studies", STUDY),
            "foreign": world.post("/v1/studies", STUDY, bob),
            "agents": world.post("/v1/studies", AGENT_STUDY),
        },
        "dataset_id": {
            "finished": world.upload("/v1/datasets", DATASET),
            "foreign": world.upload("/v1/datasets", DATASET, bob),
        },
        "model_id": {
            "finished": world.upload("/v1/models/uploads", model_upload()),
            "foreign": world.upload("/v1/models/uploads", model_upload(), bob),
        },
    }
    world.ids["key"] = {"finished": trained_tokenizer(world, world.ids["dataset_id"]["finished"])}
    # A second key of alice's, hers to revoke (never the key the fuzz sends), and bob's.
    world.ids["key_id"] = {"finished": spare_key(store, alice), "foreign": bob.key.split("_")[1]}
    yield world
    shutdown_lifespans()


def send(world: World, case: schemathesis.Case, kind: str | None, mode: GenerationMode) -> None:
    """One request, checked; then the bookkeeping that keeps the real objects there."""
    operation = case.operation
    label = f"{operation.method.upper()} {operation.path}"
    parameter = next(iter(case.path_parameters or {}), None)
    if kind is not None and mode == GenerationMode.POSITIVE:
        if parameter is not None and kind in world.ids[parameter]:
            if not (operation.path == ENDLESS and kind in ("queued", "agents")):  # never finish
                # Every parameter of the kind that has one (a dataset and its tokenizer's key).
                chosen = {name: world.ids[name][kind] for name in case.path_parameters or {}
                          if kind in world.ids[name]}  # fmt: skip
                case.path_parameters = {**(case.path_parameters or {}), **chosen}
        elif parameter is None and operation.method == "post" and operation.path in VALID_BODIES:
            case.body = VALID_BODIES[operation.path]
        if kind == "agents" and case.headers is not None and LEASE_HEADER in case.headers:
            case.headers = {**case.headers, LEASE_HEADER: world.lease}
    tenant = world.admin if operation.path in ADMIN_ONLY else world.alice
    world.sent[label] += 1
    response = case.call_and_validate(headers=tenant.headers, checks=CHECKS, timeout=60)
    world.statuses[label].add(response.status_code)
    if parameter is None or case.path_parameters is None:
        return
    chosen = next((k for k, v in world.ids[parameter].items() if v == case.path_parameters[parameter]), None)
    if chosen == "foreign":
        # Another tenant's object does not exist for this key, whatever the request.
        assert response.status_code in (400, 404), f"{label} on bob's object: {response.status_code}"
    elif chosen is not None and response.status_code in (202, 204):
        world.remake(parameter, chosen)  # cancelled or deleted: the next case gets a fresh one


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_every_operation_answers_as_its_schema_says(world: World, mode: GenerationMode) -> None:
    failures: dict[str, str] = {}
    fuzzed = []
    before = sum(world.sent.values())
    for result in world.schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        if mode == GenerationMode.NEGATIVE and label in NOT_NEGATED:
            continue
        fuzzed.append(label)

        @settings(
            max_examples=EXAMPLES[mode],
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        @given(case=operation.as_strategy(generation_mode=mode), kind=st.sampled_from(KINDS))
        def fuzz(case: schemathesis.Case, kind: str | None) -> None:
            send(world, case, kind, mode)

        try:
            fuzz()
        except (Exception, BaseExceptionGroup) as error:  # schemathesis' FailureGroup is the latter
            failures[label] = str(error)
    assert not failures, "\n\n".join(f"== {label}\n{message}" for label, message in failures.items())
    sent = sum(world.sent.values()) - before
    assert sent >= AT_LEAST[mode], f"only {sent} {mode.value} requests"
    if mode == GenerationMode.POSITIVE:
        # The real objects and valid bodies took every operation past its 404s and 422s.
        unanswered = [label for label in fuzzed if not any(s < 300 for s in world.statuses[label])]
        assert not unanswered, f"never a 2xx: {unanswered}"
