"""How many parameters a reference family's model has, without building it: a one-layer and a
two-layer copy are built on the meta device (no memory) and the difference is the per-layer count,
so a spec asking for 2^20 layers costs two tiny builds, not a million-layer module tree."""

from __future__ import annotations

from typing import Any

import torch

from .registry import build_config, build_model

__all__ = ["parameter_count"]


def parameter_count(family: str, size: str | None, dims: dict[str, Any], vocab_size: int) -> int:
    """Parameters of `family` at `size` with `dims` and `vocab_size` (exact for a stack of equal
    layers, as every reference family is: layers that alternate attention kinds share shapes)."""
    layers = int(build_config(family, size, vocab_size=vocab_size, **dims).n_layers)
    counts = []
    for n in (1, 2):
        with torch.device("meta"):
            model = build_model(family, size, vocab_size=vocab_size, **{**dims, "n_layers": n})
        counts.append(sum(p.numel() for p in model.parameters()))
    one, two = counts
    return one + (layers - 1) * (two - one)
