"""A job spec's `optimizer` section as an optimizer: the one place where its fields become
`build_optimizer`'s arguments, for the service's own loop and for a user's model in an agent trial."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from .optim.schedule_free import ScheduleFree
from .optim.symopt import SymOpt
from .presets import build_optimizer
from .spec import OptimizerSpec

__all__ = ["build_spec_optimizer"]


def build_spec_optimizer(
    model: nn.Module,
    optimizer: OptimizerSpec | Mapping[str, Any],
    *,
    mapping: Mapping[str, Any] | None = None,
    shard: bool = False,
) -> SymOpt | ScheduleFree:
    """The optimizer `optimizer` (a spec's section, or its JSON) describes, for `model`.

    mapping: {parameter name pattern: class or (class, layout)}; None: the section's own mapping."""
    section = optimizer if isinstance(optimizer, OptimizerSpec) else OptimizerSpec.model_validate(optimizer)
    return build_optimizer(
        model,
        section.preset,
        lr=section.lr,
        weight_decay=section.weight_decay,
        overrides=section.override_options(),
        mapping=section.mapping_options() if mapping is None else mapping,
        schedule_free=section.schedule_free.options() if section.schedule_free else None,
        shard=shard,
    )
