"""The FastAPI application: `create_app(settings)` builds it; `symopt serve` runs it."""

from __future__ import annotations

import gc
import re
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute

from ..dashboard import mount_dashboard
from ..redaction import PathRedactor
from ..scheduler import Scheduler
from ..settings import Settings
from ..store import Store
from ..store.migrate import ensure_schema
from .errors import install_error_handlers
from .limits import SUBMISSIONS, BodyLimits, RateLimiter, SubmissionGate, UrlCharacters
from .observability import Metrics, RequestMetrics
from .routes import account, agents, catalog, datasets, health, jobs, studies, sweeps, uploaded_models
from .spec_checks import SpecChecker

__all__ = ["UPLOAD_PATHS", "create_app"]

# Routes whose bodies are files, streamed to disk under settings.max_upload_bytes: exact paths,
# or patterns (an agent's checkpoint of a job).
UPLOAD_PATHS: tuple[str | re.Pattern[str], ...] = (
    "/v1/datasets",
    "/v1/models/uploads",
    re.compile(r"/v1/jobs/[^/]+/checkpoint"),
)


# How long stopping waits for runs to stop at a step boundary (they are requeued either way).
SCHEDULER_STOP_SECONDS = 15.0


def _operation_id(route: APIRoute) -> str:
    # Readable OpenAPI operation ids: the route functions' names without the suffix.
    return route.name.removesuffix("_route")


def create_app(settings: Settings | None = None, *, store: Store | None = None) -> FastAPI:
    """The API. The embedded default migrates its SQLite file at start; a production database
    must already be at head, or the service refuses to start and says how to upgrade it."""
    settings = settings or Settings()
    url = settings.resolved_database_url()
    store = store or Store.connect(url)
    metrics = Metrics(store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ensure_schema(url, migrate=settings.embedded)
        scheduler = Scheduler(store, settings) if settings.run_scheduler else None
        if scheduler is not None:
            scheduler.start()
        app.state.scheduler = scheduler
        # What startup made (torch, the models' and specs' modules: about a million objects) is
        # kept for the process's life: frozen out of the collector's view, so that a full
        # collection walks only what requests made (it took 100-200 ms: a poll's p99).
        gc.collect()
        gc.freeze()
        yield
        app.state.stopping.set()  # already set where `symopt serve` caught the signal
        if scheduler is not None:
            scheduler.stop(timeout=SCHEDULER_STOP_SECONDS)
        app.state.spec_checker.close()
        store.close()

    app = FastAPI(
        title="symopt",
        version="0.1.0",
        summary="Optimizer-as-a-service: train and tune with the symmetry-compatible optimizer stack",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.metrics = metrics
    # Set when the service begins to stop: event streams then end with a `reconnect` event, as
    # uvicorn waits for open connections before the lifespan's end stops (and requeues) the jobs.
    app.state.stopping = threading.Event()
    app.state.limiter = RateLimiter(settings.job_rate_per_minute, settings.job_rate_burst)
    app.state.spec_checker = SpecChecker()
    routers = (jobs, sweeps, studies, agents, datasets, uploaded_models, catalog, account, health)
    for module in routers:
        app.include_router(module.router)
    mount_dashboard(app)  # `/` and `/dashboard/...`: the browser dashboard's static files
    install_error_handlers(app, redact=PathRedactor.for_settings(settings))
    app.add_middleware(BodyLimits, max_bytes=settings.max_body_bytes, streamed=UPLOAD_PATHS)
    # Outside BodyLimits: a key with no token left is answered before its body is read.
    app.add_middleware(SubmissionGate, limiter=app.state.limiter, paths=SUBMISSIONS)
    app.add_middleware(UrlCharacters)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app
