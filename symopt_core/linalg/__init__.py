"""Batched orthogonalization and Gram-matrix functions used by the update rules."""

from __future__ import annotations

from .coefficients import (
    GRAM_NEWTON_SCHULZ,
    NEWTON_SCHULZ_QUINTIC,
    POLAR_EXPRESS_5,
    POLAR_EXPRESS_8,
    POLAR_EXPRESS_8_UNSAFE,
)
from .invsqrt import INVSQRT_METHODS, InvSqrtMethod, gram_dtype, inverse_sqrt
from .polar import POLAR_METHODS, PolarMethod, default_compute_dtype, nuclear_norm, polar

__all__ = [
    "GRAM_NEWTON_SCHULZ",
    "INVSQRT_METHODS",
    "NEWTON_SCHULZ_QUINTIC",
    "POLAR_EXPRESS_5",
    "POLAR_EXPRESS_8",
    "POLAR_EXPRESS_8_UNSAFE",
    "POLAR_METHODS",
    "InvSqrtMethod",
    "PolarMethod",
    "default_compute_dtype",
    "gram_dtype",
    "inverse_sqrt",
    "nuclear_norm",
    "polar",
]
