"""symopt_core: the symmetry-compatible optimizer stack, as a plain torch library.

    import symopt_core
    opt = symopt_core.build_optimizer(model, preset="symmetric", lr=0.02)

No database, no Ray, no HTTP: the service and the workers build on this package.
"""

from __future__ import annotations

from .errors import ConfigError, ModeError, SymoptError
from .linalg import inverse_sqrt, polar
from .models import build_model
from .optim import RULES, SymOpt, get_rule
from .optim.schedule_free import ScheduleFree
from .params import ParamClass, classify, describe_params
from .presets import PRESETS, build_optimizer, param_groups
from .spec import JobSpec, load_spec
from .training import Result, train

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
