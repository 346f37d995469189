"""Ray for the scheduler: start a local cluster or join one, submit runs, cancel them.

The embedded default starts a local Ray on free ports (never Redis's 6379, which `ray.init()`
does not use for a local cluster); production joins the cluster at RAY_ADDRESS.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

__all__ = ["Capacity", "RayRuntime"]


@dataclass(frozen=True)
class Capacity:
    cpus: float
    gpus: float


class RayRuntime:
    """The scheduler's handle on Ray; every Ray call of the service goes through here."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self._started_here = False
        self._remote: Any = None

    def start(self) -> None:
        import ray

        from worker.run import run_training

        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, namespace="symopt", log_to_driver=False)
            else:
                ray.init(
                    num_cpus=self.num_cpus or os.cpu_count(),
                    include_dashboard=False,
                    log_to_driver=False,
                    namespace="symopt",
                )
                self._started_here = True
        # A generator task: Ray streams each yielded event back as it is produced.
        self._remote = ray.remote(run_training)

    def capacity(self) -> Capacity:
        import ray

        resources = ray.cluster_resources()
        return Capacity(float(resources.get("CPU", 0.0)), float(resources.get("GPU", 0.0)))

    def submit(
        self,
        *,
        job_id: str,
        spec: dict[str, Any],
        run_dir: str,
        data_root: str | None,
        cpus: int,
        gpus: int,
        resume_at_most: int,
    ) -> Any:
        """Start a run; returns the ObjectRefGenerator of its events."""
        options = {"num_cpus": cpus, "num_gpus": gpus, "max_retries": 0, "name": f"symopt-job-{job_id}"}
        return self._remote.options(**options).remote(spec, run_dir, data_root, resume_at_most)

    def cancel(self, events: Any, *, force: bool) -> None:
        import ray

        ray.cancel(events, force=force)

    @staticmethod
    def get(ref: Any) -> Any:
        import ray

        return ray.get(ref)

    @staticmethod
    def is_cancellation(error: BaseException) -> bool:
        from ray.exceptions import RayTaskError, TaskCancelledError

        if isinstance(error, TaskCancelledError):
            return True
        return isinstance(error, RayTaskError) and isinstance(error.cause, TaskCancelledError)

    def shutdown(self) -> None:
        import ray

        if self._started_here and ray.is_initialized():
            ray.shutdown()
