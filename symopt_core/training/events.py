"""What a training run reports while it runs, and what it returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["Event", "EventKind", "Report", "Result", "Status"]

EventKind = Literal["status", "metrics", "eval", "checkpoint", "log", "result"]
Status = Literal["succeeded", "diverged", "cancelled"]


@dataclass(frozen=True)
class Event:
    """One report: `kind`, the optimizer step it belongs to, and its values (plain JSON types)."""

    kind: EventKind
    step: int
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def series(self) -> tuple[str, ...]:
        """The metric series this event adds a point to at `step` (a store keeps one point per
        series and step): each value of a `metrics` event, the `val_loss` of an `eval`."""
        if self.kind == "metrics":
            return tuple(self.data)
        return ("val_loss",) if self.kind == "eval" else ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Report = Callable[[Event], None]


@dataclass
class Result:
    """The outcome of `train`: final and best losses, and where the run stopped."""

    status: Status
    steps: int  # optimizer steps completed
    tokens: int  # training tokens consumed
    train_loss: float | None  # loss of the last step
    val_loss: float | None  # last evaluation
    best_val_loss: float | None
    best_val_step: int | None
    wall_time_s: float
    tokens_per_s: float
    diverged_at: int | None = None
    checkpoint: str | None = None  # the newest checkpoint written, if any
    evals: list[dict[str, float]] = field(default_factory=list)  # [{step, tokens, val_loss}, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
