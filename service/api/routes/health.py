"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from ...store.migrate import current_revision, head_revision
from ..deps import PrincipalDep, StoreDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(store: StoreDep) -> JSONResponse:
    """Ready to serve: the database answers and its schema is at head (503 otherwise)."""
    checks: dict[str, str] = {}
    try:
        with store.transaction() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
        current, head = current_revision(store.engine), head_revision()
        checks["migrations"] = "head" if current == head else f"at {current or 'none'}, need {head}"
    except Exception as error:  # any failure means not ready; say which
        checks.setdefault("database", f"unreachable: {type(error).__name__}")
    ready = checks.get("database") == "ok" and checks.get("migrations") == "head"
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response)
def prometheus_metrics(request: Request, principal: PrincipalDep) -> Response:
    """Prometheus text format: requests by route and status, latency, jobs by status."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
