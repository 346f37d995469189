"""A data-parallel job on Ray Train: one rank per worker, one event stream for the scheduler.

`run_distributed` is the Ray task the scheduler starts for a job whose `resources.ranks` > 1, in
place of `run_training`. It starts a Ray Train `TorchTrainer` with that many workers (NCCL on
GPUs, gloo on CPUs; one GPU per rank when the job asked for GPUs), whose ranks all run
`symopt_core.train` on the same spec; torch.distributed is initialized by Ray Train, and the
training loop then splits each batch across the ranks and the optimizer's matrix work too.

To the scheduler the group is one job: rank 0 alone reports (metrics, evals, checkpoints, the
result) through a small `_Channel` actor, which this task drains and yields exactly like
`run_training` does. Cancelling this task asks rank 0, through the channel, to stop; the ranks
agree on the step (the loop all-reduces the stop flag) and rank 0 writes the checkpoint. A rank
that dies fails the whole attempt: Ray Train stops the others, and this task raises, which the
scheduler counts as a worker failure and retries from the newest checkpoint (which resumes on any
number of ranks: the ranks hold the same state, and rank 0 saves it).
"""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import ray
import torch.distributed

from symopt_core.spec import load_spec
from symopt_core.training import Event, RunRequest, train

__all__ = ["run_distributed"]

# A collective that waits longer than this fails its rank (then the attempt): a rank that died
# without Ray noticing at once must not hang the others for torch's default of 30 minutes.
COLLECTIVE_TIMEOUT_S = 300
_DRAIN_EVERY_S = 0.2
_STOP_POLL_S = 0.5


@ray.remote(num_cpus=0)
class _Channel:
    """Rank 0's events to the scheduler's task, and the task's stop request to rank 0."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.stopping = False

    def put(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def drain(self) -> list[dict[str, Any]]:
        events, self.events = self.events, []
        return events

    def stop(self) -> None:
        self.stopping = True

    def should_stop(self) -> bool:
        return self.stopping


def run_distributed(request: RunRequest) -> Iterator[dict[str, Any]]:
    """Train `request` on `resources.ranks` Ray Train workers and yield rank 0's events (the same
    kinds as `run_training`: a first `status`, train's events, an `error` if training raised)."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    run_dir = request.run_dir
    if run_dir is None:
        raise ValueError(
            "Invalid RunRequest: a data-parallel run needs a run_dir (Ray Train's files go there)"
        )
    resources = load_spec(request.spec).resources
    request = request.with_resume_point()  # once, here: every rank loads the same checkpoint
    channel = _Channel.remote()  # type: ignore[attr-defined]
    trainer = TorchTrainer(
        _rank_main,
        train_loop_config={"request": request, "channel": channel},
        scaling_config=ScalingConfig(
            num_workers=resources.ranks,
            use_gpu=resources.gpus > 0,
            resources_per_worker={"CPU": resources.cpus, **({"GPU": 1} if resources.gpus else {})},
        ),
        torch_config=TorchConfig(
            backend="nccl" if resources.gpus else "gloo", timeout_s=COLLECTIVE_TIMEOUT_S
        ),
        run_config=RunConfig(
            name="ray-train",
            storage_path=str(run_dir.resolve()),
            failure_config=FailureConfig(max_failures=0),
        ),
    )
    outcome: dict[str, BaseException | None] = {"error": None}

    def fit() -> None:
        try:
            result = trainer.fit()
            outcome["error"] = getattr(result, "error", None)
        except BaseException as error:  # reported below, after rank 0's last events
            outcome["error"] = error

    fitting = threading.Thread(target=fit, name="symopt-ray-train", daemon=True)
    resume_from = str(request.resume_from or "")
    yield Event(
        "status", 0, {"status": "worker_started", "ranks": resources.ranks, "resume_from": resume_from}
    ).to_dict()
    fitting.start()
    # Rank 0's `error` is held back until the group has ended: when another rank died, rank 0's
    # error is only the broken collective, and the attempt is a worker failure (retried), not a
    # training error (which fails the job).
    held: list[dict[str, Any]] = []
    try:
        while fitting.is_alive():
            fitting.join(_DRAIN_EVERY_S)
            for event in ray.get(channel.drain.remote()):
                if event["kind"] == "error":
                    held.append(event)
                else:
                    yield event
    except BaseException:
        # Cancelled (or the caller went away): ask the ranks to stop at the next step.
        ray.get(channel.stop.remote())
        fitting.join(timeout=60)
        raise
    error = outcome["error"]
    if error is not None and (not held or lost_a_rank(error)):
        raise RuntimeError(f"a data-parallel rank failed: {describe_failure(error)}")
    yield from held


def lost_a_rank(error: BaseException) -> bool:
    """Whether Ray Train's failure includes a rank whose process died (its health check failed,
    or its actor died), not only exceptions raised inside training."""
    from ray.exceptions import RayActorError

    failures = getattr(error, "worker_failures", None) or {}
    return any(
        isinstance(failure, RayActorError) or type(failure).__name__ == "WorkerHealthCheckFailedError"
        for failure in failures.values()
    )


def describe_failure(error: BaseException) -> str:
    """One line per failed rank (Ray Train's WorkerGroupError), else the error's first line."""
    failures = getattr(error, "worker_failures", None)
    if not failures:
        return f"{type(error).__name__}: {_first_line(error)}"
    return "; ".join(
        f"rank {rank}: {type(failure).__name__}: {_first_line(failure)}"
        for rank, failure in sorted(failures.items())
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def _rank_main(config: dict[str, Any]) -> None:
    """One rank (a Ray Train worker, torch.distributed already initialized by Ray Train)."""
    import ray.train
    import ray.train.torch

    rank = ray.train.get_context().get_world_rank()
    channel = config["channel"]
    device = ray.train.torch.get_device()
    main = rank == 0
    where: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(
        where, {"pid": os.getpid(), "host": platform.node(), "device": str(device)}
    )
    if main:  # which process is which rank: for the job's events, and for whoever must find one
        channel.put.remote(Event("status", 0, {"status": "ranks_started", "ranks": where}).to_dict())
    report: Callable[[Any], None] | None = (
        (lambda event: channel.put.remote(event.to_dict())) if main else None
    )
    try:
        train(
            config["request"],
            report=report,
            device=device,
            should_stop=_stop_poller(channel) if main else None,
        )
    except BaseException as error:
        if main:  # what training raised fails the job, as on one process
            ray.get(channel.put.remote(Event.failure(error).to_dict()))
        raise
    if main:
        ray.get(channel.should_stop.remote())  # every earlier put has reached the channel: calls are ordered


def _stop_poller(channel: Any) -> Callable[[], bool]:
    """should_stop for rank 0: asks the channel at most every _STOP_POLL_S seconds."""
    state = {"next": 0.0, "stop": False}

    def should_stop() -> bool:
        now = time.monotonic()
        if not state["stop"] and now >= state["next"]:
            state["stop"] = bool(ray.get(channel.should_stop.remote()))
            state["next"] = now + _STOP_POLL_S
        return bool(state["stop"])

    return should_stop
