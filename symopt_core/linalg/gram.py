"""Gram Newton–Schulz (Dao-AILab's gram-newton-schulz; ALGORITHMS.md 8.5), batched.

The odd quintic X ← aX + b(XXᵀ)X + c(XXᵀ)²X = φ(R)X, with R = XXᵀ and φ(R) = aI + bR + cR²,
never needs X inside the loop: after t steps X_t = Q_t X₀ with Q_t = φ_t(R_{t-1})···φ_1(R₀), and
the Gram of the iterate follows R_t = φ_t(R_{t-1}) R_{t-1} φ_t(R_{t-1}). For X of shape s×L
(s ≤ L) each step costs four s×s GEMMs instead of two s×L ones and an s×s one, and X is
touched only to form R₀, at each restart, and once at the end (QX).

Every line of the loop is one GEMM-accumulate s·C + r·A@B (`torch.baddbmm`): in fp16/bf16 the
product is accumulated in fp32 and rounded once, where a chain of separate half-precision
operations is about 10× less accurate (ALGORITHMS.md 8.5).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .coefficients import Coefficients

__all__ = ["gram_inverse_sqrt", "gram_polar", "gram_polar_flops", "restart_points"]


def restart_points(steps: int) -> frozenset[int]:
    """The (0-based) iterations before which the Gram recursion restarts from the iterate.

    Up to 5 steps: before iteration 2 only, as Dao-AILab recommend and as EO runs it (its
    default `gram_newton_schulz_reset_iterations=[2]`). Longer runs restart before every second
    iteration (2, 4, 6, ...): rounding noise in R's small eigenvalues grows by about a_t² per
    step until R is recomputed. Measured in bf16 on 64×512 inputs of condition 1e3-1e4: 8 steps
    with the single restart end 1e6-1e24 away from the float64 result, restarts every third
    step (2, 5) still blow up on some inputs, every second one stays within 0.1 up to 40 steps.
    """
    if steps <= 5:
        return frozenset({2} if steps > 2 else ())
    return frozenset(range(2, steps, 2))


def gram_polar_flops(m: int, n: int, steps: int) -> float:
    """Multiply-add FLOPs (2 per MAC) of gram_polar on an m×n matrix, s = min(m, n), L = max.

    R₀ = XXᵀ, each restart (X ← QX, R = XXᵀ) and the final QX cost 2s²L each; every step costs
    Z (2s³), Q ← QZ + aQ (2s³, none on a segment's first step) and the R update (4s³, skipped
    on the last step and before a restart). 5 steps, one restart: 8s²L + 28s³, against the
    standard quintic's 5(4s²L + 2s³) = 20s²L + 10s³. A square matrix runs the standard quintic.
    """
    s, L = min(m, n), max(m, n)
    if s == L:
        return steps * 6.0 * s**3
    restarts = restart_points(steps)
    total = 2.0 * s * s * L * (2 + 2 * len(restarts))
    for t in range(steps):
        total += 2.0 * s**3 * (1 + (t > 0 and t not in restarts))
        if t < steps - 1 and t + 1 not in restarts:
            total += 4.0 * s**3
    return total


def _gram_polynomial(
    R: Tensor,
    coefficients: tuple[Coefficients, ...],
    restarts: frozenset[int],
    restart: Callable[[Tensor], Tensor],
) -> Tensor:
    """Q = Π φ_t(R_t) over the last segment; `restart(Q)` applies Q to the carried iterate and
    returns its fresh Gram matrix."""
    eye = torch.eye(R.shape[-1], dtype=R.dtype, device=R.device)
    Q: Tensor | None = None
    last = len(coefficients) - 1
    for t, (a, b, c) in enumerate(coefficients):
        if t in restarts and Q is not None:
            R, Q = restart(Q), None
        # Z = bR + cR²
        Z = torch.baddbmm(R, R, R, beta=b, alpha=c)
        # Q ← Q(Z + aI) = QZ + aQ; Z + aI when the segment starts (Q = I).
        Q = Z + a * eye if Q is None else torch.baddbmm(Q, Q, Z, beta=a)
        # R ← (Z + aI) R (Z + aI) as RZ = RZ + aR, R = Z·RZ + a·RZ; not needed after the last
        # step, nor before a restart, which recomputes it.
        if t < last and t + 1 not in restarts:
            RZ = torch.baddbmm(R, R, Z, beta=a)
            R = torch.baddbmm(RZ, Z, RZ, beta=a)
    assert Q is not None  # schedule() guarantees at least one step
    return Q


def gram_polar(X: Tensor, coefficients: tuple[Coefficients, ...], restarts: frozenset[int]) -> Tensor:
    """The quintic iteration on a normalized stack X[B, s, L] with s ≤ L, in X's dtype.

    A square X gets the standard quintic (as Dao-AILab's code does): it has no smaller Gram to
    iterate on, and the Gram form would cost more GEMMs.
    """
    if X.shape[-2] == X.shape[-1]:
        for a, b, c in coefficients:
            A = X @ X.mT
            # B = bA + cA², then X = aX + BX
            B = torch.baddbmm(A, A, A, beta=b, alpha=c)
            X = torch.baddbmm(X, B, X, beta=a)
        return X

    def restart(Q: Tensor) -> Tensor:
        nonlocal X
        X = Q @ X
        return X @ X.mT

    Q = _gram_polynomial(X @ X.mT, coefficients, restarts, restart)
    return Q @ X


def gram_inverse_sqrt(S: Tensor, coefficients: tuple[Coefficients, ...], restarts: frozenset[int]) -> Tensor:
    """S^(-1/2) for a stack of SPD matrices S[B, k, k] (already damped), by the same recursion.

    S plays the role of XXᵀ for an X normalized by its Frobenius norm, ‖X‖_F² = tr(XXᵀ): so
    R₀ = S / tr(S), and X (XᵀX)^(-1/2) built from this equals gram_polar(X) in exact arithmetic,
    which is how EO's RightPolarGradM_GramNS obtains its direction. A restart recomputes the
    Gram of the iterate PX from S: R = P R₀ Pᵀ, with P the product of the finished segments.
    Pᵀ, not P: P is symmetric only up to rounding, and with R = P R₀ P that asymmetry grows
    by about 2× per step once converged (40 steps diverge, in float64 too); with Pᵀ it stays at
    rounding level (60 steps of fp32 at condition 1e3 stay within 7e-3 of eigh).
    """
    trace = S.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None]
    R0 = S / trace.clamp_min(torch.finfo(S.dtype).tiny)
    P: Tensor | None = None

    def restart(Q: Tensor) -> Tensor:
        nonlocal P
        P = Q if P is None else Q @ P
        return P @ R0 @ P.mT

    Q = _gram_polynomial(R0, coefficients, restarts, restart)
    P = Q if P is None else Q @ P
    return P / trace.sqrt()
