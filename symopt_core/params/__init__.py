"""Parameter classes and the classifier that assigns them."""

from __future__ import annotations

from .classes import CLASS_ALIASES, ParamClass, ParamInfo
from .classify import classify, describe_params

__all__ = ["CLASS_ALIASES", "ParamClass", "ParamInfo", "classify", "describe_params"]
