"""Update directions D(M) of the symmetry-compatible rules, one small pure function each.

Every function takes a stack M[B, m, n] of momentum matrices in their logical (out, in)
orientation (rows are output units: tokens for embeddings, vocabulary for LM heads, neurons for
gate/up, experts for routers) and returns the direction for each matrix; the optimizer applies
lr, shape scale and weight decay. Formulas and sources: ALGORITHMS.md sections 1-9.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..linalg import gram_dtype, inverse_sqrt, nuclear_norm, polar

__all__ = [
    "HYBRID_POLAR_METHODS",
    "DirectionOptions",
    "center_rows",
    "centered_hybrid",
    "centered_one_sided_spectral",
    "centered_row_norm",
    "col_hybrid",
    "col_norm",
    "hybrid",
    "hybrid_polar_then_row",
    "identity",
    "neuron_normalize",
    "one_sided_spectral",
    "polar_direction",
    "row_norm",
]


@dataclass(frozen=True)
class DirectionOptions:
    """Hyperparameters a direction may read; the optimizer builds one per parameter group."""

    alpha: float = 0.0  # PolarGrad exponent: D = ‖M‖_*^α · polar(M); 0 is Muon
    eps: float = 1e-8  # row-norm ε: rownorm(X)_i = X_i / (‖X_i‖ + ε), EO's "inverse_eps"
    polar_method: str = "polar_express"
    polar_steps: int = 5
    polar_dtype: torch.dtype | None = None  # None: bf16 on CUDA, fp32 on CPU
    invsqrt_method: str = "polar_express"
    invsqrt_steps: int = 5
    gram_eps: float = 1e-8  # damping of Gram matrices, relative: they are built from M / ‖M‖_F
    hybrid_polar: str = "invsqrt"  # how the hybrids take polar(X): HYBRID_POLAR_METHODS


# How the hybrid rules take the polar factor of X:
#   "invsqrt": X (XᵀX + εI)^(-1/2) through the Gram's inverse root (invsqrt_method, invsqrt_steps),
#              as ALGORITHMS.md 4 and 8.6 and EO's HybridPolarGradM compute it (the default);
#   "polar":   polar(X, polar_method, polar_steps): the Polar Express quintic by default, or Gram
#              Newton–Schulz as EO's HybridPolarGradM_GramNS training scripts run it.
HYBRID_POLAR_METHODS = ("invsqrt", "polar")

# Inverse roots run to convergence. Only for these may a centered Gram take J = 11ᵀ/m (_gram_polar).
_CONVERGED_ROOTS = frozenset({"polar_express_converged"})


def _at_least_fp32(M: Tensor) -> Tensor:
    return M.to(torch.promote_types(M.dtype, torch.float32))


def identity(M: Tensor, options: DirectionOptions) -> Tensor:
    """D(M) = M: momentum SGD."""
    return M


def _nuclear_scaled(M: Tensor, P: Tensor, alpha: float, eps: float) -> Tensor:
    # ‖M‖_*^α · P with ‖M‖_* = ⟨M, P⟩ (exact when P = polar(M)), clamped as EO does.
    if alpha == 0.0:
        return P
    return nuclear_norm(_at_least_fp32(M), _at_least_fp32(P)).clamp_min(eps).pow(alpha).to(P.dtype) * P


def polar_direction(M: Tensor, options: DirectionOptions) -> Tensor:
    """Rule A: D(M) = ‖M‖_*^α · polar(M); α = 0 is Muon, α = 1 is PolarGrad / spectral descent."""
    P = polar(M, options.polar_method, options.polar_steps, options.polar_dtype)
    return _nuclear_scaled(M, P, options.alpha, options.eps)


def row_norm(M: Tensor, options: DirectionOptions) -> Tensor:
    """Rule B: D(M)_i = M_i / (‖M_i‖ + ε); a zero row stays zero."""
    return M / (torch.linalg.vector_norm(M, dim=-1, keepdim=True) + options.eps)


def col_norm(M: Tensor, options: DirectionOptions) -> Tensor:
    """Column-aware rule (SwiGLU down, whose columns are neurons): D(M) = rownorm(Mᵀ)ᵀ."""
    return M / (torch.linalg.vector_norm(M, dim=-2, keepdim=True) + options.eps)


def center_rows(M: Tensor) -> Tensor:
    """Π M with Π = I - (1/m) 1 1ᵀ: subtract the mean row (removes the shared-shift direction)."""
    return M - M.mean(dim=-2, keepdim=True)


def _unit_frobenius(M: Tensor) -> Tensor:
    # The one-sided rules are scale-invariant for α = 0; normalizing first keeps the Gram
    # eigenvalues in (0, 1], so a relative ε means the same thing for any gradient scale.
    return M / torch.linalg.matrix_norm(M, keepdim=True).clamp_min(1e-30)


def one_sided_spectral(M: Tensor, options: DirectionOptions) -> Tensor:
    """Rule C and its left twin: D(M) = ‖M‖_*^α · M (MᵀM + εI)^(-1/2) = ‖M‖_*^α · (MMᵀ + εI)^(-1/2) M.

    The two forms are the same map for every ε (push-through identity M f(MᵀM) = f(MMᵀ) M), so
    only the smaller Gram matrix is inverted: a V×d embedding touches two GEMMs and a d×d
    inverse root, a wide E×d router an E×E one. Inverting the larger, rank-deficient Gram
    would amplify rounding noise in its null space.
    """
    return _nuclear_scaled(M, _gram_polar(M, options, centered=False), options.alpha, options.eps)


def _gram_polar(M: Tensor, options: DirectionOptions, *, centered: bool) -> Tensor:
    """M (MᵀM + εI)^(-1/2) through the smaller Gram matrix: polar(M) once the root is exact.

    The non-converged iterations (EO's default 5 Polar Express steps) are functions of the
    Gram's spectrum over its normalization, which is the same for M and M / ‖M‖_F and for
    either Gram, so the result is EO's for any scale of M and either form.
    """
    m, n = M.shape[-2:]
    # A centered block's m×m Gram is singular along 1, and the iteration amplifies that
    # direction by Π a_t ≈ 800 in 5 steps: fp32 rounding of 1ᵀN (1e-7) would leave the update
    # 1e-4 off its own equivariance. So that Gram (E×E for a router, cheap) is formed from N
    # re-centered in float64. The map is EO's; only its rounding is smaller.
    null_direction = centered and m <= n
    dtype = torch.float64 if null_direction else gram_dtype(options.invsqrt_method, M.dtype)
    N = _unit_frobenius(M.to(dtype))
    if null_direction:
        N = center_rows(N)
    method, steps, eps = options.invsqrt_method, options.invsqrt_steps, options.gram_eps
    if method == "eigh":
        # The exact reference: with N = U Σ Vᵀ, N (NᵀN + εI)^(-1/2) = U diag(σ / √(σ² + ε)) Vᵀ.
        # Through the SVD of N itself, not the eigendecomposition of its Gram matrix, whose
        # condition number is squared; singular values at rounding level count as zero.
        U, S, Vh = torch.linalg.svd(N, full_matrices=False)
        rounding = S.amax(dim=-1, keepdim=True) * max(m, n) * torch.finfo(S.dtype).eps
        scale = torch.where(S.gt(rounding), S / (S.square() + eps).sqrt(), torch.zeros_like(S))
        return ((U * scale.unsqueeze(-2)) @ Vh).to(M.dtype)
    if m > n or (m == n and not centered):
        P = N @ inverse_sqrt(N.mT @ N, method, steps, eps)
    else:
        gram = N @ N.mT
        if centered and method in _CONVERGED_ROOTS:
            # N has no component along 1, so for a converged root adding J = 11ᵀ/m (eigenvalue
            # 1 along 1) changes nothing in (C + J)^(-1/2) N, and removes the null direction,
            # which 40 steps would amplify by ε^(-1/2). Not for a truncated root (EO's 5
            # steps): its result depends on the spectrum through the normalization by
            # ‖C + εI‖_F, which J makes 2-5x larger, 14-19% off EO's update.
            gram = gram + 1.0 / m
        P = inverse_sqrt(gram, method, steps, eps) @ N
    return P.to(M.dtype)


def _hybrid_polar(X: Tensor, options: DirectionOptions, *, centered: bool = False) -> Tensor:
    """polar(X) as the hybrids take it, per `options.hybrid_polar` (HYBRID_POLAR_METHODS)."""
    if options.hybrid_polar == "invsqrt":
        return _gram_polar(X, options, centered=centered)
    if options.hybrid_polar == "polar":
        return polar(X, options.polar_method, options.polar_steps, options.polar_dtype)
    raise ValueError(
        f"Invalid hybrid_polar: {options.hybrid_polar!r}; valid values: {', '.join(HYBRID_POLAR_METHODS)}"
    )


def _stack_scaled(X: Tensor, P: Tensor, alpha: float, eps: float) -> Tensor:
    # ν^α · P with one ν = Σ_b ⟨X_b, P_b⟩ for the whole stack: EO's hybrids take one nuclear
    # scalar per parameter tensor, coupling the experts of a stack (ALGORITHMS.md 4). So X must
    # be one tensor's matrices (SymOpt calls them so: Rule.couples_stack), summed in fp32+.
    if alpha == 0.0:
        return P
    nu = torch.sum(_at_least_fp32(X) * _at_least_fp32(P))
    return nu.clamp_min(eps).pow(alpha).to(P.dtype) * P


def hybrid(M: Tensor, options: DirectionOptions) -> Tensor:
    """Rule D, row_then_polar: X = rownorm(M), D = ν^α · polar(X) with ν = Σ ‖X_b‖_* over the stack.

    M[B, m, n] is one parameter tensor's matrices (its experts, or fused halves): the nuclear
    scalar is summed over all of them, as EO does. polar(X) = X (XᵀX + εI)^(-1/2) by default.
    """
    X = row_norm(M, options)
    return _stack_scaled(X, _hybrid_polar(X, options), options.alpha, options.eps)


def hybrid_polar_then_row(M: Tensor, options: DirectionOptions) -> Tensor:
    """Rule D, polar_then_row: D = rownorm(ν^α · polar(M)), ν = Σ ‖M_b‖_* over the stack.

    The scalar cancels but for the row-norm's ε; it is kept so the map is EO's to rounding.
    """
    return row_norm(_stack_scaled(M, _hybrid_polar(M, options), options.alpha, options.eps), options)


def col_hybrid(M: Tensor, options: DirectionOptions) -> Tensor:
    """Column-aware hybrid (SwiGLU down): polar(rownorm(Mᵀ))ᵀ = polar(colnorm(M)), times ν^α.

    The same map as `hybrid` on Mᵀ (the polar through the Gram commutes with transposition).
    """
    X = col_norm(M, options)
    return _stack_scaled(X, _hybrid_polar(X, options), options.alpha, options.eps)


def centered_row_norm(M: Tensor, options: DirectionOptions) -> Tensor:
    """LM head / router: D = Π rownorm(Π M). Shift-invariant and horizontal (1ᵀD = 0)."""
    return center_rows(row_norm(center_rows(M), options))


def centered_one_sided_spectral(M: Tensor, options: DirectionOptions) -> Tensor:
    """LM head (EO's centered right) and router (EO's centered left), one map:
    D = Π(‖M_c‖_*^α (M_c M_cᵀ + εI)^(-1/2) M_c) with M_c = ΠM, equal to polar(ΠM) for α = 0 and
    ε -> 0. M_c has rank ≤ m - 1 (its Gram is singular along 1); the outer Π removes the leakage.
    """
    M_c = center_rows(M)
    P = _gram_polar(M_c, options, centered=True)
    return center_rows(_nuclear_scaled(M_c, P, options.alpha, options.eps))


def centered_hybrid(M: Tensor, options: DirectionOptions) -> Tensor:
    """LM head / router: X = Π rownorm(Π M), D = Π(ν^α polar(X)), ν summed over the stack."""
    X = centered_row_norm(M, options)
    P = _hybrid_polar(X, options, centered=True)
    return center_rows(_stack_scaled(X, P, options.alpha, options.eps))


def neuron_normalize(D: Tensor, second_moment: Tensor, beta2: float, eps: float) -> Tensor:
    """NorMuon: divide each row by the root of an EMA of its mean square, keeping ‖D‖_F.

    v <- β₂ v + (1 - β₂) mean_cols(D ⊙ D);  D̂ = D / (√v + ε);  D̂ <- D̂ · ‖D‖_F / ‖D̂‖_F.
    `second_moment` ([B, m, 1], fp32) is updated in place.
    """
    D32 = _at_least_fp32(D)
    second_moment.lerp_(D32.square().mean(dim=-1, keepdim=True), 1 - beta2)
    normalized = D32 / (second_moment.sqrt() + eps)
    ratio = torch.linalg.matrix_norm(D32, keepdim=True) / torch.linalg.matrix_norm(
        normalized, keepdim=True
    ).clamp_min(1e-30)
    return (normalized * ratio).to(D.dtype)
