"""Random group elements and the action G ↦ A G Bᵀ used by the equivariance tests."""

from __future__ import annotations

import torch
from torch import Tensor


def random_orthogonal(n: int, generator: torch.Generator, dtype: torch.dtype = torch.float64) -> Tensor:
    # QR of a Gaussian matrix with the signs of diag(R) folded in: Haar-distributed.
    Q, R = torch.linalg.qr(torch.randn(n, n, dtype=dtype, generator=generator))
    return Q * torch.sign(torch.diagonal(R)).unsqueeze(0)


def random_permutation(n: int, generator: torch.Generator, dtype: torch.dtype = torch.float64) -> Tensor:
    return torch.eye(n, dtype=dtype)[torch.randperm(n, generator=generator)]


def random_signed_permutation(
    n: int, generator: torch.Generator, dtype: torch.dtype = torch.float64
) -> Tensor:
    signs = torch.randint(0, 2, (n, 1), generator=generator).to(dtype) * 2 - 1
    return signs * random_permutation(n, generator, dtype)


def element(kind: str, n: int, generator: torch.Generator, dtype: torch.dtype = torch.float64) -> Tensor:
    if kind == "orthogonal":
        return random_orthogonal(n, generator, dtype)
    if kind == "permutation":
        return random_permutation(n, generator, dtype)
    if kind == "signed_permutation":
        return random_signed_permutation(n, generator, dtype)
    raise ValueError(f"Invalid group action: {kind!r}")


def act(A: Tensor, G: Tensor, B: Tensor) -> Tensor:
    """A G Bᵀ (A on the rows, B on the columns), batched over leading dimensions of G."""
    return A.to(G.dtype) @ G @ B.to(G.dtype).mT


def relative_error(actual: Tensor, expected: Tensor) -> float:
    scale = expected.abs().max().clamp_min(1e-30)
    return float((actual - expected).abs().max() / scale)
