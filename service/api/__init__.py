"""The REST API (FastAPI), versioned under /v1."""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
