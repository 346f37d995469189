"""What a training run reports while it runs, and what it returns.

An `Event` crosses process boundaries as a plain dict (`to_dict`: Ray's object store, the warm
process's socket, Ray Train's channel) and is read back, checked, with `Event.from_dict`.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

__all__ = ["EVENT_KINDS", "Event", "EventKind", "Report", "Result", "Status"]

# Train's own kinds, and `error`: a worker's report that training raised (`Event.failure`).
EventKind = Literal["status", "metrics", "eval", "checkpoint", "log", "result", "error"]
EVENT_KINDS: tuple[EventKind, ...] = get_args(EventKind)
Status = Literal["succeeded", "diverged", "cancelled"]

_FIELDS = ("kind", "step", "data")
_FAILURE_FIELDS = {"type": str, "message": str, "traceback": list}  # the data of an `error` event
_TRACEBACK_LINES = 25  # the end of a traceback: where it failed, not how the worker started
_FAILURE_STEP = -1  # an error belongs to no step


@dataclass(frozen=True)
class Event:
    """One report: `kind`, the optimizer step it belongs to, and its values (plain JSON types)."""

    kind: EventKind
    step: int
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def failure(cls, error: BaseException) -> Event:
        """The `error` event of a run that raised `error`: its type, message and the end of its
        traceback (what the scheduler fails the job with)."""
        lines = "".join(traceback.format_exception(error)).strip().splitlines()
        data = {"type": type(error).__name__, "message": str(error), "traceback": lines[-_TRACEBACK_LINES:]}
        return cls("error", _FAILURE_STEP, data)

    @classmethod
    def from_dict(cls, value: Any) -> Event:
        """The event `to_dict` made; a ValueError names the field that is missing or wrong."""
        if not isinstance(value, Mapping):
            raise ValueError(f"Invalid event: expected a dict with {', '.join(_FIELDS)}, got {value!r}")
        if missing := [name for name in _FIELDS if name not in value]:
            raise ValueError(f"Invalid event: no {', '.join(missing)} in {dict(value)!r}")
        if extra := sorted(str(name) for name in value if name not in _FIELDS):
            raise ValueError(f"Invalid event: unknown field(s) {', '.join(extra)} in {dict(value)!r}")
        kind, step, data = value["kind"], value["step"], value["data"]
        if kind not in EVENT_KINDS:
            raise ValueError(f"Invalid event kind: {kind!r}; expected one of {', '.join(EVENT_KINDS)}")
        if isinstance(step, bool) or not isinstance(step, int):
            raise ValueError(f"Invalid event step: {step!r}; expected an int")
        if not isinstance(data, Mapping) or not all(isinstance(name, str) for name in data):
            raise ValueError(f"Invalid event data: {data!r}; expected a dict with string keys")
        if kind == "error":
            for name, expected in _FAILURE_FIELDS.items():
                if not isinstance(found := data.get(name), expected):
                    raise ValueError(
                        f"Invalid error event: data.{name} is {found!r}; expected a {expected.__name__}"
                    )
        return cls(kind, step, dict(data))

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
