"""A small Python client of the REST API (the `symopt run` command uses it; the client issue grows it).

It imports httpx and symopt_core's spec models, nothing of the server.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from symopt_core.errors import SymoptError

from .credentials import read_credentials

__all__ = ["ApiError", "Client"]

FINAL = frozenset({"succeeded", "failed", "diverged", "cancelled"})


class ApiError(SymoptError):
    """The server answered with an error; `status` and its message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class Client:
    """`Client(url, api_key)`; both fall back to SYMOPT_URL / SYMOPT_API_KEY, then to the file
    `symopt serve` or `symopt login` wrote (~/.config/symopt/credentials.json)."""

    def __init__(self, url: str | None = None, api_key: str | None = None, *, timeout: float = 30.0) -> None:
        saved = read_credentials() or {}
        self.url = (
            url or os.environ.get("SYMOPT_URL") or saved.get("url") or "http://127.0.0.1:8000"
        ).rstrip("/")
        key = api_key or os.environ.get("SYMOPT_API_KEY") or saved.get("api_key")
        if not key:
            raise SymoptError("No API key: pass api_key=, set SYMOPT_API_KEY, or run `symopt serve` once")
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                body = response.json()
                message = body.get("message") or body.get("detail") or response.text
            except ValueError:
                message = response.text
            raise ApiError(response.status_code, str(message))
        return response.json() if response.content else None

    def ready(self) -> bool:
        try:
            return (
                self.http.get("/readyz", timeout=2.0).status_code == 200
                and self._call("GET", "/v1/presets") is not None
            )
        except (httpx.TransportError, ApiError):
            return False

    def submit(self, spec: Mapping[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        job: dict[str, Any] = self._call("POST", "/v1/jobs", json=dict(spec), headers=headers)
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._call("GET", f"/v1/jobs/{job_id}")
        return job

    def metrics(
        self, job_id: str, *, names: list[str] | None = None, since_step: int | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": 100_000}
        if names:
            params["names"] = ",".join(names)
        if since_step is not None:
            params["since_step"] = since_step
        metrics: dict[str, Any] = self._call("GET", f"/v1/jobs/{job_id}/metrics", params=params)
        return metrics

    def cancel(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._call("POST", f"/v1/jobs/{job_id}/cancel")
        return job

    def submit_sweep(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        sweep: dict[str, Any] = self._call("POST", "/v1/sweeps", json=dict(spec))
        return sweep

    def sweep(self, sweep_id: str) -> dict[str, Any]:
        sweep: dict[str, Any] = self._call("GET", f"/v1/sweeps/{sweep_id}")
        return sweep

    def trials(self, sweep_id: str) -> list[dict[str, Any]]:
        trials: list[dict[str, Any]] = self._call("GET", f"/v1/sweeps/{sweep_id}/trials")["data"]
        return trials

    def importances(self, sweep_id: str) -> dict[str, dict[str, float]]:
        found: dict[str, dict[str, float]] = self._call("GET", f"/v1/sweeps/{sweep_id}/importances")
        return found

    def cancel_sweep(self, sweep_id: str) -> dict[str, Any]:
        sweep: dict[str, Any] = self._call("POST", f"/v1/sweeps/{sweep_id}/cancel")
        return sweep

    def follow(self, job_id: str, *, poll: float = 0.5) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(job, new metric points since the last yield) until the job has finished."""
        since: int | None = None
        while True:
            job = self.job(job_id)
            page = self.metrics(job_id, since_step=since)
            since = page["last_step"] if page["last_step"] is not None else since
            yield job, page
            if job["status"] in FINAL and not page["series"]:
                return
            if not page["series"]:
                time.sleep(poll)
