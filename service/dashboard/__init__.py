"""The browser dashboard: static files (plain ES modules and uPlot) that the service serves at `/`.

The page itself needs no key; it asks for one and sends it with every `/v1` call it makes.
Nothing is built: `static/` holds what the browser loads, uPlot included (with its licence), so
the service works offline.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["STATIC_DIR", "mount_dashboard"]

STATIC_DIR = Path(__file__).resolve().parent / "static"


def mount_dashboard(app: FastAPI) -> None:
    """`/` answers the page; `/dashboard/...` its modules, styles and vendored uPlot.

    Only these two paths are taken, not a catch-all mount at `/`: unknown paths keep the API's
    own 404 and 405 answers.
    """
    app.mount("/dashboard", StaticFiles(directory=STATIC_DIR), name="dashboard")

    @app.get("/", include_in_schema=False, response_class=FileResponse)
    def dashboard_index() -> FileResponse:
        """The dashboard's single page (hash routes: #/jobs, #/job/ID, #/sweep/ID, ...)."""
        # no-cache: a browser revalidates (ETag) and so picks up a new page after an upgrade.
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})
