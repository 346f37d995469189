"""Learning-rate and batch-size schedules as pure functions of the step (or tokens seen).

`lr_multiplier(step, schedule, total_steps)` scales every param group's base lr (the optimizer's
per-class lrs keep their ratios). `batch_at(tokens_seen, ramp, ...)` is the adaptive growth of
ALGORITHMS.md 11.2: stages doubling the tokens per step, B·S_k = B·S_0 · 2^k, entered once the
tokens seen t satisfy c · t^(2/3) >= B·S_k, growing the sequence length first, then the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["BatchShape", "batch_at", "default_ramp_constant", "lr_multiplier"]


def lr_multiplier(
    step: int,
    *,
    kind: str,
    total_steps: int,
    warmup_steps: int = 0,
    decay_frac: float = 0.2,
    min_lr_ratio: float = 0.0,
) -> float:
    """The lr multiplier at `step` (0-based) for schedule `kind`.

    constant: 1 after warmup. cosine: nanoGPT's cosine from 1 to min_lr_ratio between the end of
    warmup and total_steps. linear: linear decay to min_lr_ratio. wsd: warmup, stable at 1,
    then linear decay over the last decay_frac of the steps. schedule_free: warmup only (the
    averaging does the rest). Warmup is nanoGPT's: (step + 1) / (warmup_steps + 1).
    """
    if warmup_steps and step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if kind in ("constant", "schedule_free"):
        return 1.0
    if kind == "wsd":
        decay_start = total_steps - round(decay_frac * total_steps)
        if step < decay_start:
            return 1.0
        progress = (step - decay_start) / max(1, total_steps - decay_start)
        return 1.0 - (1.0 - min_lr_ratio) * min(1.0, progress)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if kind == "cosine":
        return min_lr_ratio + 0.5 * (1.0 + math.cos(math.pi * progress)) * (1.0 - min_lr_ratio)
    if kind == "linear":
        return 1.0 - (1.0 - min_lr_ratio) * progress
    raise ValueError(
        f"Invalid schedule kind: {kind!r}; valid kinds: constant, cosine, linear, wsd, schedule_free"
    )


@dataclass(frozen=True)
class BatchShape:
    size: int  # sequences per optimizer step
    seq_len: int
    stage: int

    @property
    def tokens(self) -> int:
        return self.size * self.seq_len


def default_ramp_constant(final_tokens_per_step: int, total_steps: int, reach_fraction: float = 0.5) -> float:
    """c such that c·t^(2/3) reaches the final tokens per step after about `reach_fraction` of
    a run that spent all its steps at the final batch: c = B·S / (f · steps · B·S)^(2/3)."""
    horizon = reach_fraction * total_steps * final_tokens_per_step
    return final_tokens_per_step / horizon ** (2 / 3)


def batch_at(
    tokens_seen: int,
    *,
    start_size: int,
    start_seq_len: int,
    final_size: int,
    final_seq_len: int,
    c: float,
) -> BatchShape:
    """The stage of the growth schedule after `tokens_seen` tokens (ALGORITHMS.md 11.2, derived)."""
    size, seq_len, stage = start_size, start_seq_len, 0
    while True:
        grow_seq = seq_len < final_seq_len
        next_size = size if grow_seq else min(final_size, size * 2)
        next_seq = min(final_seq_len, seq_len * 2) if grow_seq else seq_len
        if (next_size, next_seq) == (size, seq_len):
            return BatchShape(size, seq_len, stage)
        # Stage k+1 starts once c · t^(2/3) >= (B·S)_{k+1}, i.e. t >= ((B·S)_{k+1} / c)^(3/2).
        if tokens_seen < (next_size * next_seq / c) ** 1.5:
            return BatchShape(size, seq_len, stage)
        size, seq_len, stage = next_size, next_seq, stage + 1
