"""Operator tools: listing and revoking API keys (API and CLI), where the first admin key goes,
the job lifecycle lines of the service log (text and JSON), and `serve --ray-dashboard`."""

from __future__ import annotations

import json
import logging
import os
import pty
import re
import select
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from service.scheduler import Scheduler
from service.scheduler.lifecycle import JsonFormatter
from service.scheduler.runtime import dashboard_unavailable
from service.settings import Settings
from service.store import Store
from service.store.jobs import create_job, get_job
from service.store.scheduling import start_attempt
from service.testing import ROOT, live_service, one_thread_env, restartable_port
from symopt_core.spec import JobSpec

from ..specs import tiny_job
from ..waiting import LIMIT, wait_for
from .conftest import TINY_JOB, Tenant, make_admin, make_tenant
from .live import Api, SharedService

# The key tests need the API, not Ray: `serve --no-scheduler` starts in a second or two.
NO_SCHEDULER = ("--no-scheduler",)


def key_id(key: str) -> str:
    return key.split("_")[1]


def credentials_file(home: Path) -> Path:
    return home / "config" / "symopt" / "credentials.json"


# -- keys over the API --------------------------------------------------------------------------


def test_an_admin_lists_every_key_and_a_tenant_only_its_own_without_secrets(client, alice, bob):
    admin = make_admin(client.app.state.store, "ops")
    listed = client.get("/v1/keys", headers=admin.headers)
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["count"] == 3
    by_id = {key["key_id"]: key for key in body["data"]}
    assert {by_id[key_id(t.key)]["tenant"] for t in (alice, bob, admin)} == {"alice", "bob", "ops"}
    assert by_id[key_id(admin.key)]["is_admin"] is True
    assert by_id[key_id(alice.key)]["revoked_at"] is None
    assert set(by_id[key_id(alice.key)]) == {
        "key_id",
        "tenant",
        "name",
        "is_admin",
        "created_at",
        "revoked_at",
    }
    for tenant in (alice, bob, admin):  # neither the secret nor its hash is shown
        assert tenant.key.split("_", 2)[2] not in listed.text
    own = client.get("/v1/keys", headers=alice.headers).json()
    assert [key["key_id"] for key in own["data"]] == [key_id(alice.key)]
    assert own["count"] == 1


def test_a_revoked_key_gets_401_and_revoking_twice_or_an_unknown_key_is_refused(client, alice, bob):
    admin = make_admin(client.app.state.store, "ops")
    assert client.get("/v1/jobs", headers=bob.headers).status_code == 200
    revoked = client.post(f"/v1/keys/{key_id(bob.key)}/revoke", headers=admin.headers)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["key_id"] == key_id(bob.key)
    assert revoked.json()["revoked_at"] is not None
    assert client.get("/v1/jobs", headers=bob.headers).status_code == 401
    again = client.post(f"/v1/keys/{key_id(bob.key)}/revoke", headers=admin.headers)
    assert again.status_code == 409
    assert "already revoked" in again.json()["detail"]
    unknown = client.post("/v1/keys/ffffffffffffffff/revoke", headers=admin.headers)
    assert unknown.status_code == 404
    assert "No API key ffffffffffffffff" in unknown.json()["detail"]
    listed = {key["key_id"]: key for key in client.get("/v1/keys", headers=admin.headers).json()["data"]}
    assert listed[key_id(bob.key)]["revoked_at"] is not None
    assert client.get("/v1/jobs", headers=alice.headers).status_code == 200  # the others still work


def test_a_tenant_cannot_see_or_revoke_another_tenants_keys_nor_an_admin_key(client, alice, bob):
    admin = make_admin(client.app.state.store, "ops")
    # A second key of alice's, and an admin key of her tenant.
    second = client.post("/v1/keys", json={"tenant": "alice", "name": "ci"}, headers=admin.headers)
    second_key = second.json()["api_key"]
    alice_admin = client.post("/v1/keys", json={"tenant": "alice", "admin": True}, headers=admin.headers)
    alice_admin_key = alice_admin.json()["api_key"]
    seen = {key["key_id"] for key in client.get("/v1/keys", headers=alice.headers).json()["data"]}
    assert seen == {key_id(alice.key), key_id(second_key), key_id(alice_admin_key)}
    assert key_id(bob.key) not in seen
    foreign = client.post(f"/v1/keys/{key_id(bob.key)}/revoke", headers=alice.headers)
    assert foreign.status_code == 404  # another tenant's key is not found, as its jobs are not
    assert client.get("/v1/jobs", headers=bob.headers).status_code == 200
    forbidden = client.post(f"/v1/keys/{key_id(alice_admin_key)}/revoke", headers=alice.headers)
    assert forbidden.status_code == 403
    assert "only an admin key may revoke it" in forbidden.json()["detail"]
    own = client.post(f"/v1/keys/{key_id(second_key)}/revoke", headers=alice.headers)
    assert own.status_code == 200
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {second_key}"}).status_code == 401
    assert client.get("/v1/me", headers=alice.headers).status_code == 200


def test_the_last_active_admin_key_cannot_be_revoked(client):
    first = make_admin(client.app.state.store, "ops")
    refused = client.post(f"/v1/keys/{key_id(first.key)}/revoke", headers=first.headers)
    assert refused.status_code == 409
    assert "is the last active admin key" in refused.json()["detail"]
    assert "symopt keys create --tenant NAME --admin" in refused.json()["detail"]
    created = client.post("/v1/keys", json={"tenant": "ops", "admin": True}, headers=first.headers)
    second = {"Authorization": f"Bearer {created.json()['api_key']}"}
    second_id = created.json()["key_id"]
    assert client.post(f"/v1/keys/{key_id(first.key)}/revoke", headers=second).status_code == 200
    assert client.get("/v1/me", headers=first.headers).status_code == 401
    last = client.post(f"/v1/keys/{second_id}/revoke", headers=second)
    assert last.status_code == 409
    assert client.get("/v1/me", headers=second).status_code == 200


# -- keys through the CLI -----------------------------------------------------------------------


def symopt(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = one_thread_env(SYMOPT_HOME=str(home), XDG_CONFIG_HOME=str(home / "config"))
    for name in ("SYMOPT_URL", "SYMOPT_API_KEY", "SYMOPT_DATABASE_URL"):
        environment.pop(name, None)
    environment.update(env)
    command = [sys.executable, "-m", "service.cli", *args]
    return subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120)


def test_keys_list_and_revoke_on_the_database(tmp_path, database_url):
    def keys(*args: str) -> subprocess.CompletedProcess[str]:
        return symopt("keys", *args, "--database-url", database_url, home=tmp_path)

    admin = keys("create", "--tenant", "ops", "--admin").stdout.strip()
    ci = keys("create", "--tenant", "acme", "--name", "ci").stdout.strip()
    listed = keys("list", "--output", "json")
    assert listed.returncode == 0, listed.stderr
    rows = {key["key_id"]: key for key in json.loads(listed.stdout)}
    assert rows[key_id(ci)] | {"created_at": None} == {
        "key_id": key_id(ci),
        "tenant": "acme",
        "name": "ci",
        "is_admin": False,
        "created_at": None,
        "revoked_at": None,
    }
    assert rows[key_id(admin)]["is_admin"] is True
    assert ci.split("_", 2)[2] not in listed.stdout
    table = keys("list").stdout.splitlines()
    assert table[0].split() == ["id", "tenant", "name", "admin", "created", "revoked"]
    assert any(line.startswith(key_id(ci)) and " acme " in line for line in table)

    revoked = keys("revoke", key_id(ci))
    assert revoked.returncode == 0, revoked.stderr
    assert f"revoked key {key_id(ci)} (tenant 'acme', 'ci')" in revoked.stdout
    again = keys("revoke", key_id(ci))
    assert again.returncode == 2
    assert f"symopt keys revoke: API key {key_id(ci)} was already revoked" in again.stderr
    unknown = keys("revoke", "ffffffffffffffff")
    assert unknown.returncode == 2
    assert "No API key ffffffffffffffff" in unknown.stderr
    last = keys("revoke", key_id(admin))
    assert last.returncode == 2
    assert "is the last active admin key" in last.stderr
    after = {key["key_id"]: key for key in json.loads(keys("list", "--output", "json").stdout)}
    assert after[key_id(ci)]["revoked_at"] is not None
    assert after[key_id(admin)]["revoked_at"] is None


def test_keys_through_the_api_as_an_admin_and_as_a_tenant(tmp_path):
    with live_service(tmp_path / "service", args=NO_SCHEDULER) as service:
        assert service.api_key is not None

        def keys(*args: str, key: str) -> subprocess.CompletedProcess[str]:
            return symopt(
                "keys", *args, "--remote", home=tmp_path, SYMOPT_URL=service.url, SYMOPT_API_KEY=key
            )

        admin = service.api_key
        first = keys("create", "--tenant", "acme", "--name", "ci", key=admin)
        assert first.returncode == 0, first.stderr
        acme, acme_second = first.stdout.strip(), keys("create", "--tenant", "acme", key=admin).stdout.strip()
        acme_admin = keys("create", "--tenant", "acme", "--admin", key=admin).stdout.strip()
        other = keys("create", "--tenant", "other", key=admin).stdout.strip()

        everyone = json.loads(keys("list", "--output", "json", key=admin).stdout)
        assert {key["tenant"] for key in everyone} == {"default", "acme", "other"}
        own = json.loads(keys("list", "--output", "json", key=acme).stdout)
        assert {key["key_id"] for key in own} == {key_id(acme), key_id(acme_second), key_id(acme_admin)}

        foreign = keys("revoke", key_id(other), key=acme)
        assert foreign.returncode == 2
        assert f"No API key {key_id(other)}" in foreign.stderr
        forbidden = keys("revoke", key_id(acme_admin), key=acme)
        assert forbidden.returncode == 3
        assert "only an admin key may revoke it" in forbidden.stderr
        done = keys("revoke", key_id(acme_second), key=acme)
        assert done.returncode == 0, done.stderr
        headers = {"Authorization": f"Bearer {acme_second}"}
        assert httpx.get(f"{service.url}/v1/me", headers=headers).status_code == 401
        rejected = keys("list", key=acme_second)
        assert rejected.returncode == 3  # the revoked key itself is turned away

        # Two admin keys: one may go, then the other is the last and stays.
        assert keys("revoke", key_id(acme_admin), key=admin).returncode == 0
        last = keys("revoke", key_id(admin), key=admin)
        assert last.returncode == 2
        assert "is the last active admin key" in last.stderr
        assert (
            httpx.get(f"{service.url}/v1/keys", headers={"Authorization": f"Bearer {admin}"}).status_code
            == 200
        )


# -- the first admin key ------------------------------------------------------------------------


def test_the_first_admin_key_goes_to_the_credentials_file_when_stdout_is_not_a_terminal(tmp_path):
    with live_service(tmp_path, args=NO_SCHEDULER) as service:  # its stdout is a pipe
        path = credentials_file(tmp_path)
        saved = json.loads(path.read_text())
        output = "".join(service.output)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert saved == {"url": service.url, "api_key": service.api_key}
    assert saved["api_key"] not in output  # not in the log
    assert f"admin API key written to {path} (mode 0600; not printed, as stdout is not a terminal)" in output
    assert "shown once" not in output


def test_the_first_admin_key_is_printed_once_on_a_terminal(tmp_path):
    main, terminal = pty.openpty()
    environment = one_thread_env(SYMOPT_HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"))
    environment.pop("SYMOPT_DATABASE_URL", None)
    command = [sys.executable, "-m", "service.cli", "serve", *NO_SCHEDULER, "--port", str(restartable_port())]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=environment,
        stdout=terminal,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    os.close(terminal)
    seen = ""
    try:
        while "symopt serve: database" not in seen:
            # A bound against a hang only: the line comes before the service listens.
            ready, _, _ = select.select([main], [], [], LIMIT)
            assert ready, f"symopt serve printed nothing more:\n{seen}"
            seen += os.read(main, 4096).decode()
    finally:
        process.terminate()
        process.wait(timeout=60)
        os.close(main)
    shown = re.search(r"admin API key \(shown once\): (\S+)", seen)
    assert shown, seen
    assert json.loads(credentials_file(tmp_path).read_text())["api_key"] == shown.group(1)
    assert f"saved with the URL for the CLI in {credentials_file(tmp_path)} (mode 0600)" in seen


# -- job lifecycle lines ------------------------------------------------------------------------


def test_a_real_jobs_lifecycle_lines_in_the_service_log(shared_service: SharedService, api: Api):
    mark = shared_service.mark()
    ok = api.submit(tiny_job(steps=20, eval={"every": 10, "batches": 1}))
    bad = api.submit(tiny_job(data={"corpus": "file:no/such/corpus.txt", "options": {}}))
    finished, failed = api.finished(ok), api.finished(bad)
    assert (finished["status"], failed["status"]) == ("succeeded", "failed")

    def logged() -> list[str] | None:  # written just after the commit that the API reads
        lines = shared_service.lines_since(mark, r"symopt\.jobs: job ")
        ends = [line for line in lines if f"job {ok} finished" in line or f"job {bad} failed" in line]
        return lines if len(ends) == 2 else None

    lines = wait_for(logged, progress=shared_service.mark, what="the jobs' last lifecycle lines")
    mine = [line.split("symopt.jobs: ", 1)[1].strip() for line in lines if ok in line]
    best = f"{finished['best_val_loss']:.4f}"
    assert mine[0] == f"job {ok} started: attempt 1"
    assert [re.sub(r"val_loss \S+", "val_loss V", line) for line in mine[1:4]] == [
        f"job {ok} evaluated: val_loss V at step {step}" for step in (0, 10, 20)
    ]
    assert mine[4:] == [f"job {ok} finished: succeeded at step 20, best val_loss {best}"]
    failure = [line for line in lines if bad in line]
    assert "started: attempt 1" in failure[0]
    assert f"job {bad} failed: at step 0: ConfigError: " in failure[-1]
    assert not any("Traceback" in line for line in failure)  # the reason, on one line


def test_a_trials_lifecycle_lines_name_its_sweep_and_trial(shared_service: SharedService, api: Api):
    mark = shared_service.mark()
    sweep = {
        "name": "logged",
        "n_trials": 1,
        "pruner": "none",
        "search_space": {"optimizer.lr": {"type": "log_uniform", "low": 1e-3, "high": 1e-2}},
        "base": tiny_job(steps=10, eval={"every": 10, "batches": 1}, optimizer={"preset": "adamw"}),
    }
    created = api.http.post("/v1/sweeps", json=sweep)
    assert created.status_code == 201, created.text
    sweep_id = created.json()["id"]

    def trial_finished() -> list[str] | None:
        lines = shared_service.lines_since(mark, rf"\(sweep {sweep_id} trial 0\)")
        return lines if any(" finished: " in line for line in lines) else None

    lines = wait_for(trial_finished, progress=shared_service.mark, what="the trial's lifecycle lines")
    events = [line.split(f"(sweep {sweep_id} trial 0) ", 1)[1].split(":")[0] for line in lines]
    assert events == ["started", "evaluated", "evaluated", "finished"]


def test_each_transition_is_logged_once_after_it_is_stored_with_json_fields(
    store: Store, settings: Settings, caplog: pytest.LogCaptureFixture
):
    """The scheduler's own flush over a real store, without Ray: what its runs would report
    (an evaluation, a lost worker, a pruned trial, a failure) goes in, one line per change out."""
    caplog.set_level(logging.INFO, logger="symopt.jobs")
    scheduler = Scheduler(store, settings)
    tenant = make_tenant(store, "alice")
    jobs = [queue(store, tenant) for _ in range(3)]
    retried, pruned, failing = jobs
    for job_id in jobs:
        run(store, job_id, scheduler.owner)
    scheduler.pending.add_event(retried, 1, {"kind": "eval", "step": 10, "data": {"val_loss": 2.5}})
    scheduler.pending.crashed(retried, 1, "RayTaskError: the worker died\n(a second line)")
    with store.transaction() as session:  # what the sweep controller records when it prunes
        get_job(session=session, tenant_id=None, job_id=pruned).pruned_at = 4096
    scheduler.pending.cancelled(pruned, 1)
    error = {
        "type": "ConfigError",
        "message": "no corpus",
        "traceback": ["Traceback (most recent call last):"],
    }
    scheduler.pending.add_event(failing, 1, {"kind": "error", "step": 3, "data": error})
    scheduler.tick_flush()
    run(store, retried, scheduler.owner)  # attempt 2 succeeds
    scheduler.pending.add_event(retried, 2, {"kind": "result", "step": 10, "data": {"status": "succeeded"}})
    scheduler.tick_flush()
    scheduler.tick_flush()  # nothing pending: nothing logged again

    lines = [record.getMessage() for record in caplog.records if record.name == "symopt.jobs"]
    assert lines == [
        f"job {retried} evaluated: val_loss 2.5000 at step 10",
        f"job {retried} retried: attempt 1 lost (RayTaskError: the worker died); "
        "retrying after a worker failure (1 of 3)",
        f"job {pruned} pruned: at step 0 (4096 tokens)",
        f"job {failing} failed: at step 0: ConfigError: no corpus",
        f"job {retried} finished: succeeded at step 10, best val_loss 2.5000",
    ]
    fields = [json.loads(JsonFormatter().format(record)) for record in caplog.records]
    assert fields[0] | {"time": None} == {
        "time": None,
        "level": "info",
        "logger": "symopt.jobs",
        "message": lines[0],
        "event": "evaluated",
        "job_id": retried,
        "step": 10,
        "val_loss": 2.5,
    }
    assert [entry["event"] for entry in fields] == ["evaluated", "retried", "pruned", "failed", "finished"]
    assert fields[3]["reason"] == "ConfigError: no corpus"
    assert fields[2]["tokens"] == 4096

    caplog.clear()
    orphan = queue(store, tenant)
    run(store, orphan, "a-scheduler-that-died")  # a job of a scheduler that stopped heartbeating
    scheduler.recover_orphans(immediately=True)
    assert [record.getMessage() for record in caplog.records] == [
        f"job {orphan} requeued: its scheduler stopped; it resumes from its newest checkpoint"
    ]


def queue(store: Store, tenant: Tenant) -> str:
    with store.transaction() as session:
        job, _ = create_job(session=session, tenant_id=tenant.id, spec=JobSpec.model_validate(TINY_JOB))
        return job.id


def run(store: Store, job_id: str, owner: str) -> None:
    """Start the job's next attempt as `owner`, as the scheduler's launch does."""
    with store.transaction() as session:
        start_attempt(
            session=session, job=get_job(session=session, tenant_id=None, job_id=job_id), owner=owner
        )


def test_log_format_json_writes_the_service_log_one_object_a_line(tmp_path):
    with live_service(tmp_path, args=(*NO_SCHEDULER, "--log-format", "json")) as service:
        headers = {"Authorization": f"Bearer {service.api_key}"}
        assert httpx.get(f"{service.url}/v1/me", headers=headers).status_code == 200

        def access_line() -> dict[str, object] | None:
            for line in service.output:
                if line.startswith("{") and "GET /v1/me" in line:
                    return dict(json.loads(line))
            return None

        entry = wait_for(access_line, progress=lambda: len(service.output), what="the access line")
    assert entry["logger"] == "uvicorn.access"
    assert entry["level"] == "info"
    assert '"GET /v1/me HTTP/1.1" 200' in str(entry["message"])


# -- Ray's dashboard ----------------------------------------------------------------------------


@pytest.mark.skipif(dashboard_unavailable() is None, reason="ray[default] is installed here")
def test_ray_dashboard_without_its_packages_fails_with_what_to_install(tmp_path):
    done = symopt("serve", "--ray-dashboard", "--port", str(restartable_port()), home=tmp_path)
    assert done.returncode == 2
    assert "symopt serve: Ray's dashboard needs the packages of ray[default]" in done.stderr
    assert "pip install 'ray[default]'" in done.stderr
    assert not (tmp_path / "symopt.db").exists()  # refused before anything started


def test_ray_dashboard_needs_the_scheduler_in_this_process(tmp_path):
    done = symopt("serve", "--ray-dashboard", *NO_SCHEDULER, home=tmp_path)
    assert done.returncode == 2
    assert (
        "--no-scheduler runs none here; set SYMOPT_RAY_DASHBOARD=true for `symopt scheduler`" in done.stderr
    )
