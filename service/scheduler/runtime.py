"""Ray for the scheduler: start a local cluster or join one, submit runs, cancel them.

The embedded default starts a local Ray on explicit free ports, never 6379: Redis listens there
on these machines, and it is Ray's default GCS port. `ray.init()` takes the GCS port only from
$RAY_GCS_SERVER_PORT, and the dashboard and metrics export ports as arguments; the dashboard
itself is off (the service has its own API) unless an operator asks for it (`symopt serve
--ray-dashboard`: on 127.0.0.1 only, as it has no authentication). The raylet's, the agents' and
the workers' ports are not arguments of `ray.init()`: Ray binds those to port 0, so the kernel
picks free ones, and 6379, held by Redis, is never among them. Production joins the cluster at
RAY_ADDRESS.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from symopt_core.run_request import RunRequest
from symopt_core.spec import load_spec

from ..errors import ServiceError

__all__ = ["RESERVED_PORTS", "Capacity", "LocalPorts", "RayRuntime", "dashboard_unavailable", "free_port"]

log = logging.getLogger("symopt.scheduler")

# Ports a local Ray must never take: Redis's (also Ray's default GCS port).
RESERVED_PORTS = frozenset({6379})


@dataclass(frozen=True)
class Capacity:
    cpus: float
    gpus: float


@dataclass(frozen=True)
class LocalPorts:
    """The ports a local Ray is started on."""

    gcs: int
    dashboard: int
    metrics_export: int


def free_port(avoid: frozenset[int] = RESERVED_PORTS, taken: set[int] | None = None) -> int:
    """A TCP port free on every interface now, not in `avoid` nor in `taken` (added to it).

    Between this probe and Ray's bind another process could take the port; ray.init then fails
    loudly (and the service with it) rather than sharing a port."""
    taken = set() if taken is None else taken
    while True:
        with socket.socket() as probe:
            probe.bind(("", 0))
            port = int(probe.getsockname()[1])
        if port not in avoid and port not in taken:
            taken.add(port)
            return port


def dashboard_unavailable() -> str | None:
    """Why Ray's dashboard cannot start in this environment, or None when it can: it needs the
    packages of `ray[default]` (aiohttp, grpcio, opencensus, ...), which `ray[train]` lacks."""
    try:
        importlib.import_module("ray.dashboard.optional_deps")  # Ray's own check of those packages
    except ImportError as error:
        return (
            f"Ray's dashboard needs the packages of ray[default], and {error.name or 'one'} is not "
            "installed; install them with `pip install 'ray[default]'` (same version as ray), or "
            "leave out --ray-dashboard"
        )
    return None


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _keep_sigterm_handler() -> Iterator[None]:
    """ray.init() replaces the main thread's SIGTERM handler with `sys.exit`. In `symopt serve`
    that kills uvicorn's graceful shutdown: no lifespan end, no scheduler.stop() (running jobs
    are not requeued), the process aborts. Put the previous handler back."""
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if in_main else None
    try:
        yield
    finally:
        if in_main and previous is not None:
            signal.signal(signal.SIGTERM, previous)


class RayRuntime:
    """The scheduler's handle on Ray; every Ray call of the service goes through here."""

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        *,
        warm: bool = False,
        dashboard: bool = False,
    ) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.warm = warm
        self.dashboard = dashboard  # Ray's own dashboard, for operators
        self.dashboard_url: str | None = None
        self.ports: LocalPorts | None = None  # set when this runtime started a local Ray
        self._started_here = False
        self._remote: Any = None
        self._distributed: Any = None
        self._probe: concurrent.futures.Future[object] | None = None
        self._probe_lock = threading.Lock()

    def start(self) -> None:
        import ray

        from worker.distributed import run_distributed
        from worker.run import run_training
        from worker.warm import run_warm, warm_up

        if self.address and self.address.startswith("ray://"):
            # Ray Client cannot carry generator tasks (it asks for one plain result), and every run
            # is one: the scheduler must be a driver on a node of the cluster.
            raise ServiceError(
                f"RAY_ADDRESS={self.address} is a Ray Client address; the scheduler streams its "
                "runs through generator tasks, which Ray Client cannot carry. Run the scheduler on "
                "a node of the cluster (`ray start --address=<head>:6379`) with RAY_ADDRESS=auto"
            )
        # A cluster's dashboard runs on its head (`ray start --include-dashboard=true`); a local
        # one needs its packages here, or ray.init() would start the local Ray without it.
        if self.dashboard and not self.address and (missing := dashboard_unavailable()) is not None:
            raise ServiceError(missing)
        if not ray.is_initialized():
            with _keep_sigterm_handler():
                if self.address:
                    context = ray.init(address=self.address, namespace="symopt", log_to_driver=False)
                    if self.dashboard:
                        self._note_dashboard(context, f"the Ray cluster at {self.address}")
                else:
                    self._start_local(ray)
        # A generator task: Ray streams each yielded event back as it is produced. A run leaves
        # torch state behind (allocator caches, a CUDA context, thread settings, a training thread
        # a cancel could not join), so each job trains in a process of its own, used once, and a
        # cancelled run's memory is freed with its slot. Warm (the default): the task is a relay
        # that imports no torch, reused by Ray (max_calls=0: no limit), and the run is a fresh fork
        # of the node's warm process (worker/forkserver.py), which imported torch and symopt once.
        # Cold: the task trains itself in a fresh Ray worker (max_calls=1: it exits after the run).
        if self.warm:
            self._remote = ray.remote(max_calls=0)(run_warm)
            self._warm_nodes(ray, ray.remote(num_cpus=0)(warm_up))
        else:
            self._remote = ray.remote(max_calls=1)(run_training)
        # A data-parallel job's task only starts Ray Train and relays rank 0's events: it takes no
        # CPU of its own; the ranks ask for the job's resources (worker/distributed.py).
        self._distributed = ray.remote(max_calls=1, num_cpus=0)(run_distributed)

    @staticmethod
    def _warm_nodes(ray: Any, warm_up: Any) -> None:
        """Start the warm process of every node now (not at its first job); nobody waits for it."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        for node in ray.nodes():
            if node.get("Alive"):
                strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
                warm_up.options(scheduling_strategy=strategy).remote()

    def _start_local(self, ray: Any) -> None:
        taken: set[int] = set()
        ports = LocalPorts(
            gcs=free_port(taken=taken),
            dashboard=free_port(taken=taken),
            metrics_export=free_port(taken=taken),
        )
        # The variable is read while ray.init() starts the GCS, and only then: restore it, so that
        # nothing started later (a second runtime in tests, say) reuses the port.
        with _environment(RAY_GCS_SERVER_PORT=str(ports.gcs)):
            context = ray.init(
                num_cpus=self.num_cpus or os.cpu_count(),
                include_dashboard=self.dashboard,
                dashboard_host="127.0.0.1",  # it has no authentication: loopback only
                dashboard_port=ports.dashboard,
                _metrics_export_port=ports.metrics_export,
                log_to_driver=False,
                namespace="symopt",
            )
        self.ports, self._started_here = ports, True
        log.info(
            "started a local Ray: GCS on port %d, dashboard %s", ports.gcs, "on" if self.dashboard else "off"
        )
        if self.dashboard:
            self._note_dashboard(context, "the local Ray")

    def _note_dashboard(self, context: Any, where: str) -> None:
        """Log where Ray's dashboard is (an operator asked for it: `symopt serve --ray-dashboard`)."""
        url = getattr(context, "dashboard_url", None)
        if url:
            self.dashboard_url = url if "://" in url else f"http://{url}"
            log.info("Ray dashboard of %s: %s", where, self.dashboard_url)
        else:
            log.warning(
                "%s runs no Ray dashboard (its head needs `ray start --include-dashboard=true`)", where
            )

    def check(self, timeout: float = 5.0) -> str:
        """Return "ok" when Ray answers within `timeout` seconds, else why not (for /readyz).

        A dead GCS does not end `ray.is_initialized()`, and calls to it then hang (the driver
        retries for a minute): the probe runs in a thread of its own, one at a time, so a
        readiness poll never waits longer than `timeout` nor piles up hung threads."""
        import ray

        if self._remote is None:
            return "not started: the scheduler has not connected to Ray"
        if not ray.is_initialized():
            return "not connected: Ray was shut down in this process"
        with self._probe_lock:
            if self._probe is None or self._probe.done():
                self._probe = _in_thread(ray.cluster_resources)
            probe = self._probe
        where = f"the Ray cluster at {self.address}" if self.address else "the local Ray"
        try:
            probe.result(timeout)
        except concurrent.futures.TimeoutError:
            return f"not answering: {where} gave no answer within {timeout:g} s"
        except Exception as error:
            return f"unreachable: {where}: {type(error).__name__}: {error}"
        return "ok"

    def capacity(self) -> Capacity:
        import ray

        resources = ray.cluster_resources()
        return Capacity(float(resources.get("CPU", 0.0)), float(resources.get("GPU", 0.0)))

    def submit(self, request: RunRequest, *, cpus: int, gpus: int) -> Any:
        """Start a run; returns the ObjectRefGenerator of its events. A job of 2+ ranks runs as one
        Ray Train group whose workers hold its `cpus` and `gpus`."""
        name = f"symopt-job-{request.job_id}"
        if load_spec(request.spec).resources.ranks > 1:
            options = {"num_cpus": 0, "num_gpus": 0, "max_retries": 0, "name": name}
            return self._distributed.options(**options).remote(request)
        options = {"num_cpus": cpus, "num_gpus": gpus, "max_retries": 0, "name": name}
        if self.warm:
            return self._remote.options(**options).remote(request, cpus)
        return self._remote.options(**options).remote(request)

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


def _in_thread(call: Callable[[], object]) -> concurrent.futures.Future[object]:
    """Run `call` in a daemon thread (a hung call must not hold up the interpreter's exit, as a
    ThreadPoolExecutor's thread would)."""
    future: concurrent.futures.Future[object] = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(call())
        except BaseException as error:  # handed to whoever waits on the future
            future.set_exception(error)

    threading.Thread(target=run, name="symopt-ray-probe", daemon=True).start()
    return future
