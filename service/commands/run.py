"""`symopt run SPEC`: the main job on the embedded default, through the service.

Submits the spec over HTTP to the service at the saved URL if one answers; otherwise starts an
embedded one (SQLite in ~/.symopt, local Ray) in this process for the duration of the job.
Prints progress, then the final `val_loss=...` on its last line.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .local import add_settings


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = commands.add_parser(
        "run", help="run a job spec on the service (starting an embedded one if needed)"
    )
    run.add_argument("spec", type=Path, help="a YAML or JSON job spec")
    add_settings(run)
    run.set_defaults(handler=run_job)


@contextlib.contextmanager
def embedded_service() -> Iterator[str]:
    """The API and scheduler on a free loopback port of this process, with the saved credentials.

    The port is bound here, before the app's lifespan starts local Ray: Ray binds dozens of
    port-0 sockets while it starts, and one of them could take a port that was only found free."""
    import socket

    import uvicorn

    from symopt_core.errors import SymoptError

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        app, address = _embedded_app(port=int(listener.getsockname()[1]))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [listener]}, name="symopt-embedded", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + 120
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise SymoptError("the embedded service did not start; see the messages above")
            time.sleep(0.05)
        try:
            yield address
        finally:
            server.should_exit = True
            thread.join(timeout=120)


def _embedded_app(port: int) -> tuple[Any, str]:
    """The embedded service's app on `port` of the loopback and its URL, after checking that no
    `symopt serve` schedules on the same database, and with a key saved for this home."""
    from symopt_core.errors import SymoptError

    from ..api import create_app
    from ..credentials import read_credentials, write_credentials
    from ..errors import ConflictError
    from ..scheduler.lock import SchedulerLock
    from ..settings import Settings
    from ..store import Store
    from ..store.keys import home_admin_key
    from ..store.migrate import ensure_schema

    settings = Settings(run_scheduler=True, host="127.0.0.1", port=port)
    url = settings.resolved_database_url()
    lock = SchedulerLock.for_url(url)
    try:
        lock.acquire()  # only to ask: is a service already scheduling on this database?
    except ConflictError:
        raise SymoptError(
            f"a `symopt serve` already runs on {url} but does not answer at the saved URL; "
            "submit to it (SYMOPT_URL=...) or stop it"
        ) from None
    lock.release()
    ensure_schema(url, migrate=True)
    store = Store.connect(url)
    saved = read_credentials()
    with store.transaction() as session:  # no saved key, or one of another database: a new one
        key, _ = home_admin_key(
            session=session,
            saved=saved["api_key"] if saved else None,
            name="symopt run",
            only_on_first_start=False,
        )
    address = f"http://{settings.host}:{settings.port}"
    write_credentials(address, str(key))
    return create_app(settings, store=store), address


def run_job(args: argparse.Namespace) -> int:
    from symopt_core.errors import SymoptError

    from ..client import ApiError, Client
    from .local import load_spec_or_explain
    from .remote import number

    spec = load_spec_or_explain(args.spec, args.settings, "run")
    if spec is None:
        return 2
    with contextlib.ExitStack() as stack:
        try:
            client = stack.enter_context(Client())
            running = client.ready()
        except SymoptError:  # no saved key yet: the embedded service makes one
            running = False
        if not running:
            print(
                "symopt run: starting the embedded service (SQLite in ~/.symopt, local Ray) ...",
                file=sys.stderr,
            )
            try:
                client = stack.enter_context(Client(stack.enter_context(embedded_service())))
            except SymoptError as error:
                print(f"symopt run: {error}", file=sys.stderr)
                return 2
        try:
            job = client.submit(spec)
        except ApiError as error:
            print(f"symopt run: the service refused the job: {error.message}", file=sys.stderr)
            return 2
        print(f"symopt run: job {job.id} on {client.url}", file=sys.stderr)
        try:
            job.wait(progress="auto")
        except KeyboardInterrupt:
            job.cancel()
            print("symopt run: cancelled", file=sys.stderr)
            return 130
    result = job.result or {}
    best, final = (result.get(key) for key in ("best_val_loss", "val_loss"))
    print(
        f"status={job.status} steps={job.step} attempt={job.data['attempt']} "
        f"best_val_loss={number(best) if best is not None else 'nan'} job={job.id}"
    )
    if job.data["error"]:
        print(job.data["error"].splitlines()[0], file=sys.stderr)
    print(f"val_loss={number(final) if final is not None else 'nan'}")  # a float for scripts
    return 0 if job.status == "succeeded" else 1
