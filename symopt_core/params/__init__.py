"""Parameter classes and the classifier that assigns them."""

from __future__ import annotations

from .classes import CLASS_ALIASES, ParamClass, ParamInfo
from .classify import RefusedParamsError, UnclaimedParamsError, classify, describe_params

__all__ = [
    "CLASS_ALIASES",
    "ParamClass",
    "ParamInfo",
    "RefusedParamsError",
    "UnclaimedParamsError",
    "classify",
    "describe_params",
]
