"""The warm process of a node: torch and symopt imported once, a fresh fork for every job.

A job's run used to start in a fresh Ray worker process, which imported torch, symopt and
torch._dynamo (every `torch.optim.Optimizer` imports it on first use) before its first step:
about 4.5 s of CPU and 3-4 s of wall time per job, for a tiny job more than the training itself.
This process pays that once per node. It listens on a Unix socket; each connection is one job:

    relay (a Ray task holding the job's CPUs and GPUs)  --request-->  this process
                                                               fork()  |
    relay  <--events--  child: run_training(request, ...) as before, in a process of its own

The child is a plain copy-on-write fork, used for one job and gone after it, as the fresh worker
was: a cancelled run's thread and memory go with its process. Forking is safe because this
process stays single-threaded and never touches CUDA or runs a torch op (an OpenMP thread pool
or a CUDA context does not survive a fork); the child sets its own thread count and visible
GPUs before its first op.

Lifetimes: this process exits when the node's raylet does (checked every second). A child stops
at its next step boundary when its relay goes away (the connection closes: a forced cancel, a
killed service); a relay sees a killed child as a closed connection and fails the attempt,
which the scheduler retries, as it did a killed worker.

    python -m worker.forkserver SOCKET RAYLET_PID
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

from symopt_core.run_request import RunRequest

__all__ = ["DONE", "STOP", "ForkRequest", "preload", "serve"]

DONE = "done"  # the child's last message: the run's events are all sent
STOP = "stop"  # from the relay: stop at the next step boundary (a cancel)
_ACCEPT_TIMEOUT_S = 1.0  # how often the raylet's liveness is checked while nobody connects
# A child whose relay is gone (killed, or cancelled by force) stops at its next step boundary;
# one that has not exited this long after is hung, and ends here.
_ORPHAN_GRACE_S = 60.0


@dataclass(frozen=True)
class ForkRequest:
    """What a relay sends the warm process for one job: the run, unchanged, and what the child
    must set before its first torch op. (Pickled by the relay as `worker.forkserver.ForkRequest`;
    the child imports that module beside `__main__` to read it, which costs nothing.)"""

    run: RunRequest
    threads: int  # torch's thread count in the child
    env: dict[str, str]  # CUDA_VISIBLE_DEVICES: the relay's task's GPUs, and only those


def preload() -> None:
    """Import what every job imports, so that a fork starts with it (no torch op, no CUDA)."""
    import torch
    import torch._dynamo

    import symopt_core.training  # noqa: F401
    import worker.run  # noqa: F401

    if torch.cuda.is_initialized():  # a fork would inherit a CUDA context it cannot use
        raise RuntimeError("the warm process initialized CUDA while importing; children could not use it")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def serve(path: str, raylet_pid: int) -> None:
    """Accept one connection per job on the Unix socket `path` and fork a child for it, until the
    raylet `raylet_pid` is gone."""
    preload()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    temporary = f"{path}.{os.getpid()}"
    server.bind(temporary)
    os.chmod(temporary, 0o600)
    server.listen(64)
    os.replace(temporary, path)  # the socket appears whole: a relay never meets a half-bound one
    server.settimeout(_ACCEPT_TIMEOUT_S)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the children
    while _alive(raylet_pid):
        try:
            accepted, _ = server.accept()
        except TimeoutError:
            continue
        accepted.settimeout(None)
        if os.fork() == 0:
            server.close()
            _child(Connection(accepted.detach()))  # never returns
        accepted.close()
    server.close()
    if os.path.exists(path):
        os.unlink(path)


def _child(connection: Connection) -> None:
    """One job in a fresh fork: the request, then its events, then DONE; exit."""
    code = 0
    try:
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        request: ForkRequest = connection.recv()
        os.environ.update(request.env)  # before any CUDA call
        import torch

        from worker.run import run_training

        torch.set_num_threads(request.threads)
        stop = threading.Event()
        threading.Thread(target=_listen, args=(connection, stop), name="symopt-relay", daemon=True).start()
        # Its liveness is the relay's connection (_listen), not this process's parent.
        events = run_training(request.run, stop=stop, started={"warm": True}, watch_parent=False)
        try:
            for event in events:
                connection.send(event)
        finally:
            events.close()  # a send failed (the relay is gone): stop at the next step, checkpoint
        connection.send(DONE)
    except (EOFError, OSError):  # the relay went away (or never asked: a warm-up probe)
        code = 1
    except BaseException:  # not from training (run_training reports those): say so where it is seen
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # no atexit handlers of the parent's, no second run of its finalizers


def _listen(connection: Connection, stop: threading.Event) -> None:
    """Set `stop` when the relay asks (a cancel) or when its connection closes (the relay was
    killed or cancelled by force); from then on the process has _ORPHAN_GRACE_S to exit."""
    try:
        while True:
            if connection.recv() == STOP:
                stop.set()
    except (EOFError, OSError):
        pass
    stop.set()
    time.sleep(_ORPHAN_GRACE_S)  # a daemon thread: a child that ends sooner never gets here
    os._exit(1)


def main(path: str, raylet_pid: int) -> None:
    """Detach, then serve. Ray kills a worker's direct child processes when the worker exits, and
    the relay that starts this process is a worker: the first process exits at once, and its
    child, the warm process, is nobody's child in Ray. Its pid goes to `<path>.pid` (the relay
    watches it while the imports run)."""
    if os.fork() > 0:
        os._exit(0)
    with open(f"{path}.pid", "w") as written:
        written.write(str(os.getpid()))
    try:
        serve(path, raylet_pid)
    finally:
        leftovers = [f"{path}.pid", f"{path}.lock"]
        with contextlib.suppress(OSError):
            if os.path.getsize(f"{path}.log") == 0:  # kept only when it says something
                leftovers.append(f"{path}.log")
        for leftover in leftovers:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
