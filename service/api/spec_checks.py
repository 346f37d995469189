"""Sweep and study specs checked in a separate process when checking them is real work.

Validating a sweep or a study builds a job spec for each bound or choice of its search space
(~50 us each, up to MAX_JOB_CHECKS): up to 100 ms of CPU. In a request thread that CPU holds the
GIL against every other request of the service, and each of a poll's thread hops then waits up to
the interpreter's 5 ms switch interval: one tenant's large invalid sweeps made another tenant's
metric polls 7x slower at p99. So a route checks a spec's outline in its thread (its fields,
counts and caps: microseconds), checks the job specs of a small one there too, and hands those of
a large one to one spawned worker process, started on first use, while the GIL stays free.
"""

from __future__ import annotations

import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from service.study_spec import StudySpec
from service.sweep_spec import OUTLINE, SweepSpec

from ..errors import OverloadedError
from .params import located, validated

__all__ = ["INLINE_JOB_CHECKS", "SpecChecker"]

# At most this many job checks (~2.5 ms of CPU) run in the request's thread: every ordinary sweep
# and study, which need tens, without a hop to the worker process.
INLINE_JOB_CHECKS = 50

Spec = TypeVar("Spec", SweepSpec, StudySpec)
_SPECS: dict[str, type[SweepSpec] | type[StudySpec]] = {"SweepSpec": SweepSpec, "StudySpec": StudySpec}


class SpecChecker:
    """Validates sweep and study bodies, the large ones in its worker process."""

    def __init__(self, timeout_s: float = 120.0) -> None:
        self.timeout_s = timeout_s
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def validated(self, model: type[Spec], body: Any) -> Spec:
        """`body` as `model`, or a 422 naming each problem (RequestValidationError)."""
        outline = validated(model, body, context=OUTLINE)
        if outline.job_checks <= INLINE_JOB_CHECKS:
            return validated(model, body)
        problems = self._in_worker(model.__name__, body)
        if problems:
            raise RequestValidationError(problems)
        return outline  # the same model: the job checks only add errors

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _in_worker(self, name: str, body: Any) -> list[dict[str, Any]]:
        for attempt in range(2):  # a worker that died (killed, out of memory) is replaced once
            pool = self._started()
            try:
                return pool.submit(_problems, name, body).result(timeout=self.timeout_s)
            except BrokenProcessPool:
                with self._lock:
                    if self._pool is pool:
                        self._pool = None
                if attempt:
                    raise OverloadedError("the spec checker's worker process died twice") from None
            except TimeoutError:
                raise OverloadedError(
                    f"checking this spec took over {self.timeout_s:.0f} s; the service is overloaded, retry"
                ) from None
        raise AssertionError("unreachable")

    def _started(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=1, mp_context=get_context("spawn"), initializer=_one_thread
                )
            return self._pool


def _one_thread() -> None:
    import torch  # imported already, with symopt_core's specs

    torch.set_num_threads(1)


def _problems(name: str, body: Any) -> list[dict[str, Any]]:
    """In the worker: the problems of `body` as the spec `name`, none when it is valid."""
    try:
        _SPECS[name].model_validate(body)
    except ValidationError as error:
        return located(error, _SPECS[name])
    return []
