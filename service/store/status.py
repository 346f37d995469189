"""Job and sweep status state machines: every change goes through `check_transition`."""

from __future__ import annotations

from enum import StrEnum

from ..errors import InvalidTransitionError

__all__ = ["JobStatus", "SweepStatus", "check_transition"]


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DIVERGED = "diverged"
    PRUNED = "pruned"  # a sweep trial its pruner stopped (a cancellation with the job's pruned_at set)

    @property
    def terminal(self) -> bool:
        return self in _JOB_TERMINAL


class SweepStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _SWEEP_TERMINAL


_JOB_TERMINAL = {
    JobStatus.SUCCEEDED,
    JobStatus.FAILED,
    JobStatus.CANCELLED,
    JobStatus.DIVERGED,
    JobStatus.PRUNED,
}
_SWEEP_TERMINAL = {SweepStatus.SUCCEEDED, SweepStatus.FAILED, SweepStatus.CANCELLED}

# StrEnum members equal their strings (JobStatus.QUEUED == SweepStatus.QUEUED), so each machine
# has its own table.
_JOB_ALLOWED: dict[JobStatus, set[JobStatus]] = {
    JobStatus.QUEUED: {JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.PRUNED},
    # running -> queued: a retry after the worker died (attempt + 1)
    JobStatus.RUNNING: {
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.DIVERGED,
        JobStatus.CANCELLING,
        JobStatus.CANCELLED,
        JobStatus.PRUNED,
        JobStatus.QUEUED,
    },
    # a run may finish on its own before the cancellation reaches it
    JobStatus.CANCELLING: {
        JobStatus.CANCELLED,
        JobStatus.PRUNED,
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.DIVERGED,
    },
}
_SWEEP_ALLOWED: dict[SweepStatus, set[SweepStatus]] = {
    SweepStatus.QUEUED: {SweepStatus.RUNNING, SweepStatus.CANCELLED},
    SweepStatus.RUNNING: {
        SweepStatus.SUCCEEDED,
        SweepStatus.FAILED,
        SweepStatus.CANCELLING,
        SweepStatus.CANCELLED,
    },
    SweepStatus.CANCELLING: {SweepStatus.CANCELLED, SweepStatus.SUCCEEDED, SweepStatus.FAILED},
}


def check_transition(current: JobStatus | SweepStatus, target: JobStatus | SweepStatus) -> None:
    """Raise InvalidTransitionError unless `current -> target` is allowed."""
    if isinstance(current, JobStatus):
        allowed_targets: set[StrEnum] = set(_JOB_ALLOWED.get(JobStatus(current), set()))
    else:
        allowed_targets = set(_SWEEP_ALLOWED.get(SweepStatus(current), set()))
    if target not in allowed_targets:
        allowed = ", ".join(sorted(allowed_targets)) or "none (it is final)"
        raise InvalidTransitionError(
            f"Cannot move from {current} to {target}; allowed from {current}: {allowed}"
        )
