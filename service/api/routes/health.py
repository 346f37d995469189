"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from ...errors import ForbiddenError
from ...store.migrate import current_revision, head_revision
from ..deps import PrincipalDep, StoreDep
from ..errors import error_responses
from ..schemas import ReadinessPublic

router = APIRouter(tags=["health"], responses=error_responses(400))

RAY_NOT_USED = "not used by this process (API only: the scheduler runs elsewhere)"


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=ReadinessPublic,
    responses={503: {"model": ReadinessPublic, "description": "Not ready: `checks` says what is wrong"}},
)
def readyz(request: Request, store: StoreDep) -> JSONResponse:
    """Ready to serve: the database answers, its schema is at head, and Ray answers when this
    process runs the scheduler (503 otherwise, with what is wrong in `checks`)."""
    checks: dict[str, str] = {}
    try:
        with store.read() as session:  # no write lock: readiness polls never queue behind writers
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
        current, head = current_revision(store.engine), head_revision()
        checks["migrations"] = "head" if current == head else f"at {current or 'none'}, need {head}"
    except Exception as error:  # any failure means not ready; say which
        checks.setdefault("database", f"unreachable: {type(error).__name__}")
    # Set by the app's lifespan; absent when the app was never started (a bare TestClient).
    scheduler = getattr(request.app.state, "scheduler", None)
    checks["ray"] = RAY_NOT_USED if scheduler is None else scheduler.runtime.check()
    ready = (
        checks.get("database") == "ok"
        and checks.get("migrations") == "head"
        and checks["ray"] in ("ok", RAY_NOT_USED)
    )
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses=error_responses(400, 401, 403, 503, by_reference=True)
    | {200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"}},
)
def prometheus_metrics(request: Request, principal: PrincipalDep) -> Response:
    """Prometheus text format: requests by route and status, latency, jobs by status (admin keys only)."""
    if not principal.is_admin:
        # The jobs gauge counts every tenant's jobs: not for one tenant's eyes.
        raise ForbiddenError(
            "/metrics needs an admin API key (it counts every tenant's jobs); create one with "
            "`symopt keys create --tenant NAME --admin` and scrape with it"
        )
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
