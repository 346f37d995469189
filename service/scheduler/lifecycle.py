"""Job lifecycle lines for the service log: the `symopt.jobs` logger.

One line per change the scheduler makes to a job (started, retried, requeued, pruned, cancelled,
diverged, failed, finished) and one per evaluation (not per metric point), each naming the job
and, for a sweep's trial, the sweep and the trial's number. The scheduler builds the lines inside
its transaction and emits them only once that has committed: a flush that fails is retried whole,
and no line may be written twice, nor for a change that was rolled back.

`JsonFormatter` writes any record as one JSON object a line (`symopt serve --log-format json`),
a lifecycle line's fields (`event`, `job_id`, `sweep_id`, `trial`, ...) as keys of their own.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..store.models import Job

__all__ = ["JobLine", "JobRef", "JsonFormatter", "ended", "evaluated", "requeued", "started"]

log = logging.getLogger("symopt.jobs")


@dataclass(frozen=True)
class JobRef:
    """Who a line is about: the job, and its sweep and trial number when it is a trial."""

    job_id: str
    sweep_id: str | None = None
    trial: int | None = None

    @classmethod
    def of(cls, job: Job) -> JobRef:
        return cls(job.id, job.sweep_id, job.trial_number)

    def __str__(self) -> str:
        where = f" (sweep {self.sweep_id} trial {self.trial})" if self.sweep_id is not None else ""
        return f"job {self.job_id}{where}"


@dataclass(frozen=True)
class JobLine:
    event: str
    job: JobRef
    text: str
    fields: dict[str, Any] = field(default_factory=dict)

    def emit(self) -> None:
        fields: dict[str, Any] = {"event": self.event, "job_id": self.job.job_id}
        if self.job.sweep_id is not None:
            fields |= {"sweep_id": self.job.sweep_id, "trial": self.job.trial}
        log.info("%s %s: %s", self.job, self.event, self.text, extra={"symopt": fields | self.fields})


def started(job: Job) -> JobLine:
    return JobLine("started", JobRef.of(job), f"attempt {job.attempt}", {"attempt": job.attempt})


def evaluated(job: JobRef, step: int | None, val_loss: Any) -> JobLine:
    """`val_loss` as the worker reported it: a float, or "nan"/"inf" (JSON has no non-finite floats)."""
    return JobLine(
        "evaluated", job, f"val_loss {_loss(val_loss)} at step {step}", {"step": step, "val_loss": val_loss}
    )


def requeued(job: Job, reason: str) -> JobLine:
    """A running job put back in the queue without a failure (its scheduler stopped)."""
    return JobLine(
        "requeued", JobRef.of(job), f"{reason}; it resumes from its newest checkpoint", {"reason": reason}
    )


def ended(job: Job, error: str | None) -> JobLine:
    """The line for a job whose attempt has just ended, by the status the scheduler gave it:
    queued again (retried), or final. `error` is the attempt's own (a retried job keeps none)."""
    ref, step = JobRef.of(job), job.step
    if job.status == "queued":
        reason = _first_line(error)
        text = f"attempt {job.attempt} lost ({reason}); {job.queued_reason}"
        return JobLine("retried", ref, text, {"attempt": job.attempt, "step": step, "reason": reason})
    if job.status == "failed":
        reason = _first_line(job.error or error)
        return JobLine("failed", ref, f"at step {step}: {reason}", {"step": step, "reason": reason})
    if job.status == "diverged":
        return JobLine("diverged", ref, f"at step {job.diverged_at}", {"step": job.diverged_at})
    if job.status == "pruned" or (job.status == "cancelled" and job.pruned_at is not None):
        text = f"at step {step} ({job.pruned_at} tokens)"
        return JobLine("pruned", ref, text, {"step": step, "tokens": job.pruned_at})
    if job.status == "cancelled":
        return JobLine("cancelled", ref, f"at step {step}", {"step": step})
    best = job.best_val_loss
    text = f"{job.status} at step {step}, best val_loss {_loss(best)}"
    return JobLine("finished", ref, text, {"status": job.status, "step": step, "best_val_loss": best})


def _loss(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _first_line(text: str | None) -> str:
    """A reason on one line: an error's first (a worker's error carries its traceback after it)."""
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else "no reason given"


class JsonFormatter(logging.Formatter):
    """Each record as one JSON object: time, level, logger, message, and a lifecycle line's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry |= getattr(record, "symopt", {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)
