"""Property-based fuzz of spec validation, end to end (ISSUE: reliability suite).

Hypothesis writes job and sweep specs: mostly near-valid ones (known keys, small dims, a few
wrong values) so that many pass validation and reach the worker's code, plus wild values and
unknown keys. Each one is POSTed to the real API (a SQLite store):

- an invalid spec is a 422 whose body says what to fix, and nothing is stored;
- an accepted job spec is what a worker gets: read back from the store, it builds (data, model,
  optimizer, schedule) and takes one training step, or fails with a ConfigError that names the
  problem (a job failing cleanly), never another exception (a crash in the worker);
- an accepted sweep's trials are what the controller submits: for values inside every range,
  `trial_spec` gives a job spec or a ValidationError that names the path (the trial fails
  cleanly), never another exception.

SYMOPT_FUZZ_EXAMPLES raises the number of examples for a longer run by hand.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from service.api import create_app
from service.settings import Settings
from service.store.migrate import upgrade
from service.sweep_spec import ParamRange, SweepSpec
from service.sweeps.space import distribution, trial_spec
from symopt_core.errors import ConfigError
from symopt_core.models.registry import MODEL_FAMILIES
from symopt_core.optim import RULES
from symopt_core.params import ParamClass
from symopt_core.presets import PRESETS
from symopt_core.spec import JobSpec
from symopt_core.training.loop import batch_shape, build_run, forward_backward

from .conftest import TINY_JOB, Tenant, make_tenant

EXAMPLES = int(os.environ.get("SYMOPT_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples on every CI run; SYMOPT_FUZZ_EXAMPLES explores further
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

# Wild values: anything JSON can carry (NaN and infinities are sent as JSON can't spell them).
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
wild = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
)


def leaf_paths(tree: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if not isinstance(tree, dict) or not tree:
        return [prefix]
    return [prefix, *[path for key, value in tree.items() for path in leaf_paths(value, (*prefix, key))]]


@st.composite
def mutated(draw: st.DrawFn, spec: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A spec from `spec` with 0 to 2 of its values (or a new key beside them) made wild."""
    tree = copy.deepcopy(draw(spec))  # st.just() hands out one shared object
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2]))):
        path = draw(st.sampled_from(leaf_paths(tree)))
        if not path:
            continue
        parent = tree
        for key in path[:-1]:
            parent = parent[key]
        key = draw(st.one_of(st.just(path[-1]), st.just(path[-1]), st.text(min_size=1, max_size=8)))
        parent[key] = draw(wild)
    return tree


def optional(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


# Near-valid specs: known keys, values mostly inside their bounds, dims that may not fit together.
dim_values = {
    "n_layers": st.integers(0, 3),
    "d_model": st.sampled_from([0, 24, 32, 48, 64, 96]),
    "n_heads": st.integers(0, 8),
    "n_kv_heads": st.integers(0, 4),
    "head_dim": st.sampled_from([None, 8, 16, 12]),
    "d_ff": st.sampled_from([0, 32, 100, 128]),
    "n_experts": st.integers(0, 6),
    "top_k": st.integers(0, 4),
    "expert_d_ff": st.sampled_from([0, 16, 64]),
    "sliding_window": st.integers(0, 40),
    "global_every": st.integers(0, 3),
    "vocab_size": st.sampled_from([8, 64, 256, 300]),
    "max_seq_len": st.sampled_from([8, 16, 64]),
    "tie_embeddings": st.booleans(),
    "qk_norm": st.booleans(),
    "sinks": st.booleans(),
    "dropout": st.floats(-0.1, 1.0),
    "norm_eps": st.floats(0, 1e-3),
    "rope_theta": st.floats(-1, 1e6),
}
model = st.fixed_dictionaries(
    {
        "family": st.sampled_from([*MODEL_FAMILIES, "gpt_oss"]),
        "size": st.just("tiny"),
    },
    optional=dim_values,
)
rules = st.sampled_from([*RULES, "magic"])
override = st.one_of(
    rules,
    st.fixed_dictionaries(
        {"rule": rules},
        optional={
            "lr_mult": st.floats(0, 4),
            "momentum": st.floats(0, 1),
            "polar_steps": st.integers(1, 8),
            "polar_method": st.sampled_from(["newton_schulz", "polar_express", "svd"]),
            "scale": st.sampled_from(["kj", "match_rms_adamw", "rms", "none"]),
            "normuon": st.booleans(),
            "betas": st.tuples(st.floats(0, 0.999), st.floats(0, 0.999)).map(list),
            "eps": st.floats(0, 1e-3),
        },
    ),
)
optimizer = optional(
    {
        "preset": st.sampled_from(list(PRESETS)),
        "lr": st.floats(1e-5, 1),
        "weight_decay": st.floats(0, 0.5),
        "overrides": st.dictionaries(st.sampled_from([c.value for c in ParamClass]), override, max_size=3),
        "schedule_free": st.none() | optional({"momentum": st.floats(0, 0.99), "r": st.floats(0, 2)}),
    }
)
data = optional(
    {
        # pystdlib is left out: loading it takes a second, and it is a corpus like the others.
        "corpus": st.sampled_from(["shakespeare", "modular", "modular", "file:absent.txt"]),
        "tokenizer": st.sampled_from(["char", "byte"]),
        "seq_len": st.integers(1, 40),
        "val_fraction": st.floats(0.01, 0.9),
        "options": st.dictionaries(
            st.sampled_from(["p", "seed", "n_examples"]),
            st.one_of(st.integers(0, 200), st.floats(0, 10)),
            max_size=2,
        ),
    }
)
job = mutated(
    st.fixed_dictionaries(
        {"model": model},
        optional={
            "name": st.text(max_size=20),
            "data": data,
            "optimizer": optimizer,
            "steps": st.integers(1, 3),
            "batch": st.fixed_dictionaries(
                {"size": st.integers(1, 4)},
                optional={
                    "micro_size": st.integers(1, 5),
                    "ramp": optional({"start_seq_len": st.integers(1, 40)}),
                },
            ),
            "schedule": optional(
                {
                    "kind": st.sampled_from(["constant", "cosine", "linear", "wsd", "schedule_free"]),
                    "warmup_steps": st.integers(0, 5),
                    "decay_frac": st.floats(0, 1),
                    "min_lr_ratio": st.floats(0, 1),
                }
            ),
            "eval": optional({"every": st.integers(1, 5), "batches": st.integers(1, 3)}),
            "seed": st.integers(0, 2**31 - 1),
            "precision": st.sampled_from(["auto", "float32", "bfloat16"]),
            "log_every": st.integers(1, 5),
        },
    )
)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Tenant]]:
    home = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{home / 'symopt.db'}"
    upgrade(url)
    settings_ = Settings(database_url=url, home=home, job_rate_per_minute=1e6, job_rate_burst=1_000_000)
    with TestClient(create_app(settings_)) as client:
        yield client, make_tenant(client.app.state.store, "fuzzer")  # type: ignore[attr-defined]


def post(client: TestClient, tenant: Tenant, route: str, body: Any):
    return client.post(route, json=body, headers=tenant.headers)


def count(client: TestClient, tenant: Tenant, route: str) -> int:
    return int(client.get(route, headers=tenant.headers).json()["count"])


def assert_clear_422(response, stored_before: int, stored_after: int) -> None:
    assert response.status_code == 422, (response.status_code, response.text[:500])
    payload = response.json()
    assert isinstance(payload["message"], str), payload
    assert payload["message"].strip(), payload
    assert payload["detail"], payload
    assert all(problem["msg"] for problem in payload["detail"]), payload
    assert stored_after == stored_before, "a rejected spec was stored"


def created_or_clear_422(client: TestClient, tenant: Tenant, route: str, body: Any) -> dict[str, Any] | None:
    """POST `body`: the created object, or None after checking that the rejection is a clear 422
    that stored nothing."""
    before = count(client, tenant, route)
    response = post(client, tenant, route, body)
    event(f"{route.rsplit('/', 1)[-1]}: HTTP {response.status_code}")
    if response.status_code == 201:
        return dict(response.json())
    assert_clear_422(response, before, count(client, tenant, route))
    return None


def assert_worker_builds(spec: JobSpec) -> None:
    """What a worker does first: build the run and take a step; only a ConfigError may stop it."""
    failure = None
    try:
        run = build_run(spec, device=torch.device("cpu"))
        loss, _ = forward_backward(run, batch_shape(spec, 0))
        run.optimizer.step()
    except ConfigError as error:
        failure = str(error)
    event("jobs: built and stepped" if failure is None else "jobs: accepted, failed cleanly in the worker")
    if failure is None:
        assert math.isfinite(loss), spec.model_dump(mode="json", exclude_defaults=True)
    else:
        assert failure.strip()  # the job fails with a message the user can act on


@FUZZ
@given(body=job)
def test_every_job_spec_is_422_with_a_message_or_builds_in_a_worker(api, body):
    client, tenant = api
    created = created_or_clear_422(client, tenant, "/v1/jobs", body)
    if created is None:
        return
    stored = client.get(f"/v1/jobs/{created['id']}", headers=tenant.headers).json()["spec"]
    assert_worker_builds(JobSpec.model_validate(stored))  # the scheduler reads the spec back so


PATHS = [
    "optimizer.lr",
    "optimizer.weight_decay",
    "batch.size",
    "steps",
    "data.seq_len",
    "model.n_layers",
    "model.n_heads",
    "model.d_model",
    "optimizer.overrides.router.lr_scale",
    "optimizer.overrides.attn_qkv.momentum",
    "optimizer.schedule_free.momentum",
    "optimizer.preset",
    "schedule.kind",
    "schedule.warmup_steps",
    "nowhere.at_all",
]
bound = st.one_of(st.integers(-4, 64), st.floats(-1, 64), st.sampled_from([1e-4, 0.5, 1.0, 2.0]), st.none())
param_range = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["log_uniform", "uniform", "int", "log_int", "pow2", "normal"])},
        optional={"low": bound, "high": bound},
    ),
    st.fixed_dictionaries(
        {"type": st.just("categorical")},
        optional={
            "choices": st.lists(
                st.one_of(
                    st.sampled_from([*PRESETS, "cosine", "wsd", "exp"]), st.integers(-1, 64), st.floats(0, 1)
                ),
                max_size=4,
            )
        },
    ),
)
sweep = mutated(
    st.fixed_dictionaries(
        {
            "base": st.one_of(
                st.just(TINY_JOB), st.just({**TINY_JOB, "model": {"family": "olmoe", "size": "tiny"}})
            ),
            "search_space": st.one_of(
                st.dictionaries(st.sampled_from(PATHS), param_range, min_size=1, max_size=3), st.just("auto")
            ),
        },
        optional={
            "n_trials": st.integers(1, 5),
            "objective": st.sampled_from(["best_val_loss", "final_val_loss", "tokens_to_target"]),
            "target_loss": st.floats(0.1, 5),
            "sampler": st.sampled_from(["tpe", "random", "grid", "cmaes", "gp"]),
            "pruner": st.sampled_from(["none", "median", "successive_halving", "hyperband"]),
            "presets": st.lists(st.sampled_from(list(PRESETS)), max_size=3, unique=True),
            "parallelism": st.integers(1, 8),
            "seed": st.integers(0, 2**31 - 1),
        },
    )
)


@FUZZ
@given(body=sweep, where=st.lists(st.floats(0, 1), min_size=3, max_size=3))
def test_every_sweep_spec_is_422_with_a_message_or_makes_valid_trials(api, body, where):
    client, tenant = api
    created = created_or_clear_422(client, tenant, "/v1/sweeps", body)
    if created is None:
        return
    spec = SweepSpec.model_validate(created["spec"])
    for preset, space in created["search_space"].items():
        ranges = {path: ParamRange.model_validate(raw) for path, raw in space.items()}
        params = {
            path: interior_point(distribution(r), f)
            for (path, r), f in zip(ranges.items(), where, strict=False)
        }
        failure = None
        try:
            trial_spec(spec.base, params, None if preset == "default" else preset)
        except ValidationError as error:
            failure = str(error)
        event("sweeps: a trial spec" + (" rejected" if failure else " built"))
        # An interior value the bounds did not rule out (n_heads=3 of d_model=64): the controller
        # fails that trial with this message, which must name the field.
        assert failure is None or any(path.split(".")[-1] in failure for path in params), failure


def interior_point(dist: Any, fraction: float) -> Any:
    """The value at `fraction` of the way through an Optuna distribution (log scale where it is)."""
    if hasattr(dist, "choices"):
        return dist.choices[min(len(dist.choices) - 1, int(fraction * len(dist.choices)))]
    low, high = dist.low, dist.high
    if getattr(dist, "log", False):
        value = math.exp(math.log(low) + fraction * (math.log(high) - math.log(low)))
    else:
        value = low + fraction * (high - low)
    return round(value) if isinstance(low, int) else min(high, max(low, value))
