"""How a job's progress is shown while someone waits on it: a tqdm bar (terminals, notebooks) or
one line per update (logs, pipes, CI), both fed by `Job.follow()`."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

__all__ = ["Progress", "ProgressBar", "ProgressLines", "ProgressView", "poll_until_done", "progress_view"]

# The series a progress display shows, and how many decimals each gets.
SHOWN = {"train_loss": 4, "val_loss": 4, "tokens_per_s": 0, "best": 4}


@dataclass
class Progress:
    """Where a job (or sweep) stands: its status, `step` of `total` (steps, or finished trials),
    the newest value of each series."""

    job_id: str
    status: str
    step: int
    total: int
    latest: dict[str, Any] = field(default_factory=dict)
    unit: str = "step"

    def absorb(self, page: dict[str, Any]) -> bool:
        """Take a metrics page (REST or server-sent): True when it held new points."""
        for series in page["series"]:
            if series["values"]:
                self.latest[series["name"]] = series["values"][-1]
        if page.get("last_step") is not None and page["series"]:
            self.step = max(self.step, int(page["last_step"]))
            return True
        return False

    def shown(self) -> dict[str, str]:
        values = {}
        for name, digits in SHOWN.items():
            value = self.latest.get(name)
            if value is not None:
                values[name] = f"{value:.{digits}f}" if isinstance(value, int | float) else str(value)
        return values


class ProgressView(Protocol):
    def show(self, progress: Progress) -> None: ...

    def close(self) -> None: ...


class ProgressBar:
    """A tqdm bar: step of total, status, loss, val loss, tokens/s (tqdm adds rate and ETA)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.bar: Any = None

    def show(self, progress: Progress) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=progress.total,
                unit=progress.unit,
                desc=progress.job_id[:8],
                dynamic_ncols=True,
                file=self.stream,
            )
        self.bar.update(max(0, progress.step - self.bar.n))
        self.bar.set_postfix({"status": progress.status, **progress.shown()}, refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class ProgressLines:
    """One line per new step or status: `step 50/200 running train_loss=3.2140 tokens_per_s=9812`."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.last: tuple[int, str, str] | None = None

    def show(self, progress: Progress) -> None:
        values = " ".join(f"{name}={value}" for name, value in progress.shown().items())
        # A step's val_loss may come after its train_loss: a new value is a new line too.
        if (progress.step, progress.status, values) == self.last:
            return
        self.last = (progress.step, progress.status, values)
        line = f"{progress.unit} {progress.step}/{progress.total} {progress.status} {values}".rstrip()
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        return None


def progress_view(kind: bool | str, stream: IO[str] | None = None) -> ProgressView | None:
    """True/"auto": a bar on a terminal, lines otherwise; "bar", "lines"; False/"none": nothing."""
    target = stream or sys.stderr
    if kind in (False, "none"):
        return None
    if kind in (True, "auto"):
        notebook = "ipykernel" in sys.modules  # tqdm redraws in place there too
        kind = "bar" if target.isatty() or notebook else "lines"
    if kind == "bar":
        return ProgressBar(target)
    if kind == "lines":
        return ProgressLines(target)
    raise ValueError(f"Invalid progress: {kind!r}; expected True, False, 'auto', 'bar', 'lines' or 'none'")


def poll_until_done(
    handle: Any,
    describe: Callable[[], Progress],
    *,
    progress: bool | str,
    timeout: float | None,
    poll: float,
    reconnect: tuple[type[BaseException], ...],
) -> None:
    """Refresh `handle` every `poll` seconds until `handle.done`, showing `describe()` after each
    refresh; a refresh that fails with one of `reconnect` (the service restarting) is retried.
    TimeoutError after `timeout` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    view = progress_view(progress)
    try:
        while True:
            try:
                handle.refresh()
            except reconnect:
                pass
            else:
                if view is not None:
                    view.show(describe())
                if handle.done:
                    return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{handle!r} did not finish within {timeout} s")
            time.sleep(poll)
    finally:
        if view is not None:
            view.close()
