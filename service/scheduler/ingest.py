"""Worker events -> buffered store writes: metric points, event rows, progress, final outcomes."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from symopt_core.training.events import Event

from ..store.jobs import NewEvent
from ..store.metrics import Point
from ..store.results import JobResult

__all__ = ["Outcome", "Pending"]


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended: succeeded | diverged | cancelled | failed | crashed."""

    attempt: int
    status: str
    result: JobResult | None = None
    error: str | None = None
    diverged_at: int | None = None


def _unchanged(text: str) -> str:
    return text


def json_safe(value: Any, text: Callable[[str], str] = _unchanged) -> Any:
    """JSON without NaN or infinities (PostgreSQL's JSONB refuses them): non-finite floats as
    strings; every string value passed through `text` (e.g. a redaction of server paths)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v, text) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v, text) for v in value]
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


@dataclass
class Pending:
    """What the next flush writes, per job; kept (and retried) when a flush fails."""

    points: dict[str, list[Point]] = field(default_factory=dict)
    events: dict[str, list[NewEvent]] = field(default_factory=dict)
    progress: dict[str, tuple[int, float | None]] = field(default_factory=dict)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    # The server's paths out of what tenants read: errors, log events (service/redaction.py).
    redact: Callable[[str], str] = field(default=_unchanged, repr=False)

    def __bool__(self) -> bool:
        return bool(self.points or self.events or self.progress or self.outcomes)

    def add_event(self, job_id: str, attempt: int, event: dict[str, Any]) -> None:
        """Take one event as a worker sent it (`Event.to_dict()`); one the scheduler cannot read
        fails the attempt with what is wrong in it."""
        try:
            self._add(job_id, attempt, Event.from_dict(event))
        except ValueError as error:  # pydantic's ValidationError (a result's) is one too
            message = f"the worker sent an event the scheduler cannot read: {error}"
            self.outcomes[job_id] = Outcome(attempt, "failed", error=self.redact(message))

    def _add(self, job_id: str, attempt: int, event: Event) -> None:
        kind, step, data = event.kind, event.step, event.data
        now = time.time()
        if kind == "metrics":
            points = [
                Point(name, step, number, now)
                for name, value in data.items()
                if (number := _number(value)) is not None
            ]
            self.points.setdefault(job_id, []).extend(points)
            self._progress(job_id, step, None)
        elif kind == "eval":
            val_loss = _number(data.get("val_loss"))
            if val_loss is not None:
                self.points.setdefault(job_id, []).append(Point("val_loss", step, val_loss, now))
            self._progress(job_id, step, val_loss)
            self._event(job_id, NewEvent("eval", step, f"val_loss {data.get('val_loss')}", json_safe(data)))
        elif kind == "result":
            result = JobResult.model_validate(json_safe(data))
            self.outcomes[job_id] = Outcome(
                attempt, result.status or "succeeded", result, diverged_at=result.diverged_at
            )
        elif kind == "error":
            lines = "\n".join(map(str, data["traceback"]))
            message = self.redact(f"{data['type']}: {data['message']}\n{lines}".strip())
            self.outcomes[job_id] = Outcome(attempt, "failed", error=message)
            self._event(job_id, NewEvent("log", step, message.splitlines()[0], {"level": "error"}))
        else:  # status, checkpoint, log
            message = self.redact(str(data.get("status") or data.get("message") or data.get("path") or kind))
            self._event(job_id, NewEvent(kind, step, message, json_safe(data, self.redact)))

    def crashed(self, job_id: str, attempt: int, error: str) -> None:
        self.outcomes[job_id] = Outcome(attempt, "crashed", error=self.redact(error))

    def cancelled(self, job_id: str, attempt: int) -> None:
        self.outcomes[job_id] = Outcome(attempt, "cancelled")

    def _event(self, job_id: str, event: NewEvent) -> None:
        self.events.setdefault(job_id, []).append(event)

    def _progress(self, job_id: str, step: int, val_loss: float | None) -> None:
        old_step, old_best = self.progress.get(job_id, (0, None))
        best = (
            old_best
            if val_loss is None or not math.isfinite(val_loss)
            else min(val_loss, old_best or math.inf)
        )
        self.progress[job_id] = (max(step, old_step), best)
