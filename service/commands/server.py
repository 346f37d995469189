"""Server commands: `symopt serve`, `symopt keys create`, `symopt migrate`."""

from __future__ import annotations

import argparse
import sys
import threading
from types import FrameType
from typing import Any

from ..errors import ServiceError

# How long a stopping `symopt serve` waits for open requests before it cancels them. Event streams
# end by themselves within a poll (with a `reconnect` event), so this bounds only slow requests
# (uploads); then the scheduler stops and requeues the running jobs (service/api/app.py).
GRACEFUL_SHUTDOWN_SECONDS = 5


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser("serve", help="run the API (embedded default: SQLite file, first admin key)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument(
        "--database-url", help="SQLAlchemy URL (default: $SYMOPT_DATABASE_URL, else SQLite in ~/.symopt)"
    )
    serve.add_argument(
        "--no-scheduler",
        action="store_true",
        help="API only (production: API replicas beside `symopt scheduler`)",
    )
    serve.set_defaults(handler=run_serve)

    scheduler = commands.add_parser("scheduler", help="the scheduler alone (production, beside API replicas)")
    scheduler.add_argument("--database-url", help="SQLAlchemy URL (default: $SYMOPT_DATABASE_URL)")
    scheduler.set_defaults(handler=run_scheduler)

    keys = commands.add_parser("keys", help="API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    create = key_commands.add_parser(
        "create", help="create a key for a tenant (the tenant is created if new)"
    )
    create.add_argument("--tenant", required=True, help="tenant name")
    create.add_argument("--name", default="", help="a label for the key")
    create.add_argument("--admin", action="store_true", help="an admin key")
    create.add_argument(
        "--database-url", help="SQLAlchemy URL (default: $SYMOPT_DATABASE_URL, else embedded)"
    )
    create.set_defaults(handler=run_create_key)

    migrate = commands.add_parser("migrate", help="upgrade the database schema (alembic upgrade)")
    migrate.add_argument(
        "--database-url", help="SQLAlchemy URL (default: $SYMOPT_DATABASE_URL, else embedded)"
    )
    migrate.add_argument("--revision", default="head", help="target revision (default head)")
    migrate.add_argument("--status", action="store_true", help="only print the current and head revisions")
    migrate.set_defaults(handler=run_migrate)


def _settings(args: argparse.Namespace) -> Any:
    from ..settings import Settings

    overrides = {k: v for k in ("host", "port", "database_url") if (v := getattr(args, k, None)) is not None}
    return Settings(**overrides)


def _schema_ready(settings: Any, command: str) -> bool:
    """Migrate the embedded database, or check a production one; False after explaining why not."""
    from ..store.migrate import ensure_schema

    try:
        ensure_schema(settings.resolved_database_url(), migrate=settings.embedded)
    except ServiceError as error:
        print(f"symopt {command}: {error}", file=sys.stderr)
        return False
    return True


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ..api import create_app
    from ..credentials import read_credentials, write_credentials
    from ..errors import AuthError
    from ..store import Store
    from ..store.keys import authenticate, create_api_key, get_or_create_tenant
    from ..store.models import ApiKey

    settings = _settings(args).model_copy(update={"run_scheduler": not args.no_scheduler})
    url = settings.resolved_database_url()
    if not _schema_ready(settings, "serve"):
        return 2
    store = Store.connect(url)
    if settings.embedded:
        address = f"http://{settings.host}:{settings.port}"
        saved = read_credentials()
        with store.transaction() as session:
            first_start = session.query(ApiKey).first() is None
            if first_start:
                tenant = get_or_create_tenant(session=session, name="default")
                key = create_api_key(
                    session=session, tenant_id=tenant.id, name="first admin key", is_admin=True
                )
            else:
                key = saved["api_key"] if saved else ""
                try:  # the saved key is one of this database: keep the saved URL current
                    authenticate(session=session, presented=key)
                except AuthError:
                    key = ""
        if first_start:
            path = write_credentials(address, key)
            print(f"symopt serve: first start; admin API key (shown once): {key}", flush=True)
            print(f"symopt serve: saved with the URL for the CLI in {path} (mode 0600)", flush=True)
        elif key:
            write_credentials(address, key)
    print(f"symopt serve: database {url}", flush=True)
    app = create_app(settings, store=store)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    _stopping_server()(config, app.state.stopping).run()
    return 0


def _stopping_server() -> type[Any]:
    import uvicorn  # here, not at the top: the CLI's other commands start without it

    class StoppingServer(uvicorn.Server):
        """uvicorn that tells the app as soon as a signal asks it to stop. uvicorn waits for open
        connections before the lifespan's end, and an event stream stays open until its job ends:
        without this, SIGTERM would leave the jobs running and the scheduler's lock held."""

        def __init__(self, config: uvicorn.Config, stopping: threading.Event) -> None:
            super().__init__(config)
            self.stopping = stopping

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            self.stopping.set()  # a threading.Event: safe to set from a signal handler
            super().handle_exit(sig, frame)

    return StoppingServer


def run_scheduler(args: argparse.Namespace) -> int:
    import signal

    from ..scheduler import Scheduler
    from ..store import Store

    settings = _settings(args)
    url = settings.resolved_database_url()
    if not _schema_ready(settings, "scheduler"):
        return 2
    try:
        scheduler = Scheduler(Store.connect(url), settings)
        scheduler.start()
    except ServiceError as error:
        print(f"symopt scheduler: {error}", file=sys.stderr)
        return 2
    print(f"symopt scheduler: {scheduler.owner} on {url}", flush=True)
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    stopped.wait()
    scheduler.stop()
    return 0


def run_create_key(args: argparse.Namespace) -> int:
    from ..store import Store
    from ..store.keys import create_api_key, get_or_create_tenant

    settings = _settings(args)
    if not _schema_ready(settings, "keys"):
        return 2
    store = Store.connect(settings.resolved_database_url())
    with store.transaction() as session:
        tenant = get_or_create_tenant(session=session, name=args.tenant)
        key = create_api_key(session=session, tenant_id=tenant.id, name=args.name, is_admin=args.admin)
    store.close()
    print(key)
    return 0


def run_migrate(args: argparse.Namespace) -> int:
    from ..store import Store
    from ..store.migrate import current_revision, head_revision, upgrade

    url = _settings(args).resolved_database_url()
    if not args.status:
        upgrade(url, args.revision)
    store = Store.connect(url)
    current = current_revision(store.engine)
    store.close()
    print(f"current={current or 'none'} head={head_revision()}")
    return 0
