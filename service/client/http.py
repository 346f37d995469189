"""HTTP with bounded retries. Connection failures, 502/503/504 and 429 are retried with
exponential backoff and full jitter (honouring Retry-After), a bounded number of times. A request
that may have reached the server (a POST whose response was lost) is retried only when it is safe
to repeat: reads, and writes that carry an Idempotency-Key, which the server answers with what
the first attempt created."""

from __future__ import annotations

import contextlib
import random
import time
from typing import Any

import httpx

from .errors import ApiError, error_for

__all__ = ["RETRIED_STATUSES", "Transport"]

RETRIED_STATUSES = frozenset({429, 502, 503, 504})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


class Transport:
    """An httpx client with the key, and the retry policy above."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        retries: int = 6,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
    ) -> None:
        self.url = url
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout
        )
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff

    def request(self, method: str, path: str, *, repeatable: bool = False, **kwargs: Any) -> Any:
        """The JSON body of a successful answer (None when empty); an ApiError subclass otherwise.
        `repeatable`: this write may be sent twice (e.g. a cancel) even without an idempotency key."""
        response = self.send(method, path, repeatable=repeatable, **kwargs)
        return response.json() if response.content else None

    def send(self, method: str, path: str, *, repeatable: bool = False, **kwargs: Any) -> httpx.Response:
        headers = kwargs.get("headers") or {}
        safe = repeatable or method in _SAFE_METHODS or "Idempotency-Key" in headers
        attempt = 0
        while True:
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.ConnectError:
                # Nothing reached the server: every request may be sent again.
                if attempt >= self.retries:
                    raise
            except httpx.TransportError:
                # The request may have been processed and only its answer lost.
                if not safe or attempt >= self.retries:
                    raise
            else:
                # 429 means "not processed", so any request may be repeated after it; but a tenant
                # quota that is used up stays so until jobs finish: that 429 is reported at once.
                limited = response.status_code == 429 and not _quota_used_up(response)
                retry = limited or (
                    response.status_code in RETRIED_STATUSES and safe and response.status_code != 429
                )
                if not retry or attempt >= self.retries:
                    if response.status_code >= 400:
                        raise error_of(response)
                    return response
                self._sleep(attempt, response.headers.get("retry-after"))
                attempt += 1
                continue
            self._sleep(attempt, None)
            attempt += 1

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        delay = random.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))  # full jitter
        if retry_after is not None:
            with contextlib.suppress(ValueError):
                delay = max(delay, float(retry_after))
        time.sleep(delay)

    def close(self) -> None:
        self.http.close()


def error_of(response: httpx.Response) -> ApiError:
    """The ApiError of an error response (its body read first when it was streamed)."""
    response.read()
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return error_for(response.status_code, body, dict(response.headers))


def _quota_used_up(response: httpx.Response) -> bool:
    """The service's QuotaExceededError: its message starts with "Quota <name>:"."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return False
    return isinstance(detail, str) and detail.startswith("Quota ")
