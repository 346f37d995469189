"""symopt_core: the symmetry-compatible optimizer stack, as a plain torch library.

    import symopt_core
    opt = symopt_core.build_optimizer(model, preset="symmetric", lr=0.02)

No database, no Ray, no HTTP: the service and the workers build on this package.

Names load on first use (PEP 562): `import symopt_core.spec_tree` or `symopt_core.errors`, as the
client and the CLI do, does not import torch, so those commands start in a fraction of a second.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, ModeError, SymoptError

if TYPE_CHECKING:
    from .linalg import inverse_sqrt, polar
    from .models import build_model
    from .optim import RULES, SymOpt, get_rule
    from .optim.schedule_free import ScheduleFree
    from .params import ParamClass, classify, describe_params
    from .presets import PRESETS, build_optimizer, param_groups
    from .spec import JobSpec, load_spec
    from .training import Result, train

# public name -> the module that defines it
_LAZY = {
    "inverse_sqrt": ".linalg",
    "polar": ".linalg",
    "build_model": ".models",
    "RULES": ".optim",
    "SymOpt": ".optim",
    "get_rule": ".optim",
    "ScheduleFree": ".optim.schedule_free",
    "ParamClass": ".params",
    "classify": ".params",
    "describe_params": ".params",
    "PRESETS": ".presets",
    "build_optimizer": ".presets",
    "param_groups": ".presets",
    "JobSpec": ".spec",
    "load_spec": ".spec",
    "Result": ".training",
    "train": ".training",
}

__all__ = [
    "PRESETS",
    "RULES",
    "ConfigError",
    "JobSpec",
    "ModeError",
    "ParamClass",
    "Result",
    "ScheduleFree",
    "SymOpt",
    "SymoptError",
    "build_model",
    "build_optimizer",
    "classify",
    "describe_params",
    "get_rule",
    "inverse_sqrt",
    "load_spec",
    "param_groups",
    "polar",
    "train",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'symopt_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
