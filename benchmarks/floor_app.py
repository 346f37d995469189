"""The floor for symopt's metric reads: the same answer from the same SQLite table, as little code
as it takes (FastAPI, uvicorn and the sqlite3 module, no ORM, no pool, no middleware), with the
same checks (the key's hash compared in constant time, not revoked; the job in the key's tenant).

    SYMOPT_FLOOR_DB=/path/symopt.db uvicorn benchmarks.floor_app:app --port 8001

Answers GET /v1/jobs/{id}/metrics with names, since_step, after_seq and limit as symopt does for
an answer that fits (the reads benchmarks.read_floor times); a longer one is cut at `limit`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sqlite3
import threading

from fastapi import FastAPI, Header, HTTPException, Response

app = FastAPI()
_local = threading.local()


def _db() -> sqlite3.Connection:
    if not hasattr(_local, "db"):
        _local.db = sqlite3.connect(f"file:{os.environ['SYMOPT_FLOOR_DB']}?mode=ro", uri=True)
    return _local.db  # type: ignore[no-any-return]


def _tenant(db: sqlite3.Connection, authorization: str) -> str:
    prefix, _, rest = authorization.removeprefix("Bearer ").partition("_")
    key_id, _, secret = rest.partition("_")
    row = db.execute(
        "SELECT tenant_id, secret_hash, revoked_at FROM symopt_api_keys WHERE id = ?", (key_id,)
    ).fetchone()
    digest = hashlib.sha256(secret.encode()).hexdigest()
    if prefix != "sym" or row is None or not hmac.compare_digest(row[1], digest) or row[2] is not None:
        raise HTTPException(401, "Invalid or missing API key")
    return str(row[0])


@app.get("/v1/jobs/{job_id}/metrics")
def metrics(
    job_id: str,
    authorization: str = Header(""),
    names: str = "",
    since_step: int | None = None,
    after_seq: int | None = None,
    limit: int = 10_000,
) -> Response:
    db = _db()
    db.execute("BEGIN")
    try:
        tenant = _tenant(db, authorization)
        job = db.execute(
            "SELECT metrics_seq FROM symopt_jobs WHERE id = ? AND tenant_id = ?", (job_id, tenant)
        ).fetchone()
        if job is None:
            raise HTTPException(404, f"Job {job_id} not found")
        where, args = ["job_id = ?"], [job_id]
        for clause, value in (("step > ?", since_step), ("seq > ?", after_seq)):
            if value is not None:
                where.append(clause)
                args.append(value)
        wanted = [n for n in names.split(",") if n]
        if wanted:
            where.append(f"name IN ({','.join('?' * len(wanted))})")
            args += wanted
        query = f"SELECT name, step, value, kind, seq FROM symopt_metric_points WHERE {' AND '.join(where)}"
        rows = db.execute(f"{query} ORDER BY name, step LIMIT ?", [*args, limit + 1]).fetchall()
    finally:
        db.execute("COMMIT")
    truncated = len(rows) > limit
    series: dict[str, dict[str, list[object]]] = {}
    for name, step, value, kind, _ in rows[:limit]:
        held = series.setdefault(name, {"name": name, "steps": [], "values": []})
        held["steps"].append(step)
        held["values"].append(value if value is not None else kind)
    ends = [s["steps"][-1] for s in series.values()] + ([] if since_step is None else [since_step])
    body = {
        "job_id": job_id,
        "series": [series[n] for n in sorted(series)],
        "last_step": max(ends, default=None),
        "truncated": truncated,
        "next_seq": max([job[0], *(r[4] for r in rows[:limit])]),
        "thinned": False,
    }
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")
