"""`symopt serve`, `symopt keys create` and `symopt migrate`, as a user runs them."""

from __future__ import annotations

import json
import stat
import subprocess
import sys

import httpx

from service.store.migrate import head_revision, upgrade
from service.testing import ROOT, live_service, one_thread_env

from ..specs import CORPUS_BYTES, tiny_job
from ..waiting import LIMIT
from .conftest import TINY_JOB, previous_revision
from .live import SharedService

# The key and migration tests need the API, not Ray: `serve --no-scheduler` starts in a second or two.
NO_SCHEDULER = ("--no-scheduler",)


def symopt(
    *args: str, home, database_url: str | None = None, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    env = one_thread_env(SYMOPT_HOME=str(home), XDG_CONFIG_HOME=str(home / "config"), **extra_env)
    env.pop("SYMOPT_DATABASE_URL", None)
    if database_url:
        env["SYMOPT_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_first_start_prints_an_admin_key_once_and_saves_it_0600(tmp_path):
    with live_service(tmp_path, args=NO_SCHEDULER) as service:
        assert service.api_key is not None
        credentials = tmp_path / "config" / "symopt" / "credentials.json"
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
        assert json.loads(credentials.read_text()) == {"url": service.url, "api_key": service.api_key}
        headers = {"Authorization": f"Bearer {service.api_key}"}
        created = httpx.post(f"{service.url}/v1/jobs", json=TINY_JOB, headers=headers)
        assert created.status_code == 201
        assert httpx.get(f"{service.url}/v1/jobs", headers=headers).json()["count"] == 1
        assert httpx.get(f"{service.url}/v1/jobs").status_code == 401
    with live_service(tmp_path, args=NO_SCHEDULER) as again:  # the second start creates no new key
        assert again.api_key is None
        assert httpx.get(f"{again.url}/v1/jobs", headers=headers).json()["count"] == 1


def test_keys_create_and_migrate(tmp_path, database_url):
    done = symopt(
        "keys", "create", "--tenant", "acme", "--name", "ci", home=tmp_path, database_url=database_url
    )
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert key.startswith("sym_")
    status = symopt("migrate", "--status", home=tmp_path, database_url=database_url)
    assert status.returncode == 0
    head = head_revision()
    assert status.stdout.strip() == f"current={head} head={head}"
    with live_service(tmp_path, database_url, args=NO_SCHEDULER) as service:
        response = httpx.get(f"{service.url}/v1/presets", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200


def test_serve_and_scheduler_refuse_a_production_database_behind_head(tmp_path, own_database_url):
    older, head = previous_revision(), head_revision()
    upgrade(own_database_url, older)
    if own_database_url.startswith("sqlite"):
        # The embedded default upgrades itself whenever a command opens it.
        done = symopt("keys", "create", "--tenant", "t", home=tmp_path, database_url=own_database_url)
        assert done.returncode == 0, done.stderr
    else:
        for command in ("serve", "scheduler"):
            refused = symopt(command, home=tmp_path, database_url=own_database_url)
            assert refused.returncode == 2, (command, refused.stdout, refused.stderr)
            assert f"symopt {command}: The database is at revision {older}, this code needs {head}" in (
                refused.stderr
            )
            assert "Upgrade it with `symopt migrate`" in refused.stderr
        status = symopt("migrate", "--status", home=tmp_path, database_url=own_database_url)
        assert status.stdout.strip() == f"current={older} head={head}"  # refusing changed nothing
        migrated = symopt("migrate", home=tmp_path, database_url=own_database_url)
        assert migrated.returncode == 0, migrated.stderr
    status = symopt("migrate", "--status", home=tmp_path, database_url=own_database_url)
    assert status.stdout.strip() == f"current={head} head={head}"


def test_symopt_run_starts_an_embedded_service_or_uses_the_running_one(tmp_path):
    env = one_thread_env(
        SYMOPT_HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"), SYMOPT_RAY_NUM_CPUS="1"
    )
    command = [
        sys.executable,
        "-m",
        "service.cli",
        "run",
        "examples/quickstart.yaml",
        "--set",
        "steps=30",
        "--set",
        "data.corpus=pystdlib",
        "--set",
        f"data.options={{max_bytes: {CORPUS_BYTES}}}",
        "--set",
        "eval.every=15",
    ]
    alone = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=LIMIT)
    assert alone.returncode == 0, alone.stderr
    assert "starting the embedded service" in alone.stderr
    assert alone.stdout.strip().splitlines()[-1].startswith("val_loss=")
    assert "status=succeeded steps=30" in alone.stdout
    with live_service(tmp_path, env={"SYMOPT_RAY_NUM_CPUS": "1"}) as service:
        used = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=LIMIT)
        assert used.returncode == 0, used.stderr
        assert "starting the embedded service" not in used.stderr
        credentials = json.loads((tmp_path / "config" / "symopt" / "credentials.json").read_text())
        listed = httpx.get(
            f"{service.url}/v1/jobs", headers={"Authorization": f"Bearer {credentials['api_key']}"}
        )
        assert listed.json()["count"] == 2  # both runs are in the one store
    bad = subprocess.run(
        [*command, "--set", "optimizer.preset=lion"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "unknown preset 'lion'" in bad.stderr


def test_sweep_create_and_show_through_the_cli(tmp_path, shared_service: SharedService):
    import yaml

    spec = tmp_path / "sweep.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "cli",
                "n_trials": 2,
                "parallelism": 2,
                "pruner": "none",
                "search_space": {"optimizer.lr": {"type": "log_uniform", "low": 1e-3, "high": 1e-2}},
                "base": tiny_job(steps=20, eval={"every": 10, "batches": 1}, optimizer={"preset": "adamw"}),
            }
        )
    )
    tenant = shared_service.tenant()
    env = one_thread_env(
        XDG_CONFIG_HOME=str(tmp_path / "config"), SYMOPT_URL=tenant.url, SYMOPT_API_KEY=tenant.api_key
    )

    def symopt_remote(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "service.cli", *args]
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=LIMIT)

    created = symopt_remote("sweep", "create", str(spec))
    assert created.returncode == 0, created.stderr
    sweep_id = created.stdout.strip()
    shown = symopt_remote("sweep", "show", sweep_id, "--watch")
    assert shown.returncode == 0, shown.stderr
    assert "succeeded" in shown.stdout
    assert "2/2 trials" in shown.stdout
    assert "best adamw:" in shown.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: {model: {family: qwen9}}\n")
    refused = symopt_remote("sweep", "create", str(bad))
    assert refused.returncode == 2
    assert "valid families" in refused.stderr


def test_the_scheduler_refuses_a_ray_client_address_and_says_what_to_run(tmp_path):
    done = symopt("scheduler", home=tmp_path, RAY_ADDRESS="ray://127.0.0.1:10001")
    assert done.returncode == 2, done.stderr
    assert "RAY_ADDRESS=ray://127.0.0.1:10001 is a Ray Client address" in done.stderr
    assert "RAY_ADDRESS=auto" in done.stderr
