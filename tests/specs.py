"""The tiny job spec the service tests and the plumbing benchmarks train, in one place.

A qwen3 `tiny` model on the first 256 KiB of the running Python's standard-library sources, one
thread, a few steps. The cap matters: the default `pystdlib` corpus is 8 MiB, and reading and
char-tokenizing it costs every job about 2.2 s (0.16 s capped), which is most of a tiny job.
Tests that are about the corpus itself name their own.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["CORPUS_BYTES", "TINY_DATA", "TINY_JOB", "tiny_job"]

CORPUS_BYTES = 256 * 1024

TINY_DATA: dict[str, Any] = {"corpus": "pystdlib", "seq_len": 32, "options": {"max_bytes": CORPUS_BYTES}}

TINY_JOB: dict[str, Any] = {
    "name": "tiny",
    "model": {"family": "qwen3", "size": "tiny"},
    "data": TINY_DATA,
    "batch": {"size": 4},
    "steps": 30,
    "log_every": 5,
    "eval": {"every": 15, "batches": 2},
    "schedule": {"kind": "constant"},
    "seed": 0,
}


def tiny_job(**changes: Any) -> dict[str, Any]:
    """A deep copy of TINY_JOB with top-level fields replaced (`data=` merges into TINY_DATA, so
    `data={"seq_len": 64}` keeps the capped corpus)."""
    spec = copy.deepcopy(TINY_JOB)
    data = changes.pop("data", None)
    if data is not None:
        spec["data"] = {**spec["data"], **copy.deepcopy(data)}
    spec.update(copy.deepcopy(changes))
    return spec
