"""Server commands: `symopt serve`, `symopt scheduler`, `symopt migrate` (keys: keys.py)."""

from __future__ import annotations

import argparse
import copy
import sys
import threading
from pathlib import Path
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
    serve.add_argument(
        "--ray-dashboard",
        action="store_true",
        help="start Ray's own dashboard with the local Ray, on 127.0.0.1 (needs ray[default]); "
        "its URL goes to the log (default: $SYMOPT_RAY_DASHBOARD, else off)",
    )
    _add_log_format(serve)
    serve.set_defaults(handler=run_serve)

    scheduler = commands.add_parser("scheduler", help="the scheduler alone (production, beside API replicas)")
    scheduler.add_argument("--database-url", help="SQLAlchemy URL (default: $SYMOPT_DATABASE_URL)")
    _add_log_format(scheduler)
    scheduler.set_defaults(handler=run_scheduler)

    migrate = commands.add_parser("migrate", help="upgrade the database schema (alembic upgrade)")
    migrate.add_argument(
        "--database-url", help="SQLAlchemy URL (default: $SYMOPT_DATABASE_URL, else embedded)"
    )
    migrate.add_argument("--revision", default="head", help="target revision (default head)")
    migrate.add_argument("--status", action="store_true", help="only print the current and head revisions")
    migrate.set_defaults(handler=run_migrate)


def _add_log_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        help="the log (HTTP access and job lifecycle lines): text, or json, one object a line "
        "(default: $SYMOPT_LOG_FORMAT, else text)",
    )


def settings_of(args: argparse.Namespace) -> Any:
    """Settings from SYMOPT_* variables, with the command's options over them."""
    from ..settings import Settings

    names = ("host", "port", "database_url", "log_format")
    overrides = {k: v for k in names if (v := getattr(args, k, None)) is not None}
    if getattr(args, "ray_dashboard", False):  # off: $SYMOPT_RAY_DASHBOARD decides
        overrides["ray_dashboard"] = True
    return Settings(**overrides)


def log_config(log_format: str) -> dict[str, Any]:
    """uvicorn's logging (access lines on stdout, its own on stderr) plus the `symopt` loggers
    at INFO on stderr: the scheduler's and the job lifecycle lines (`symopt.jobs`). json: every
    record as one JSON object a line (service/scheduler/lifecycle.py)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["symopt"] = {
        "()": "uvicorn.logging.DefaultFormatter",
        "fmt": "%(levelprefix)s %(name)s: %(message)s",
    }
    if log_format == "json":
        json_lines = {"()": "service.scheduler.lifecycle.JsonFormatter"}
        config["formatters"] = {name: dict(json_lines) for name in config["formatters"]}
    config["handlers"]["symopt"] = {
        "formatter": "symopt",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["symopt"] = {"handlers": ["symopt"], "level": "INFO", "propagate": False}
    return config


def schema_ready(settings: Any, command: str) -> bool:
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
    from ..store import Store
    from ..store.keys import home_admin_key

    settings = settings_of(args).model_copy(update={"run_scheduler": not args.no_scheduler})
    url = settings.resolved_database_url()
    refused = _ray_dashboard_refused(settings)
    if refused:
        print(f"symopt serve: {refused}", file=sys.stderr)
        return 2
    if not schema_ready(settings, "serve"):
        return 2
    store = Store.connect(url)
    if settings.embedded:
        address = f"http://{settings.host}:{settings.port}"
        saved = read_credentials()
        with store.transaction() as session:
            key, first_start = home_admin_key(
                session=session,
                saved=saved["api_key"] if saved else None,
                name="first admin key",
                only_on_first_start=True,
            )
        if first_start:
            assert key is not None
            _announce_first_key(key, write_credentials(address, key))
        elif key:  # the saved key is one of this database: keep the saved URL current
            write_credentials(address, key)
    print(f"symopt serve: database {url}", flush=True)
    app = create_app(settings, store=store)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        log_config=log_config(settings.log_format),
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    # The port is bound before the lifespan starts local Ray (which binds dozens of port-0
    # sockets): a port in use fails here, before anything else starts.
    _stopping_server()(config, app.state.stopping).run(sockets=[config.bind_socket()])
    return 0


def _ray_dashboard_refused(settings: Any) -> str | None:
    """Why `--ray-dashboard` cannot be honoured here (said before anything starts), or None."""
    from ..scheduler.runtime import dashboard_unavailable

    if not settings.ray_dashboard or settings.ray_address:  # a cluster's dashboard is its head's
        return None
    if not settings.run_scheduler:
        return (
            "--ray-dashboard starts the dashboard of the scheduler's Ray, and --no-scheduler runs "
            "none here; set SYMOPT_RAY_DASHBOARD=true for `symopt scheduler` instead"
        )
    return dashboard_unavailable()


def _announce_first_key(key: str, path: Path) -> None:
    """On a terminal, show the first admin key once; anywhere else (a log file, a pipe, a
    journal) say only where it was saved: a log keeps the key for whoever reads it later."""
    if sys.stdout.isatty():
        print(f"symopt serve: first start; admin API key (shown once): {key}", flush=True)
        print(f"symopt serve: saved with the URL for the CLI in {path} (mode 0600)", flush=True)
    else:
        print(
            f"symopt serve: first start; admin API key written to {path} (mode 0600; "
            "not printed, as stdout is not a terminal)",
            flush=True,
        )


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
    import logging.config
    import signal

    from ..scheduler import Scheduler
    from ..store import Store

    settings = settings_of(args)
    logging.config.dictConfig(log_config(settings.log_format))
    url = settings.resolved_database_url()
    if not schema_ready(settings, "scheduler"):
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


def run_migrate(args: argparse.Namespace) -> int:
    from ..store import Store
    from ..store.migrate import current_revision, head_revision, upgrade

    url = settings_of(args).resolved_database_url()
    if not args.status:
        upgrade(url, args.revision)
    store = Store.connect(url)
    current = current_revision(store.engine)
    store.close()
    print(f"current={current or 'none'} head={head_revision()}")
    return 0
