"""Readable reference for Gram Newton–Schulz (ALGORITHMS.md 8.5): one matrix, float64, plain.

`polar(G, "gram_newton_schulz")` and `inverse_sqrt(A, "gram_newton_schulz")` (gram.py) batch
over leading dimensions, fuse every update into one GEMM-accumulate and skip the Gram updates a
restart or the last step would discard; the parity tests check them against these functions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .coefficients import GRAM_NEWTON_SCHULZ, schedule
from .gram import restart_points

__all__ = ["reference_gram_inverse_sqrt", "reference_gram_polar"]


def reference_gram_polar(G: Tensor, steps: int = 5, eps: float = 1e-7) -> Tensor:
    """Gram Newton–Schulz polar factor of one matrix G[m, n], in float64."""
    X = G.double()
    tall = X.shape[0] > X.shape[1]
    if tall:
        X = X.T
    X = X / (torch.linalg.matrix_norm(X) + eps)
    coefficients = schedule(GRAM_NEWTON_SCHULZ, steps)
    if X.shape[0] == X.shape[1]:
        for a, b, c in coefficients:
            A = X @ X.T
            X = a * X + (b * A + c * A @ A) @ X
    else:
        identity = torch.eye(X.shape[0], dtype=X.dtype)
        R, Q = X @ X.T, identity
        for t, (a, b, c) in enumerate(coefficients):
            if t in restart_points(steps):
                X = Q @ X
                R, Q = X @ X.T, identity
            phi = a * identity + b * R + c * R @ R
            Q = Q @ phi
            R = phi @ R @ phi
        X = Q @ X
    return X.T if tall else X


def reference_gram_inverse_sqrt(A: Tensor, steps: int = 5, eps: float = 1e-8) -> Tensor:
    """(A + εI)^(-1/2) of one symmetric PSD matrix A[k, k] by the Gram recursion, in float64."""
    identity = torch.eye(A.shape[0], dtype=torch.float64)
    S = (A.double() + A.double().T) / 2 + eps * identity
    scale = torch.trace(S)
    R0 = S / scale
    R, P, Q = R0, identity, identity
    for t, (a, b, c) in enumerate(schedule(GRAM_NEWTON_SCHULZ, steps)):
        if t in restart_points(steps):
            P = Q @ P
            R, Q = P @ R0 @ P.T, identity  # the Gram of the iterate P X: P XXᵀ Pᵀ
        phi = a * identity + b * R + c * R @ R
        Q = Q @ phi
        R = phi @ R @ phi
    return Q @ P / scale.sqrt()
