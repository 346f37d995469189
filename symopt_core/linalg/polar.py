"""Batched polar factor polar(X) = U Vᵀ (X = U Σ Vᵀ), ALGORITHMS.md sections 1 and 8.

Every function takes a stack of matrices [..., m, n] and treats the leading dimensions as a
batch, so expert stacks, attention heads and groups of same-shape matrices go through one call.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from .coefficients import (
    GRAM_NEWTON_SCHULZ,
    NEWTON_SCHULZ_QUINTIC,
    POLAR_EXPRESS_5,
    POLAR_EXPRESS_8,
    Coefficients,
    schedule,
)
from .gram import gram_polar, restart_points

__all__ = ["POLAR_METHODS", "PolarMethod", "default_compute_dtype", "nuclear_norm", "polar"]

PolarMethod = Literal["newton_schulz", "polar_express", "gram_newton_schulz", "svd"]
POLAR_METHODS: tuple[str, ...] = get_args(PolarMethod)


def default_compute_dtype(device: torch.device, dtype: torch.dtype = torch.float32) -> torch.dtype:
    """bf16 on CUDA (tensor cores), fp32 elsewhere (bf16 matmuls are slow and coarse on CPU);
    float64 inputs (references, tests) keep float64."""
    if dtype == torch.float64:
        return dtype
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def polar(
    G: Tensor,
    method: str = "polar_express",
    steps: int = 5,
    dtype: torch.dtype | None = None,
    eps: float = 1e-7,
) -> Tensor:
    """Polar factor of each matrix in G[..., m, n], returned in G's dtype.

    method:
      - "newton_schulz": Keller Jordan's quintic (3.4445, -4.7750, 2.0315) for `steps` steps;
        singular values land in roughly [0.7, 1.13] for well-conditioned inputs, not exactly 1.
      - "polar_express": the published 5-step list when steps == 5, else the 8-step list (safety
        1.01) truncated, or extended by its last tuple.
      - "gram_newton_schulz": Dao-AILab's Gram Newton–Schulz as EO runs it (RightPolarGradM_GramNS,
        HybridPolarGradM_GramNS): the quintic on the smaller Gram matrix with the 8-step list at
        safety 1.05 (truncated, or extended by its last tuple), X/(‖X‖_F + eps), a restart before
        iteration 2 (and 4, 6, ... past 5 steps; gram.py). Every non-square matrix takes the
        Gram form, whatever its size (Dao-AILab's 256 threshold picks CuTe kernels, not the
        algorithm); a square one takes the standard quintic with the same list. On CUDA it runs
        in fp16 by default, as Dao-AILab and EO do: its error is 5-10× smaller than in bf16, and
        nothing can overflow (after the normalization ‖R‖₂ < 1.3, ‖Q‖₂ ≤ Π a_t < 31 per segment).
      - "svd": exact U Vᵀ restricted to the nonzero singular values (the reference; float64
        unless `dtype` says otherwise).
    dtype: the dtype the iteration runs in; default bf16 on CUDA (fp16 for
    "gram_newton_schulz"), fp32 on CPU.
    """
    if method not in POLAR_METHODS:
        raise ValueError(f"Invalid polar method: {method!r}; valid methods: {', '.join(POLAR_METHODS)}")
    if G.ndim < 2:
        raise ValueError(f"Invalid input for polar: need [..., m, n], got shape {tuple(G.shape)}")
    if method == "svd":
        return _polar_svd(G, dtype or torch.float64).to(G.dtype)
    if method == "gram_newton_schulz":
        compute_dtype = dtype or _gram_compute_dtype(G.device, G.dtype)
        return _polar_gram(G, schedule(GRAM_NEWTON_SCHULZ, steps), compute_dtype, eps).to(G.dtype)
    if method == "newton_schulz":
        coefficients = schedule((NEWTON_SCHULZ_QUINTIC,), steps)
        scale, floor = 1.0, eps
    elif steps == len(POLAR_EXPRESS_5):
        coefficients, scale, floor = POLAR_EXPRESS_5, 1.02, 1e-6
    else:
        coefficients, scale, floor = schedule(POLAR_EXPRESS_8, steps), 1.01, eps
    compute_dtype = dtype or default_compute_dtype(G.device, G.dtype)
    return _polar_quintic(G, coefficients, compute_dtype, scale, floor).to(G.dtype)


def _polar_quintic(
    G: Tensor, coefficients: tuple[Coefficients, ...], dtype: torch.dtype, scale: float, floor: float
) -> Tensor:
    *batch, m, n = G.shape
    X = G.reshape(-1, m, n).to(dtype)
    # Iterate on the wide orientation so the Gram matrix XXᵀ is the small one; polar(Xᵀ) = polar(X)ᵀ.
    tall = m > n
    if tall:
        X = X.mT
    norm = torch.linalg.matrix_norm(X, keepdim=True)
    X = X / norm.clamp(min=floor) if scale == 1.0 else X / (norm * scale + floor)
    for a, b, c in coefficients:
        A = X @ X.mT
        # B = bA + cA², then X = aX + BX: two fused multiply-adds per step.
        B = torch.baddbmm(A, A, A, beta=b, alpha=c)
        X = torch.baddbmm(X, B, X, beta=a)
    if tall:
        X = X.mT
    return X.reshape(*batch, m, n)


def _gram_compute_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    default = default_compute_dtype(device, dtype)
    return torch.float16 if default == torch.bfloat16 else default


def _polar_gram(G: Tensor, coefficients: tuple[Coefficients, ...], dtype: torch.dtype, eps: float) -> Tensor:
    *batch, m, n = G.shape
    X = G.reshape(-1, m, n)
    # The Gram form iterates on the smaller side: XXᵀ of the wide orientation.
    tall = m > n
    if tall:
        X = X.mT
    # Normalize in at least fp32 before the cast, so that any gradient scale fits in fp16.
    X = X.to(torch.promote_types(X.dtype, torch.float32))
    X = (X / (torch.linalg.matrix_norm(X, keepdim=True) + eps)).to(dtype)
    X = gram_polar(X, coefficients, restart_points(len(coefficients)))
    if tall:
        X = X.mT
    return X.reshape(*batch, m, n)


def _polar_svd(G: Tensor, dtype: torch.dtype) -> Tensor:
    U, S, Vh = torch.linalg.svd(G.to(dtype), full_matrices=False)
    # Drop singular values at rounding level, so rank-deficient inputs (centered blocks) get the
    # polar factor of their range, not an arbitrary completion.
    m, n = G.shape[-2:]
    tolerance = S.amax(dim=-1, keepdim=True) * max(m, n) * torch.finfo(dtype).eps
    keep = (tolerance < S).to(dtype)
    return (U * keep.unsqueeze(-2)) @ Vh


def nuclear_norm(M: Tensor, P: Tensor) -> Tensor:
    """⟨M, P⟩ per matrix: equals ‖M‖_* when P = polar(M), as EO computes the PolarGrad scale."""
    return (M * P).sum(dim=(-2, -1), keepdim=True)
