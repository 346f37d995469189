"""`Job`: a handle on a job of the service, with waiting, metrics, events, logs and checkpoints."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from .errors import ServerError
from .handle import Handle
from .http import error_of
from .progress import Progress, progress_view

if TYPE_CHECKING:
    pass

__all__ = ["FINAL", "Job"]

FINAL = frozenset({"succeeded", "failed", "diverged", "cancelled", "pruned"})
STATUSES = FINAL | {"queued", "running", "cancelling"}  # a job's (the worker also reports "started" ...)
# What a broken connection looks like while the service restarts: try again, not fail.
RECONNECT = (httpx.TransportError, ServerError)
# A stream that fails this many times in a row while plain requests work is given up for polling.
STREAM_FAILURES_BEFORE_POLLING = 3
# The service pings an idle stream every 15 s; three pings missed and the connection is dead.
STREAM_READ_TIMEOUT = 45.0


class Job(Handle):
    """A job of the service; `cancel()` stops it (queued: at once; running: within seconds)."""

    collection = "/v1/jobs"
    final = FINAL

    def __repr__(self) -> str:
        return f"Job({self.id!r}, name={self.name!r}, status={self.status!r}, step={self.step})"

    @property
    def name(self) -> str:
        return str(self.data["name"])

    @property
    def step(self) -> int:
        return int(self.data["step"])

    @property
    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.data["spec"]
        return spec

    @property
    def result(self) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self.data.get("result")
        return result

    def delete(self) -> None:
        """Delete a finished job with its metrics and events."""
        self.client.request("DELETE", f"/v1/jobs/{self.id}")

    # -- results ------------------------------------------------------------------------------

    def metric_pages(
        self,
        names: list[str] | None = None,
        since_step: int | None = None,
        max_points: int | None = None,
        *,
        after_seq: int = 0,
    ) -> Iterator[dict[str, Any]]:
        """The REST pages of the job's metrics after `since_step`, stored after seq `after_seq`, as
        the server sends them (one page, each series thinned to at most `max_points`, when that is
        given). The last page's `next_seq` is where to follow on from (`after_seq`): each point
        stored later, or rewritten by a retried attempt, comes then."""
        params: dict[str, Any] = {"limit": 100_000} if max_points is None else {"max_points": max_points}
        if names:
            params["names"] = ",".join(names)
        if since_step is not None:
            params["since_step"] = since_step
        while True:
            params["after_seq"] = after_seq
            page: dict[str, Any] = self.client.request("GET", f"/v1/jobs/{self.id}/metrics", params=params)
            yield page
            if not page["truncated"]:
                return
            after_seq = page["next_seq"]

    def metrics(
        self, names: list[str] | None = None, since_step: int | None = None, max_points: int | None = None
    ) -> list[dict[str, Any]]:
        """Every point after `since_step` as a row {name, step, value}, by step then name; the
        server's "nan"/"inf"/"-inf" become floats. `max_points`: each series thinned to at most
        that many points keeping its first, last, lowest and highest values (for a plot)."""
        # A point rewritten while the pages are read comes twice: its newer value wins.
        values = {
            (series["name"], step): float(value)
            for page in self.metric_pages(names, since_step, max_points)
            for series in page["series"]
            for step, value in zip(series["steps"], series["values"], strict=True)
        }
        rows = [{"name": name, "step": step, "value": value} for (name, step), value in values.items()]
        return sorted(rows, key=lambda row: (row["step"], row["name"]))

    def metrics_frame(self, names: list[str] | None = None, since_step: int | None = None) -> Any:
        """The metrics as a pandas DataFrame: one row per step, one column per series."""
        try:
            import pandas as pd
        except ImportError as error:
            raise ImportError(
                "metrics_frame() needs pandas (pip install pandas); metrics() gives rows"
            ) from error
        frame = pd.DataFrame(self.metrics(names, since_step), columns=["name", "step", "value"])
        return frame.pivot(index="step", columns="name", values="value")

    def logs(self, after_id: int = 0) -> list[dict[str, Any]]:
        """Log lines after event id `after_id`, oldest first: {id, time, kind, step, message, data}."""
        found: list[dict[str, Any]] = []
        while True:
            page = self.client.request("GET", f"/v1/jobs/{self.id}/logs", params={"after_id": after_id})
            found += page["data"]
            if not page["data"]:
                return found
            after_id = page["last_id"]

    def follow_logs(self, poll: float = 1.0) -> Iterator[dict[str, Any]]:
        """Log lines as they come, until the job has finished and every line is read."""
        after_id = 0
        while True:
            finished = self.refresh().done  # read before the logs: no line can come after both
            for line in self.logs(after_id):
                after_id = int(line["id"])
                yield line
            if finished:
                return
            time.sleep(poll)

    def download_checkpoint(self, path: str | Path) -> Path:
        """Save the job's newest checkpoint at `path` (a file, or a directory to put it in);
        `torch.load(path, weights_only=True)` reads it. An FSDP job's sharded checkpoint comes
        as `<job>-step_<step>.dcp.tar`: extracted, its directory loads with
        torch.distributed.checkpoint, or resumes a run (`train(resume_from=...)`) on any ranks."""
        target = Path(path)
        with self.client.transport.http.stream("GET", f"/v1/jobs/{self.id}/checkpoint") as response:
            if response.status_code >= 400:
                raise error_of(response)
            name = response.headers.get("content-disposition", "").partition("filename=")[2].strip('"')
            if target.is_dir():
                target = target / (name or f"{self.id}.pt")
            partial = target.with_name(target.name + ".part")
            with partial.open("wb") as stream:
                for chunk in response.iter_bytes():
                    stream.write(chunk)
            partial.replace(target)  # never a half-written file under the asked name
        return target

    # -- live ---------------------------------------------------------------------------------

    def events(
        self, after_id: int = 0, since_step: int = -1, *, after_seq: int = 0, pings: bool = False
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """The live stream (server-sent events) as (kind, data): `event` (status, eval,
        checkpoint, log) after event `after_id`, `metrics` (points after step `since_step` stored
        after seq `after_seq`, as series; each frame's `next_seq` resumes it) and a last `end`, or
        a last `reconnect` when the service stops; with `pings`, also ("ping", {}) for the
        service's keep-alive comments on an idle stream."""
        params = {"after_id": after_id, "since_step": since_step, "after_seq": after_seq}
        timeout = httpx.Timeout(30.0, read=STREAM_READ_TIMEOUT)
        with self.client.transport.http.stream(
            "GET", f"/v1/jobs/{self.id}/events", params=params, timeout=timeout
        ) as response:
            if response.status_code >= 400:
                raise error_of(response)
            kind, data = "message", ""
            for line in response.iter_lines():
                if line.startswith("event:"):
                    kind = line.removeprefix("event:").strip()
                elif line.startswith("data:"):
                    data += line.removeprefix("data:").strip()
                elif line.startswith(":") and pings:
                    yield "ping", {}
                elif not line and data:
                    yield kind, json.loads(data)
                    kind, data = "message", ""

    def follow(
        self, *, poll: float = 1.0, stream: bool = True, timeout: float | None = None
    ) -> Iterator[Progress]:
        """Where the job stands, each time that changes, until it has finished; then its final
        JSON is in `data`. Fed by the server-sent events; when the stream breaks (the service
        restarts, a proxy cuts it) it reconnects where it left off, and polls the REST API while
        the stream cannot be had (for good after repeated stream failures, or with stream=False).
        Raises TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout

        def check_deadline() -> None:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.id} did not finish within {timeout} s (it is {self.status})")

        progress = Progress(self.id, self.status, self.step, int(self.spec["steps"]))
        # Points from the job's step on (the first evaluation is at step 0), taken in the order they
        # were stored: `seq` is the newest taken, and the stream (resumed) and the polls ask for
        # what was stored after it. Each point comes once, a step's val_loss stored after its
        # train_loss and a point rewritten by a retried attempt included.
        since_step, seq = progress.step - 1, 0

        def take(page: dict[str, Any]) -> bool:
            nonlocal seq
            seq = int(page["next_seq"])
            return progress.absorb(page)

        def take_stored() -> bool:
            fresh = False
            for page in self.metric_pages(since_step=since_step, after_seq=seq):
                fresh = take(page) or fresh
            return fresh

        event_id, stream_failures, idle = 0, 0, 0
        while True:
            if stream and stream_failures < STREAM_FAILURES_BEFORE_POLLING:
                stopping = False  # the service ended the stream as it stopped: no stream failure
                try:
                    frames = self.events(after_id=event_id, since_step=since_step, after_seq=seq, pings=True)
                    for kind, data in frames:
                        stream_failures, idle = 0, 0
                        check_deadline()
                        if kind == "event":
                            event_id = int(data["id"])
                            status = data["data"].get("status") if data["kind"] == "status" else None
                            if status in STATUSES:
                                progress.status = self.data["status"] = str(status)
                                yield progress
                        elif kind == "metrics" and take(data):
                            yield progress
                        elif kind == "end":
                            # The last evaluation may be stored with the final status, after the
                            # stream's last metrics frame: read what is left before the last line.
                            self.refresh()
                            take_stored()
                            progress.status = self.status
                            yield progress
                            return
                        elif kind == "reconnect":
                            stopping = True
                except RECONNECT:
                    pass
                stream_failures += 0 if stopping else 1
            try:  # one poll: what the stream would have said
                self.refresh()
                fresh = take_stored()
                if fresh or self.status != progress.status:
                    progress.status = self.status
                    yield progress
                if self.done and not fresh:
                    return
                idle = 0 if fresh else idle + 1
            except RECONNECT:
                idle += 1
            check_deadline()
            time.sleep(min(5.0, poll * max(1, idle)))

    def wait(self, timeout: float | None = None, progress: bool | str = True, poll: float = 1.0) -> Job:
        """Block until the job has finished and return it, showing its progress (True or "auto": a
        bar on a terminal or in a notebook, lines otherwise; "bar", "lines"; False: nothing). Survives
        a restart of the service. Raises TimeoutError after `timeout` seconds."""
        view = progress_view(progress)
        try:
            for state in self.follow(poll=poll, timeout=timeout):
                if view is not None:
                    view.show(state)
        finally:
            if view is not None:
                view.close()
        return self
