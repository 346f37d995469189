"""Request limits: a body-size cap (413) and a JSON nesting cap (422) for every route, control
characters kept out of URLs (400), and a per-key rate limit (429), answered before the body is
read when the key has no tokens left."""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import RateLimitedError
from ..store.keys import presented_key_id

__all__ = [
    "MAX_JSON_DEPTH",
    "SUBMISSIONS",
    "BodyLimits",
    "RateLimiter",
    "SubmissionGate",
    "UrlCharacters",
    "nests_deeper",
]

# The rate-limited submissions, by path, as their 429s name them.
SUBMISSIONS = {
    "/v1/jobs": "job submissions",
    "/v1/sweeps": "sweep submissions",
    "/v1/studies": "study submissions",
}

# The deepest spec (a study's base job's data options) nests 5 levels; 64 leaves room for any
# options a corpus takes, and keeps parsing far from Python's recursion limit.
MAX_JSON_DEPTH = 64


class BodyLimits:
    """ASGI middleware: bodies over `max_bytes` get 413, and JSON nested deeper than `max_depth`
    gets 422 (as does a body that is not UTF-8), before any route sees them.

    A declared Content-Length is checked at once; a chunked body is read (at most max_bytes + 1
    bytes are held) and replayed to the application when it fits. Without the depth cap, 30 000
    nested brackets (60 KB) would exhaust the JSON parser's recursion and come back as FastAPI's
    400 "There was an error parsing the body", which names nothing to fix.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        max_depth: int = MAX_JSON_DEPTH,
        streamed: tuple[str | re.Pattern[str], ...] = (),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        # Upload routes: their bodies are files, streamed to disk under the routes' own size cap.
        self.streamed = streamed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE")
            or any(
                scope["path"] == path if isinstance(path, str) else path.fullmatch(scope["path"])
                for path in self.streamed
            )
        ):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._reject(send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False
        problem = self._unreadable(body)
        if problem is not None:
            await _send_json(send, 422, str(problem["msg"]), detail=[problem])
            return

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def _unreadable(self, body: bytes) -> dict[str, object] | None:
        """The 422 problem of a body no JSON parser should be handed, if it is one."""
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as error:
            bad = body[error.start : error.start + 1].hex().upper()
            message = (
                f"The body is not UTF-8 (byte 0x{bad} at offset {error.start}); send JSON encoded as UTF-8"
            )
            return {"loc": [], "msg": message, "type": "json_not_utf8"}
        if nests_deeper(body, self.max_depth):
            message = (
                f"The JSON body nests deeper than {self.max_depth} levels of objects and arrays; no spec does"
            )
            return {"loc": [], "msg": message, "type": "json_too_deep"}
        return None

    async def _reject(self, send: Send) -> None:
        detail = f"Request body too large: at most {self.max_bytes} bytes are accepted"
        await _send_json(send, 413, detail)


def nests_deeper(body: bytes, limit: int) -> bool:
    """Whether `body`'s objects and arrays nest deeper than `limit` (brackets inside strings do not
    count). Bytes that are not JSON are left to the parser to reject."""
    if body.count(b"{") + body.count(b"[") <= limit:
        return False  # cannot nest deeper: most bodies end here, at the speed of bytes.count
    depth, in_string, escaped = 0, False, False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # closing quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x7B, 0x5B):  # { [
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x7D, 0x5D):  # } ]
            depth -= 1
    return False


def _control(data: bytes) -> int | None:
    return next((byte for byte in data if byte < 0x20 or byte == 0x7F), None)


class UrlCharacters:
    """ASGI middleware: a path or query holding a control character (`%00`, `%0a`, ...) gets 400.

    No id, name or filter has one, and PostgreSQL rejects NUL in any text parameter: without this,
    `GET /v1/jobs/a%00b` would reach the database and come back as a 503 "database error".
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
            found = _control(unquote_to_bytes(path) + unquote_to_bytes(scope["query_string"]))
            if found is not None:
                detail = (
                    f"The URL holds the control character 0x{found:02X} (percent-encoded in its path "
                    "or query): ids, names and filters never contain one; check how the URL is built"
                )
                await _send_json(send, 400, detail)
                return
        await self.app(scope, receive, send)


class SubmissionGate:
    """ASGI middleware: a submission (a POST in `paths`) whose key has no rate-limit token left
    gets its 429 before its body is read and parsed, its key is checked against the database, or
    a thread is taken. The answer is held for up to `hold_s` first (a client that honours
    Retry-After waits longer anyway; a token that comes meanwhile lets the request through), so a
    client looping on rejected 53 KB sweeps makes one request a second per connection instead of
    a thousand, and the event loop's time goes to other tenants' requests.

    The route still takes the token once the key is authenticated; this gate only reads the
    bucket, so a forged key id (the part of a key before its secret) can neither spend nor fill
    another key's tokens."""

    def __init__(
        self, app: ASGIApp, limiter: RateLimiter, paths: Mapping[str, str], hold_s: float = 1.0
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.paths = paths
        self.hold_s = hold_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        submission = scope["type"] == "http" and scope["method"] == "POST"
        what = self.paths.get(scope["path"]) if submission else None
        if what is not None:
            authorization = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            scheme, _, presented = authorization.partition(" ")
            key_id = presented_key_id(presented.strip()) if scheme.lower() == "bearer" else None
            wait = self.limiter.wait(key_id) if key_id is not None else 0.0
            if key_id is not None and wait > 0:
                await asyncio.sleep(min(wait, self.hold_s))
                wait = self.limiter.wait(key_id)  # a token may have come: then the route runs
            if wait > 0:
                message = str(RateLimitedError.for_key(what, wait))
                # The body stays unread: uvicorn discards what arrives of it after the answer.
                retry_after = str(max(1, math.ceil(wait))).encode()
                await _send_json(send, 429, message, headers=((b"retry-after", retry_after),))
                return
        await self.app(scope, receive, send)


async def _send_json(
    send: Send,
    status: int,
    message: str,
    detail: object = None,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    """An error in the API's one shape: `message`, and `detail` (a 422's problems, else the message)."""
    body = json.dumps({"message": message, "detail": message if detail is None else detail}).encode()
    fields = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*fields, *headers]})
    await send({"type": "http.response.body", "body": body})


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per key: `burst` requests at once, refilled at `per_minute`."""

    def __init__(self, per_minute: float, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def check(self, key: str, what: str = "requests") -> None:
        """Take one token for `key`, or raise RateLimitedError with the seconds to wait."""
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.setdefault(key, _Bucket(self.burst, now))
            self._refill(bucket, now)
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return
            wait = self._wait(bucket)
        raise RateLimitedError.for_key(what, wait)

    def wait(self, key: str) -> float:
        """Seconds until `key` has a token (0 when it has one now), taking none; a key never
        seen has a full bucket and none is made for it."""
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                return 0.0
            self._refill(bucket, time.monotonic())
            return 0.0 if bucket.tokens >= 1.0 else self._wait(bucket)

    def _refill(self, bucket: _Bucket, now: float) -> None:
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now

    def _wait(self, bucket: _Bucket) -> float:
        return (1.0 - bucket.tokens) / self.rate if self.rate > 0 else 60.0
