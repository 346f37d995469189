"""Orthogonalization and inverse square roots against exact references (ALGORITHMS.md 8)."""

from __future__ import annotations

import pytest
import torch

from symopt_core.linalg import (
    NEWTON_SCHULZ_QUINTIC,
    POLAR_EXPRESS_5,
    POLAR_EXPRESS_8_UNSAFE,
    default_compute_dtype,
    inverse_sqrt,
    polar,
)
from symopt_core.linalg.coefficients import POLAR_EXPRESS_8, POLAR_EXPRESS_8_INVSQRT, schedule


def with_spectrum(m: int, n: int, singular_values: torch.Tensor, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    k = singular_values.numel()
    U, _ = torch.linalg.qr(torch.randn(m, k, dtype=torch.float64, generator=generator))
    V, _ = torch.linalg.qr(torch.randn(n, k, dtype=torch.float64, generator=generator))
    return (U * singular_values) @ V.mT


def geometric(count: int, condition: float) -> torch.Tensor:
    return torch.logspace(0, -torch.log10(torch.tensor(condition)).item(), count, dtype=torch.float64)


# ALGORITHMS.md 8.1 / 8.4 and Appendix A: singular values of the output after 5 steps, for 32
# singular values spaced geometrically at the given condition number (the reported ranges are
# reproduced exactly by that spectrum).
REPORTED_RANGES = [
    ("newton_schulz", 1e1, 0.687, 1.133),
    ("newton_schulz", 1e3, 0.288, 1.195),
    ("newton_schulz", 1e5, 0.004, 1.201),
    ("polar_express", 1e1, 0.859, 1.141),
    ("polar_express", 1e3, 0.554, 1.139),
]


@pytest.mark.parametrize(("method", "condition", "low", "high"), REPORTED_RANGES)
@pytest.mark.parametrize("shape", [(32, 32), (32, 96), (96, 32)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_singular_values_land_in_reported_ranges(method, condition, low, high, shape, dtype):
    G = with_spectrum(*shape, geometric(32, condition))
    singular = torch.linalg.svdvals(polar(G, method, steps=5, dtype=dtype).double())
    top = singular[:32]  # the remaining singular values of a rectangular output are 0
    assert top.min().item() == pytest.approx(low, abs=2e-3)
    assert top.max().item() == pytest.approx(high, abs=2e-3)


@pytest.mark.parametrize("method", ["newton_schulz", "polar_express", "svd"])
def test_batched_polar_equals_per_matrix(method):
    G = torch.randn(3, 4, 24, 40, dtype=torch.float64)
    batched = polar(G, method, dtype=torch.float64)
    one_by_one = torch.stack([torch.stack([polar(g, method, dtype=torch.float64) for g in row]) for row in G])
    torch.testing.assert_close(batched, one_by_one, rtol=0, atol=1e-12)


def test_svd_polar_is_orthogonal_and_handles_rank_deficiency():
    G = with_spectrum(20, 12, torch.tensor([3.0, 1.0, 1e-3, 0.0, 0.0], dtype=torch.float64)[:3])
    P = polar(G, "svd")
    singular = torch.linalg.svdvals(P)
    torch.testing.assert_close(singular[:3], torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-12)
    assert singular[3:].abs().max() < 1e-12
    # polar(X) is the nearest semi-orthogonal factor: X = polar(X) · (XᵀX)^(1/2)
    torch.testing.assert_close(P @ (P.mT @ G), G, rtol=0, atol=1e-12)


def test_long_polar_express_converges_to_svd():
    G = with_spectrum(40, 30, geometric(30, 100.0))
    torch.testing.assert_close(
        polar(G, "polar_express", steps=12, dtype=torch.float64), polar(G, "svd"), rtol=0, atol=1e-10
    )


def test_zero_matrix_stays_zero():
    Z = torch.zeros(2, 8, 5)
    for method in ("newton_schulz", "polar_express", "svd"):
        assert polar(Z, method).abs().max() == 0


# ALGORITHMS.md 8.4, copied verbatim: the 5-step list (safety factor applied) and the 8-step
# "unmodified" list (before the safety factor).
PUBLISHED_5 = [
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
]
PUBLISHED_8 = [
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
]


def test_coefficient_lists_are_the_published_ones():
    assert list(POLAR_EXPRESS_5) == PUBLISHED_5  # every tuple, exactly (float equality)
    assert list(POLAR_EXPRESS_8_UNSAFE) == PUBLISHED_8
    assert NEWTON_SCHULZ_QUINTIC == (3.4445, -4.7750, 2.0315)
    # The safety factor s divides (a, b, c) by (s, s³, s⁵), for every tuple but the last.
    for safe, unsafe_list, s in (
        (POLAR_EXPRESS_8, PUBLISHED_8, 1.01),
        (POLAR_EXPRESS_8_INVSQRT, PUBLISHED_8, 1.05),
    ):
        for (a, b, c), (a0, b0, c0) in zip(safe[:-1], unsafe_list[:-1], strict=True):
            assert (a, b, c) == (a0 / s, b0 / s**3, c0 / s**5)
        assert safe[-1] == (1.875, -1.25, 0.375)
    assert schedule(POLAR_EXPRESS_8, 10)[-3:] == ((1.875, -1.25, 0.375),) * 3
    assert schedule(POLAR_EXPRESS_5, 3) == POLAR_EXPRESS_5[:3]


def test_default_compute_dtype_is_bf16_on_cuda_and_fp32_elsewhere():
    # The function reads only the device's type, so a CUDA device object needs no GPU.
    assert default_compute_dtype(torch.device("cpu")) == torch.float32
    assert default_compute_dtype(torch.device("cpu"), torch.bfloat16) == torch.float32
    assert default_compute_dtype(torch.device("cuda")) == torch.bfloat16
    assert default_compute_dtype(torch.device("cuda", 1), torch.float16) == torch.bfloat16
    assert default_compute_dtype(torch.device("cuda"), torch.float64) == torch.float64  # references
    assert default_compute_dtype(torch.device("meta")) == torch.float32


def test_polar_iterates_in_fp32_on_cpu_by_default():
    G = torch.randn(6, 10)
    default = polar(G, "newton_schulz")
    assert torch.equal(default, polar(G, "newton_schulz", dtype=torch.float32))
    assert not torch.equal(default, polar(G, "newton_schulz", dtype=torch.bfloat16))
    assert polar(G.bfloat16(), "polar_express").dtype == torch.bfloat16  # returned in G's dtype


@pytest.mark.parametrize(
    ("method", "steps"), [("polar_express_converged", 5), ("newton_schulz", 40), ("eigh", 1)]
)
def test_inverse_sqrt_matches_eigh_reference(method, steps):
    X = with_spectrum(50, 16, geometric(16, 30.0))
    A = torch.stack([X.mT @ X, 2.5 * (X.mT @ X)])
    exact = inverse_sqrt(A, "eigh", eps=0.0)
    result = inverse_sqrt(A, method, steps=steps, eps=0.0)
    torch.testing.assert_close(result, exact, rtol=1e-9, atol=0)
    # and it is what the one-sided rules need: X (XᵀX)^(-1/2) = polar(X)
    torch.testing.assert_close(X @ result[0], polar(X, "svd"), rtol=0, atol=1e-10)


def test_five_step_polar_express_inverse_sqrt_is_not_converged():
    # EO's default (5 iterations) is kept for parity, and it is visibly approximate.
    A = torch.diag(torch.tensor([1e-3, 0.2, 0.3, 0.5], dtype=torch.float64))
    error = (inverse_sqrt(A, "polar_express", steps=5, eps=0.0) - A.rsqrt().nan_to_num(posinf=0)).abs()
    assert error.max() > 1.0


def test_converged_inverse_sqrt_survives_rank_deficient_fp32_gram():
    # A centered router Gram formed in fp32 has a zero eigenvalue that rounds negative.
    torch.manual_seed(0)
    M = torch.randn(4, 32) * 1e-3
    N = M - M.mean(0)
    N = N / N.norm()
    result = inverse_sqrt((N.double() @ N.double().mT), "polar_express_converged", eps=1e-8)
    assert torch.isfinite(result).all()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: polar(torch.randn(3, 3), "qr"), "Invalid polar method: 'qr'"),
        (lambda: polar(torch.randn(3), "svd"), "need \\[..., m, n\\]"),
        (lambda: polar(torch.randn(3, 3), "newton_schulz", steps=0), "Invalid number of iteration steps: 0"),
        (lambda: inverse_sqrt(torch.randn(3, 4)), "need \\[..., k, k\\]"),
        (lambda: inverse_sqrt(torch.eye(3), "cholesky"), "Invalid inverse-square-root method: 'cholesky'"),
    ],
)
def test_bad_arguments_name_the_bad_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()
