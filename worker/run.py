"""The Ray side of a job: `run_training` trains a RunRequest and streams its events to the caller.

Workers never open the database: they run `symopt_core.train(request, report=...)` and yield each
event (metrics, evals, checkpoints, status, logs, the result) back to the scheduler, which alone
writes the store. Training runs in a thread of the task, so that a `ray.cancel` (which lands in
the task's main thread, waiting on the queue) can ask it to stop at the next step boundary and
leave a checkpoint, instead of killing it mid-write.
"""

from __future__ import annotations

import os
import platform
import queue
import threading
from collections.abc import Generator
from typing import Any

import torch

from symopt_core.training import Event, RunRequest, train

__all__ = ["run_training"]

_DONE = object()


def run_training(
    request: RunRequest,
    stop: threading.Event | None = None,
    started: dict[str, Any] | None = None,
    watch_parent: bool = True,
) -> Generator[dict[str, Any], None, None]:
    """Train `request` and yield its events; a retried attempt (`resume_newest`) resumes from the
    newest checkpoint in its run_dir. The checkpoint's record of earlier events is reported again
    first where it adds a point after the newest step of its series in `request.replay_after`
    ({series: step} the store holds; a series absent from it has none), so that no point goes
    missing.

    Every event is an `Event.to_dict()`. Besides train's own kinds, the first event is a `status`
    with the worker's pid, host and torch threads (and what `started` adds), and a failure inside
    training ends the stream with one `error` event (`Event.failure`). Setting `stop` (or closing
    the generator) stops the run at the next step, as does the death of this process's parent
    (`watch_parent`: the raylet, in a Ray worker).
    """
    events: queue.Queue[Any] = queue.Queue()
    stop = stop or threading.Event()
    request = request.with_resume_point()  # once: the status below names what train loads
    # Ray starts workers as children of the raylet. When the raylet dies (its driver, our service,
    # was killed) the worker is reparented and would train on, unobserved, for a while: stop.
    parent = os.getppid()

    def should_stop() -> bool:
        return stop.is_set() or (watch_parent and os.getppid() != parent)

    def target() -> None:
        try:
            train(request, report=lambda event: events.put(event.to_dict()), should_stop=should_stop)
        except BaseException as error:  # reported to the scheduler, which fails the job with it
            events.put(Event.failure(error).to_dict())
        finally:
            events.put(_DONE)

    thread = threading.Thread(target=target, name="symopt-train", daemon=True)
    status = {
        "status": "worker_started",
        "pid": os.getpid(),
        "host": platform.node(),
        "torch_threads": torch.get_num_threads(),
        "resume_from": str(request.resume_from or ""),
        **(started or {}),
    }
    yield Event("status", 0, status).to_dict()
    thread.start()
    try:
        while (event := events.get()) is not _DONE:
            yield event
    except BaseException:
        # Cancelled (or the caller went away): stop at the next step, wait for the checkpoint.
        stop.set()
        thread.join(timeout=60)
        raise
