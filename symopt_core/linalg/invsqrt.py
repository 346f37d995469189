"""Inverse square root of symmetric positive (semi)definite Gram matrices, ALGORITHMS.md 8.6.

Used by the one-sided rules: right spectral M (MᵀM + εI)^(-1/2) and left spectral
(MMᵀ + εI)^(-1/2) M. The iterations run in fp32 (TF32 on GPUs that allow it).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from .coefficients import GRAM_NEWTON_SCHULZ, POLAR_EXPRESS_8_INVSQRT, schedule
from .gram import gram_inverse_sqrt, restart_points

__all__ = ["INVSQRT_METHODS", "InvSqrtMethod", "gram_dtype", "inverse_sqrt"]

InvSqrtMethod = Literal[
    "polar_express", "polar_express_converged", "gram_newton_schulz", "newton_schulz", "eigh"
]
INVSQRT_METHODS: tuple[str, ...] = get_args(InvSqrtMethod)

_CONVERGED_STEPS = 40


def gram_dtype(method: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype to form a Gram matrix in before `inverse_sqrt(..., method)`.

    The converged iteration needs a Gram whose null eigenvalues stay above -ε: formed in fp32,
    a rank-deficient Gram (a centered router's, along 1) has eigenvalues near -1e-8.
    """
    if method == "polar_express_converged":
        return torch.float64
    return torch.promote_types(dtype, torch.float32)


def inverse_sqrt(
    A: Tensor,
    method: str = "polar_express",
    steps: int = 5,
    eps: float = 1e-8,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """(A + εI)^(-1/2) for each symmetric PSD matrix in A[..., k, k], returned in A's dtype.

    method:
      - "polar_express": EO's default: `steps` iterations of the coupled Polar Express iteration
        with the 8-step list (safety 1.05). With 5 steps the result is not converged (EO parity).
      - "polar_express_converged": the same list, then its last tuple, for max(steps, 40)
        iterations in float64 (no data-dependent stopping, so no host sync; float64 because fp32
        rounding makes the zero eigenvalues of rank-deficient Grams slightly negative, and an
        iteration run that long amplifies them until it overflows).
      - "gram_newton_schulz": the Gram Newton–Schulz recursion run on A itself (gram.py), with
        R₀ = A / tr(A) and EO's s = 1.05 list: M (MᵀM + εI)^(-1/2) is then the polar factor EO's
        RightPolarGradM_GramNS computes for M, in exact arithmetic. The same list as
        "polar_express" with another normalization (tr(A) instead of 1.02‖A‖_F), so with
        5 steps it is not converged either; restarts as in polar (before iteration 2, and 4,
        6, ... past 5 steps).
      - "newton_schulz": the coupled Newton–Schulz iteration T = (3I - ZY)/2, `steps` times.
      - "eigh": exact, through an eigendecomposition (the reference); eigenvalues at rounding
        level are treated as zero (pseudo-inverse), so rank-deficient Gram matrices work.
    """
    if method not in INVSQRT_METHODS:
        raise ValueError(
            f"Invalid inverse-square-root method: {method!r}; valid methods: {', '.join(INVSQRT_METHODS)}"
        )
    if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"Invalid input for inverse_sqrt: need [..., k, k], got shape {tuple(A.shape)}")
    if steps < 1:
        raise ValueError(f"Invalid number of iteration steps: {steps} (need at least 1)")
    converge = method == "polar_express_converged"
    work = dtype or (torch.float64 if converge or A.dtype == torch.float64 else torch.float32)
    S = _symmetrize(A.to(work))
    if method == "eigh":
        return _inverse_sqrt_eigh(S, eps).to(A.dtype)
    identity = torch.eye(S.shape[-1], dtype=work, device=S.device).expand_as(S)
    S = S + eps * identity
    if method == "newton_schulz":
        return _inverse_sqrt_newton_schulz(S, identity, steps).to(A.dtype)
    if method == "gram_newton_schulz":
        coefficients = schedule(GRAM_NEWTON_SCHULZ, steps)
        batch, k = S.shape[:-2], S.shape[-1]
        root = gram_inverse_sqrt(S.reshape(-1, k, k), coefficients, restart_points(steps))
        return root.reshape(*batch, k, k).to(A.dtype)
    total = max(steps, _CONVERGED_STEPS) if converge else steps
    return _inverse_sqrt_polar_express(S, identity, total).to(A.dtype)


def _symmetrize(A: Tensor) -> Tensor:
    return (A + A.mT) / 2


def _inverse_sqrt_eigh(S: Tensor, eps: float) -> Tensor:
    eigenvalues, V = torch.linalg.eigh(S)
    tolerance = eigenvalues.abs().amax(dim=-1, keepdim=True) * S.shape[-1] * torch.finfo(S.dtype).eps
    inverse_root = torch.where(
        eigenvalues > tolerance, (eigenvalues.clamp(min=0) + eps).rsqrt(), torch.zeros_like(eigenvalues)
    )
    return (V * inverse_root.unsqueeze(-2)) @ V.mT


def _inverse_sqrt_newton_schulz(S: Tensor, identity: Tensor, steps: int) -> Tensor:
    norm = torch.linalg.matrix_norm(S, keepdim=True)
    Y, Z = S / norm, identity.clone()
    for _ in range(steps):
        T = (3 * identity - Z @ Y) / 2
        Y, Z = Y @ T, T @ Z
    return Z / norm.sqrt()


def _inverse_sqrt_polar_express(S: Tensor, identity: Tensor, steps: int) -> Tensor:
    # Y -> A^(1/2)/√α and Z -> A^(-1/2)·√α, the odd polynomial p(x) = ax + bx³ + cx⁵ written as x·φ(1 - x²).
    alpha = torch.linalg.matrix_norm(S, keepdim=True) * 1.02 + 1e-8
    Y, Z = S / alpha, identity.clone()
    for a, b, c in schedule(POLAR_EXPRESS_8_INVSQRT, steps):
        R = _symmetrize(identity - Z @ Y)
        M = (a + b + c) * identity + (-b - 2 * c) * R + c * (R @ R)
        Y, Z = Y @ M, M @ Z
    return Z / alpha.sqrt()
