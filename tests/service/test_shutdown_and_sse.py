"""The event stream across reconnects and a stopping service: a client that resumes with the
standard Last-Event-ID gets each point once, and SIGTERM ends open streams (with a `reconnect`
event and a retry time) so that the service stops, and requeues its running job, promptly."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from service.client import Client
from service.store import JobStatus
from service.store.jobs import NewEvent, append_events
from service.store.metrics import Point, record_metrics
from service.testing import live_service

from ..specs import tiny_job
from ..waiting import wait_for
from .live import events, rows
from .test_api_jobs import set_status, submit

RECONNECTS = 47  # as in the report: 47 reconnects gave 28,698 duplicate points
STOP_LIMIT_S = 30.0  # SIGTERM to exit, with a stream open (measured: about 3 s on 2 cores)


def sse_frames(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """The frames of an event stream as {field: value} (comments, the keep-alive pings, skipped)."""
    frame: dict[str, str] = {}
    for line in lines:
        if not line:
            if "data" in frame:
                yield frame
            frame = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            frame[field] = value.removeprefix(" ")


def test_reconnects_with_last_event_id_get_every_point_and_event_once(client, alice):
    job_id = submit(client, alice).json()["id"]
    set_status(client, job_id, JobStatus.RUNNING)
    store = client.app.state.store
    written: set[tuple[str, int]] = set()
    points: Counter[tuple[str, int]] = Counter()
    event_ids: Counter[int] = Counter()
    last_id: str | None = None  # as EventSource keeps it: the newest `id` field seen
    connections = 0

    def pending() -> bool:
        return not written <= set(points) or len(event_ids) < logged + 2  # + queued, running

    def read(frames_at_most: int | None) -> str | None:
        """One connection, as a browser's EventSource makes it: the same URL, Last-Event-ID."""
        nonlocal last_id, connections
        connections += 1
        headers = {**alice.headers, **({"Last-Event-ID": last_id} if last_id else {})}
        with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as stream:
            for taken, frame in enumerate(sse_frames(stream.iter_lines()), start=1):
                last_id = frame.get("id", last_id)
                data = json.loads(frame["data"])
                if frame["event"] == "metrics":
                    points.update((s["name"], step) for s in data["series"] for step in s["steps"])
                elif frame["event"] == "event":
                    event_ids[data["id"]] += 1
                cut = frames_at_most is not None and (taken == frames_at_most or not pending())
                if frame["event"] == "end" or cut:
                    return frame["event"]
        return None

    logged = 0
    for step in range(RECONNECTS):
        with store.transaction() as session:
            append_events(session=session, job_id=job_id, events=[NewEvent("log", step, f"step {step}")])
            record_metrics(session=session, job_id=job_id, points=[Point("train_loss", step, 4.0, 0.0)])
        written.add(("train_loss", step))
        logged += 1
        while pending():  # cut after 1, 2 or 3 frames: mid-poll, between events and metrics
            read(frames_at_most=1 + connections % 3)
        if step % 3 == 0:  # the newest step's val_loss, stored after its train_loss was sent
            with store.transaction() as session:
                record_metrics(session=session, job_id=job_id, points=[Point("val_loss", step, 4.1, 0.0)])
            written.add(("val_loss", step))
    set_status(client, job_id, JobStatus.SUCCEEDED)
    assert read(frames_at_most=None) == "end"  # the job has ended: the stream ends by itself
    assert connections >= RECONNECTS
    assert sum(points.values()) == len(written) == RECONNECTS + 16  # 47 train_loss, 16 val_loss
    assert set(points) == written
    assert max(points.values()) == 1  # each point once
    assert len(event_ids) == logged + 3  # and queued, running, succeeded
    assert max(event_ids.values()) == 1


def test_a_bare_or_foreign_last_event_id_falls_back_to_the_query(client, alice):
    job_id = submit(client, alice).json()["id"]
    with client.app.state.store.transaction() as session:
        record_metrics(
            session=session, job_id=job_id, points=[Point("train_loss", s, 4.0, 0.0) for s in (1, 2)]
        )
    set_status(client, job_id, JobStatus.RUNNING, JobStatus.SUCCEEDED)

    def kinds_and_steps(last_event_id: str, query: str = "") -> list[Any]:
        headers = {**alice.headers, "Last-Event-ID": last_event_id}
        with client.stream("GET", f"/v1/jobs/{job_id}/events{query}", headers=headers) as stream:
            frames = list(sse_frames(stream.iter_lines()))
        return [f["event"] if f["event"] != "metrics" else f["data"].count('"steps"') for f in frames]

    assert kinds_and_steps("garbage/x") == ["event", "event", "event", 1, "end"]
    assert kinds_and_steps("3", "?since_step=1") == [1, "end"]  # a bare number: an event id
    assert kinds_and_steps("3/2") == ["end"]
    assert kinds_and_steps("3/2/") == [1, "end"]  # none of step 2 sent yet
    # beyond the database's ranges (int8 event ids, int4 steps): the query's cursors, never a 500
    assert kinds_and_steps(str(2**63)) == ["event", "event", "event", 1, "end"]
    assert kinds_and_steps(f"3/{2**31}") == ["event", "event", "event", 1, "end"]


def test_sigterm_with_an_event_stream_open_stops_promptly_and_requeues_the_job(tmp_path: Path) -> None:
    # Long: it must still be running when the service stops.
    spec = tiny_job(name="sigterm", steps=1_000_000, log_every=10, checkpoint={"every": 40})
    frames: list[dict[str, str]] = []
    with live_service(tmp_path, env={"SYMOPT_RAY_NUM_CPUS": "1"}) as service:
        with Client(service.url, service.api_key) as client:
            job = client.submit(spec)
            wait_for(
                lambda: client.job(job.id).step >= 20,
                progress=lambda: (client.job(job.id).status, client.job(job.id).step),
                what="the job to pass step 20",
            )
        opened = threading.Event()

        def listen() -> None:
            headers = {"Authorization": f"Bearer {service.api_key}"}
            url = f"{service.url}/v1/jobs/{job.id}/events"
            try:
                with httpx.stream("GET", url, headers=headers, timeout=httpx.Timeout(10, read=300)) as stream:
                    for frame in sse_frames(stream.iter_lines()):
                        frames.append(frame)
                        opened.set()
            except httpx.TransportError:
                pass

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        assert opened.wait(timeout=60), "the event stream sent nothing"
        sent = time.monotonic()
        service.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            service.process.wait(timeout=STOP_LIMIT_S)
        seconds = time.monotonic() - sent
        stopped = service.process.poll() is not None
        output = "".join(service.output)
        listener.join(timeout=10)
    assert stopped, f"still running {seconds:.0f} s after SIGTERM with a stream open:\n{output[-3000:]}"
    assert seconds < STOP_LIMIT_S
    print(f"exited {seconds:.1f} s after SIGTERM")
    assert frames[-1]["event"] == "reconnect", frames[-1]
    assert frames[-1]["retry"] == "2000"
    assert "/" in frames[-1]["id"]  # the cursor to resume from
    [(status,)] = rows(tmp_path, "SELECT status FROM symopt_jobs WHERE id = :id", id=job.id)
    assert status == "queued"  # the graceful requeue happened: it resumes on the next start
    requeued = [e for e in events(tmp_path, job.id, "status") if "the service stopped" in e["message"]]
    assert len(requeued) == 1, events(tmp_path, job.id, "status")
