"""Prometheus metrics: requests by route and status, their latency, and jobs by status."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..store import Store
from ..store.models import Job
from ..store.status import JobStatus

__all__ = ["Metrics", "RequestMetrics"]


class _JobsByStatus(Collector):
    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("symopt_jobs", "jobs in the store, by status", labels=["status"])
        with self.store.read() as session:  # a scrape must not take SQLite's write lock
            rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
        counts: dict[str, int] = {str(status): int(count) for status, count in rows}
        for status in JobStatus:
            family.add_metric([status.value], counts.get(status.value, 0))
        yield family


class Metrics:
    """One registry per app (tests build many apps in one process)."""

    def __init__(self, store: Store) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "symopt_http_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "symopt_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=self.registry,
        )
        self.registry.register(_JobsByStatus(store))


class RequestMetrics:
    """ASGI middleware: counts and times every request by its route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(scope["method"], route).observe(time.perf_counter() - started)
