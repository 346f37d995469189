"""Real databases for the store contract suite and the API tests, and the live service the
tests of one xdist worker share.

Every test runs on a fresh SQLite file, a copy of one migrated once per session (running Alembic
on a fresh file costs 0.35-0.55 s, and some 300 tests would pay it); with
SYMOPT_TEST_DATABASE_URL set (scripts/test sets it to the PostgreSQL server of these machines)
it runs on PostgreSQL too: a database of its own per test worker, migrated once, its tables
emptied between tests.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from service.api import create_app
from service.settings import Settings
from service.store import Store
from service.store.keys import create_api_key, create_tenant
from service.store.migrate import alembic_config, head_revision, upgrade
from service.store.models import Base
from service.testing import chromium, live_service

from ..specs import tiny_job
from .live import Api, SharedService

if TYPE_CHECKING:
    from playwright.sync_api import Browser

POSTGRES = os.environ.get("SYMOPT_TEST_DATABASE_URL") or None
BACKENDS = ["sqlite"] + (["postgresql"] if POSTGRES else [])


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database of this worker's own on the test server, migrated to head, dropped at the end."""
    assert POSTGRES is not None
    server = make_url(POSTGRES)
    name = f"symopt_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per session: each test gets a copy of it."""
    path = tmp_path_factory.mktemp("template") / "symopt.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        path = tmp_path / "symopt.db"
        shutil.copyfile(request.getfixturevalue("migrated_sqlite"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("postgres_url")
    engine = create_engine(url)
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return str(url)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store.connect(database_url)
    yield store
    store.close()


@dataclass(frozen=True)
class Tenant:
    id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def make_tenant(store: Store, name: str) -> Tenant:
    with store.transaction() as session:
        tenant = create_tenant(session=session, name=name)
        return Tenant(tenant.id, create_api_key(session=session, tenant_id=tenant.id))


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=database_url, home=tmp_path / "home", sse_poll_seconds=0.05)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def alice(client: TestClient) -> Tenant:
    return make_tenant(client.app.state.store, "alice")  # type: ignore[attr-defined]


@pytest.fixture
def bob(client: TestClient) -> Tenant:
    return make_tenant(client.app.state.store, "bob")  # type: ignore[attr-defined]


TINY_JOB = tiny_job(steps=20)


def make_admin(store: Store, name: str) -> Tenant:
    """A tenant whose key is an admin key (for admin-only routes such as /metrics)."""
    with store.transaction() as session:
        tenant = create_tenant(session=session, name=name)
        return Tenant(tenant.id, create_api_key(session=session, tenant_id=tenant.id, is_admin=True))


@contextmanager
def own_postgres_database() -> Iterator[str]:
    """An empty database of its own on the test server, dropped afterwards: for tests that put
    foreign tables (Optuna's `alembic_version`) or an older schema where no other test may see them."""
    assert POSTGRES is not None
    server = make_url(POSTGRES)
    name = f"symopt_own_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def own_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty (unmigrated) database of this test's own, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'own.db'}"
        return
    with own_postgres_database() as url:
        yield url


def previous_revision() -> str:
    """The revision just before head: a database there is "behind head"."""
    script = ScriptDirectory.from_config(alembic_config(""))
    down = script.get_revision(head_revision()).down_revision
    assert isinstance(down, str), "head must have exactly one parent revision"
    return down


@pytest.fixture(scope="session")
def shared_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedService]:
    """This xdist worker's live `symopt serve` (SQLite, a local Ray of 2 CPUs), for every test
    that neither kills, restarts nor re-migrates it; each test acts as a tenant of its own."""
    with live_service(tmp_path_factory.mktemp("shared-service"), env={"SYMOPT_RAY_NUM_CPUS": "2"}) as running:
        assert running.api_key is not None
        yield SharedService(running, running.api_key)


@pytest.fixture
def api(shared_service: SharedService) -> Iterator[Api]:
    """A new tenant of the shared service; what it leaves queued or running is cancelled after."""
    tenant = Api(shared_service, shared_service.new_key())
    yield tenant
    tenant.cancel_all()
    tenant.http.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium, one per test module (the dashboard's browser tests)."""
    with chromium() as launched:
        yield launched
