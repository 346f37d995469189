"""The Ray side of a warm run: `run_warm` holds the job's resources and relays its events.

`run_warm` is the task the scheduler starts for a one-process job in place of `run_training`
(settings.warm_workers, on by default). It imports no torch (of symopt only the torch-free
`RunRequest` it is handed), so Ray can reuse the process that runs it for job after job; the
training itself runs in a fresh fork of the node's warm process (worker/forkserver.py), started
here on first use, one per raylet.

To the scheduler nothing changes: the same events, a cancel that stops at the next step and
leaves a checkpoint, and an attempt that fails when the training process dies (a `kill -9` of
the pid in the `worker_started` event), which the scheduler retries.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from symopt_core.run_request import RunRequest

__all__ = ["WarmProcessError", "connect", "run_warm", "socket_path", "warm_up"]

_START_TIMEOUT_S = 300.0  # importing torch on a loaded node can take a while; a hang cannot
_STOP_WAIT_S = 60.0  # for a cancelled run's checkpoint, as run_training waits for its thread
# Set per job in the child (from the job's task), not inherited from whichever relay started
# the warm process.
_PER_JOB_ENV = ("CUDA_VISIBLE_DEVICES",)


class WarmProcessError(RuntimeError):
    """The node's warm process could not be started or reached."""


def socket_path(raylet_pid: int) -> Path:
    """Where the warm process of the raylet `raylet_pid` listens (a directory only this user
    can enter: whoever can connect can make it train)."""
    directory = Path(tempfile.gettempdir()) / f"symopt-warm-{os.getuid()}"
    directory.mkdir(mode=0o700, exist_ok=True)
    return directory / f"{raylet_pid}.sock"


def _try_connect(path: Path) -> Connection | None:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        probe.close()
        return None
    return Connection(probe.detach())


def connect(raylet_pid: int) -> Connection:
    """A connection to the raylet's warm process: one job's request and events. The first relay
    on a node starts the process (under a file lock, so that only one does)."""
    path = socket_path(raylet_pid)
    if (connection := _try_connect(path)) is not None:
        return connection
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (connection := _try_connect(path)) is not None:  # another relay started it meanwhile
            return connection
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by a warm process that was killed
        environment = {k: v for k, v in os.environ.items() if k not in _PER_JOB_ENV}
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}.pid").unlink()
        with open(f"{path}.log", "ab") as log:
            launcher = subprocess.Popen(
                [sys.executable, "-m", "worker.forkserver", str(path), str(raylet_pid)],
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # not in this worker's process group either
            )
        if launcher.wait(timeout=_START_TIMEOUT_S) != 0:  # it forks the warm process and exits
            raise WarmProcessError(
                f"the warm process did not start (exit {launcher.returncode}):\n{_log(path)}"
            )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if (connection := _try_connect(path)) is not None:
                return connection
            if not _starting(path):
                raise WarmProcessError(f"the warm process exited while it started:\n{_log(path)}")
            time.sleep(0.05)
        raise WarmProcessError(f"the warm process did not listen on {path} within {_START_TIMEOUT_S:g} s")


def _starting(path: Path) -> bool:
    """Whether the warm process is still alive (or has not written its pid yet)."""
    try:
        pid = int(Path(f"{path}.pid").read_text())
    except (FileNotFoundError, ValueError):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _log(path: Path) -> str:
    return Path(f"{path}.log").read_text(errors="replace")[-2000:]


def run_warm(request: RunRequest, threads: int = 1) -> Iterator[dict[str, Any]]:
    """Train `request` in a fresh fork of this node's warm process and yield its events (those of
    `run_training`; the first says `warm: true`). `threads`: torch's thread count in the child,
    unless OMP_NUM_THREADS (Ray sets it to the task's CPUs) says otherwise."""
    import ray

    from .forkserver import DONE, STOP, ForkRequest

    # Ray starts its workers as children of the raylet: this process's parent.
    connection = connect(os.getppid())
    gpus = ray.get_gpu_ids()  # this task's GPUs: the child must see those, and only those
    fork = ForkRequest(
        run=request,
        threads=int(os.environ.get("OMP_NUM_THREADS") or threads),
        env={"CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in gpus)} if gpus else {},
    )
    try:
        connection.send(fork)
        while (event := connection.recv()) != DONE:
            yield event
    except EOFError:
        raise RuntimeError(
            "the job's training process ended without finishing its run (killed, or out of memory)"
        ) from None
    except BaseException:
        # Cancelled (or the caller went away): the child stops at its next step and checkpoints.
        with contextlib.suppress(OSError, EOFError):
            connection.send(STOP)
            deadline = time.monotonic() + _STOP_WAIT_S
            while time.monotonic() < deadline and connection.poll(max(0.0, deadline - time.monotonic())):
                if connection.recv() == DONE:
                    break
        raise
    finally:
        connection.close()


def warm_up() -> int:
    """Start this node's warm process if it is not running (a first job then starts at once);
    returns its raylet's pid. The probe connection's child sees no request and exits."""
    raylet = os.getppid()
    connect(raylet).close()
    return raylet
