"""The readable SymOpt step: one tensor, one matrix at a time (`SymOpt(batched=False)`).

No multi-tensor kernels and no stacking of matrices across parameters: each parameter's
momentum, direction and update are computed on their own, in the order the formulas read. The
parity tests (tests/core/test_symopt.py, test_eo_parity_rules.py) run the batched engine
(engines.py) against this one on float64 CPU tensors; slow, so not for training.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from .engines import Engine, MatrixJob, direction

__all__ = ["ReferenceEngine"]


class ReferenceEngine(Engine):
    """Every step of SymOpt per tensor (engines.py says what each method does)."""

    foreach = False  # momentum and AdamW one tensor at a time (elementwise.py)

    def count(self, steps: list[Tensor]) -> None:
        for step in steps:
            step += 1

    def apply(self, params: list[Tensor], updates: list[Tensor], lr: float, weight_decay: float) -> None:
        # p <- (1 - lr·wd) p - lr · update
        for p, update in zip(params, updates, strict=True):
            p.mul_(1 - lr * weight_decay)
            p.add_(update, alpha=-lr)

    def updates(self, jobs: Sequence[MatrixJob]) -> list[Tensor]:
        # D = rule(M) for each parameter's matrices M, then its update from D.
        return [job.update(direction(job.rule, job.matrices(), job.options)) for job in jobs]
