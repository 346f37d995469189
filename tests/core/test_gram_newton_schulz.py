"""Gram Newton–Schulz (ALGORITHMS.md 8.5) as a polar and inverse-square-root backend.

EO's numbers are its GramNewtonSchulz configuration (EO:optim/rightpolargrad.py, hybrid.py): the
first `steps` tuples of the 8-step Polar Express list divided by (1.05, 1.05³, 1.05⁵),
X/(‖X‖_F + 1e-7), one restart before the third iteration. The tests write that iteration out
plainly in float64, as ALGORITHMS.md 8.5 states it, and compare.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from symopt_core import build_model, build_optimizer
from symopt_core.linalg import POLAR_EXPRESS_5, inverse_sqrt, polar
from symopt_core.linalg.gram import gram_polar, gram_polar_flops, restart_points
from symopt_core.linalg.polar import _gram_compute_dtype
from symopt_core.linalg.reference_gram import reference_gram_inverse_sqrt, reference_gram_polar
from symopt_core.optim.sharding import polar_flops
from symopt_core.spec import OverrideSpec

from .test_linalg import PUBLISHED_8, geometric, with_spectrum

# ALGORITHMS.md 8.5: EO passes the 8-step list with safety s = 1.05 (tuple 8 unchanged) to GNS.
S = 1.05
EO_LIST = [(a / S, b / S**3, c / S**5) for a, b, c in PUBLISHED_8[:-1]] + [PUBLISHED_8[-1]]


def eo_schedule(steps: int) -> list[tuple[float, float, float]]:
    return EO_LIST[:steps] + [EO_LIST[-1]] * max(0, steps - len(EO_LIST))


def gram_formula(G: torch.Tensor, steps: int = 5, restart_at: tuple[int, ...] = (2,)) -> torch.Tensor:
    """ALGORITHMS.md 8.5 in float64 for one matrix: X ← X/(‖X‖_F + 1e-7) on the wide orientation,
    R₀ = XXᵀ, Q₀ = I; per step Z = bR + cR², Q ← QZ + aQ, RZ = RZ + aR, R ← Z·RZ + a·RZ; at a
    restart X ← QX, R = XXᵀ, Q = I; finally X ← QX."""
    X = G.double()
    tall = X.shape[0] > X.shape[1]
    X = X.T if tall else X
    X = X / (X.norm() + 1e-7)
    identity = torch.eye(X.shape[0], dtype=torch.float64)
    R, Q = X @ X.T, identity
    for t, (a, b, c) in enumerate(eo_schedule(steps)):
        if t in restart_at:
            X = Q @ X
            R, Q = X @ X.T, identity
        Z = b * R + c * R @ R
        Q = Q @ Z + a * Q
        RZ = R @ Z + a * R
        R = Z @ RZ + a * RZ
    X = Q @ X
    return X.T if tall else X


def quintic_formula(G: torch.Tensor, coefficients, scale: float = 1.0, offset: float = 1e-7) -> torch.Tensor:
    """The standard quintic X ← aX + (bA + cA²)X, A = XXᵀ, in float64 (ALGORITHMS.md 8.1 / 8.4)."""
    X = G.double()
    tall = X.shape[0] > X.shape[1]
    X = X.T if tall else X
    X = X / (X.norm() * scale + offset)
    for a, b, c in coefficients:
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if tall else X


def per_matrix(fn, G: torch.Tensor) -> torch.Tensor:
    flat = G.reshape(-1, *G.shape[-2:])
    return torch.stack([fn(g) for g in flat]).reshape(G.shape)


def seeded(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


# Small seeded inputs: wide, tall, a 3-D stack (experts / heads) and a 4-D one, square.
SHAPES = [(16, 64), (64, 16), (4, 16, 64), (2, 3, 24, 40), (32, 32)]
# fp32 iteration against the float64 formula: the largest error on these inputs is 1.8e-5, on the
# near-square 24×40 blocks (entries up to 0.63), whose smallest singular values are the smallest.
FP32_ATOL = 5e-5


@pytest.mark.parametrize("shape", SHAPES)
def test_polar_matches_the_float64_formula(shape):
    G = seeded(*shape)
    expected = per_matrix(gram_formula, G)
    torch.testing.assert_close(polar(G, "gram_newton_schulz"), expected, rtol=0, atol=1e-12)
    fp32 = polar(G.float(), "gram_newton_schulz")
    assert fp32.dtype == torch.float32
    torch.testing.assert_close(fp32.double(), expected, rtol=0, atol=FP32_ATOL)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("steps", [1, 2, 3, 5, 8, 12])
def test_batched_fast_path_matches_the_readable_reference(shape, steps):
    G = seeded(*shape, seed=steps)
    reference = per_matrix(lambda g: reference_gram_polar(g, steps), G)
    torch.testing.assert_close(polar(G, "gram_newton_schulz", steps), reference, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_gram_form_is_the_polar_express_iteration_with_eos_list(shape):
    # ALGORITHMS.md 8.5: "mathematically equivalent to NS": with the same list and normalization
    # the Gram form is the standard quintic, to float64 rounding (1e-12).
    G = seeded(*shape, seed=1)
    standard = per_matrix(lambda g: quintic_formula(g, eo_schedule(5)), G)
    torch.testing.assert_close(polar(G, "gram_newton_schulz"), standard, rtol=0, atol=1e-12)
    fp32 = polar(G.float(), "gram_newton_schulz").double()
    torch.testing.assert_close(fp32, standard, rtol=0, atol=FP32_ATOL)


def test_negative_control_other_coefficient_lists_are_caught():
    # symopt's "polar_express" (the 5-step list, 1.02‖X‖_F + 1e-6) and the list without the
    # safety factor are both Polar Express; each is about 0.065 away, 1000× the fp32 tolerance.
    G = seeded(16, 64, seed=2)
    gram = polar(G, "gram_newton_schulz")
    assert (gram - quintic_formula(G, POLAR_EXPRESS_5, 1.02, 1e-6)).abs().max() > 1e-2
    assert (gram - quintic_formula(G, PUBLISHED_8[:5])).abs().max() > 1e-2
    assert (gram - polar(G, "polar_express")).abs().max() > 1e-2


def test_negative_control_the_restart_keeps_bf16_finite():
    # Without the restart, rounding noise in R's small eigenvalues grows by a_t² per step: on a
    # condition-1e3 input in bf16 the output blows up (error > 1), with it the error stays at
    # the bf16 level of the standard quintic.
    G = with_spectrum(64, 512, geometric(64, 1e3)).unsqueeze(0)
    exact = gram_formula(G[0])
    X = (G / (G.norm() + 1e-7)).bfloat16()
    no_restart = gram_polar(X, tuple(eo_schedule(5)), frozenset()).double()
    restarted = gram_polar(X, tuple(eo_schedule(5)), frozenset({2})).double()
    assert (no_restart[0] - exact).abs().max() > 1.0
    assert (restarted[0] - exact).abs().max() < 0.15
    # 8 steps need more restarts: restart_points puts one before every second iteration.
    assert restart_points(5) == {2}
    assert restart_points(8) == {2, 4, 6}
    exact = gram_formula(G[0], steps=8, restart_at=(2, 4, 6))
    one_restart = gram_polar(X, tuple(eo_schedule(8)), frozenset({2})).double()
    restarted = gram_polar(X, tuple(eo_schedule(8)), restart_points(8)).double()
    assert (one_restart[0] - exact).abs().max() > 1.0
    assert (restarted[0] - exact).abs().max() < 0.15


# ALGORITHMS.md 8.4 states the 5-step Polar Express band [0.859, 1.141] at condition 10. EO's list
# for GNS gives [0.877, 1.123] on the same spectrum (32 geometric singular values; float64), so
# ‖polar_gns(G) - U Vᵀ‖₂ = max |σ' - 1| = 0.123. At condition 1e3 its band is [0.465, 1.122]:
# wider at the bottom than the 5-step list's 0.554, since the 8-step list is not tuned to stop
# at 5 (derived, not in the spec).
@pytest.mark.parametrize(("condition", "low", "high"), [(1e1, 0.877, 1.123), (1e3, 0.465, 1.122)])
@pytest.mark.parametrize("shape", [(32, 96), (96, 32)])
def test_singular_values_and_distance_to_the_exact_polar_factor(condition, low, high, shape):
    G = with_spectrum(*shape, geometric(32, condition))
    P = polar(G.float(), "gram_newton_schulz").double()
    singular = torch.linalg.svdvals(P)[:32]
    assert singular.min().item() == pytest.approx(low, abs=2e-3)
    assert singular.max().item() == pytest.approx(high, abs=2e-3)
    distance = torch.linalg.matrix_norm(P - polar(G, "svd"), ord=2).item()
    assert distance == pytest.approx(max(1 - low, high - 1), abs=2e-3)
    if condition == 1e1:
        # inside the spec's 5-step Polar Express band
        assert low >= 0.859
        assert high <= 1.141


def test_long_runs_converge_to_the_svd_polar_factor():
    G = with_spectrum(40, 120, geometric(40, 100.0))
    torch.testing.assert_close(polar(G, "gram_newton_schulz", steps=12), polar(G, "svd"), rtol=0, atol=1e-10)


def inverse_sqrt_formula(A: torch.Tensor, steps: int = 5, eps: float = 1e-8) -> torch.Tensor:
    """ALGORITHMS.md 8.5 run on a Gram matrix: S = sym(A) + εI plays XXᵀ for X/‖X‖_F, so
    R₀ = S/tr(S); Q accumulates φ_t(R) = aI + bR + cR²; a restart sets P ← QP, R = P R₀ Pᵀ."""
    identity = torch.eye(A.shape[-1], dtype=torch.float64)
    S = (A.double() + A.double().T) / 2 + eps * identity
    R0 = S / torch.trace(S)
    R, P, Q = R0, identity, identity
    for t, (a, b, c) in enumerate(eo_schedule(steps)):
        if t == 2:
            P, Q = Q @ P, identity
            R = P @ R0 @ P.T
        phi = a * identity + b * R + c * R @ R
        Q, R = Q @ phi, phi @ R @ phi
    return Q @ P / torch.trace(S).sqrt()


def test_inverse_sqrt_matches_the_float64_formula_and_the_reference():
    X = seeded(3, 50, 16, seed=3)
    A = X.mT @ X
    expected = per_matrix(inverse_sqrt_formula, A)
    scale = expected.abs().max().item()  # tolerances relative to the largest entry
    torch.testing.assert_close(inverse_sqrt(A, "gram_newton_schulz"), expected, rtol=0, atol=1e-12 * scale)
    # fp32: 1.4e-5 of the largest entry on this input ("polar_express" gets 1.7e-6 here; both
    # reach 1e-4 at condition 1e3).
    fp32 = inverse_sqrt(A.float(), "gram_newton_schulz").double()
    torch.testing.assert_close(fp32, expected, rtol=0, atol=1e-4 * scale)
    for steps in (1, 3, 8, 12):
        reference = per_matrix(lambda a, steps=steps: reference_gram_inverse_sqrt(a, steps), A)
        fast = inverse_sqrt(A, "gram_newton_schulz", steps)
        torch.testing.assert_close(fast, reference, rtol=0, atol=1e-12 * scale)


def test_one_sided_form_equals_the_gram_polar_factor():
    # M (MᵀM)^(-1/2) with this inverse root is EO's RightPolarGradM_GramNS direction (α = 0):
    # equal up to GNS's +1e-7 in the normalization, 1e-7/‖M‖_F ≈ 3e-9 relative here.
    M = seeded(200, 16, seed=4) * 2
    one_sided = M @ inverse_sqrt(M.mT @ M, "gram_newton_schulz", eps=0.0)
    torch.testing.assert_close(one_sided, polar(M, "gram_newton_schulz"), rtol=0, atol=1e-8)


def test_inverse_sqrt_converges_to_eigh_and_differs_from_polar_express_at_five_steps():
    X = with_spectrum(50, 16, geometric(16, 30.0))
    A = X.mT @ X
    exact = inverse_sqrt(A, "eigh", eps=0.0)
    converged = inverse_sqrt(A, "gram_newton_schulz", steps=40, eps=0.0)
    torch.testing.assert_close(converged, exact, rtol=1e-9, atol=0)
    # Long runs stay converged (restarts recompute R = P R₀ Pᵀ), in fp32 too, at condition 1e3.
    X = with_spectrum(50, 16, geometric(16, 1e3))
    A = X.mT @ X
    exact = inverse_sqrt(A, "eigh", eps=0.0)
    long_fp32 = inverse_sqrt(A.float(), "gram_newton_schulz", steps=60, eps=0.0).double()
    assert ((long_fp32 - exact).abs().max() / exact.abs().max()).item() < 1e-2
    # Negative control: "polar_express" runs the same list from 1.02‖A‖_F instead of tr(A); after
    # 5 steps the two are far apart, so the formula test above pins the normalization.
    gram, express = inverse_sqrt(A, "gram_newton_schulz"), inverse_sqrt(A, "polar_express")
    assert ((gram - express).norm() / express.norm()).item() > 1e-2


def test_flop_count_is_what_runs():
    for shape in [(16, 64), (64, 16), (32, 32)]:
        for steps in (1, 2, 5, 8):
            with FlopCounterMode(display=False) as counter:
                polar(torch.randn(3, *shape), "gram_newton_schulz", steps)
            assert counter.get_total_flops() == 3 * gram_polar_flops(*shape, steps)
    # 5 steps on s×L: 8s²L + 28s³ against Polar Express's 20s²L + 10s³.
    assert gram_polar_flops(128, 1024, 5) == 8 * 128**2 * 1024 + 28 * 128**3
    assert polar_flops(128, 1024, 5) == 20 * 128**2 * 1024 + 10 * 128**3


def test_dtypes_zero_input_and_errors():
    G = torch.randn(6, 10)
    assert torch.equal(polar(G, "gram_newton_schulz"), polar(G, "gram_newton_schulz", dtype=torch.float32))
    assert polar(G.bfloat16(), "gram_newton_schulz").dtype == torch.bfloat16
    bf16 = polar(G, "gram_newton_schulz", dtype=torch.bfloat16)
    assert 0 < (bf16 - polar(G, "gram_newton_schulz")).abs().max() < 0.05
    # fp16 on CUDA, as Dao-AILab and EO run it (a device object needs no GPU); fp32 elsewhere.
    assert _gram_compute_dtype(torch.device("cuda"), torch.float32) == torch.float16
    assert _gram_compute_dtype(torch.device("cpu"), torch.bfloat16) == torch.float32
    assert _gram_compute_dtype(torch.device("cuda"), torch.float64) == torch.float64
    assert polar(torch.zeros(2, 8, 5), "gram_newton_schulz").abs().max() == 0
    with pytest.raises(ValueError, match="Invalid number of iteration steps: 0"):
        polar(G, "gram_newton_schulz", steps=0)
    with pytest.raises(ValueError, match="gram_newton_schulz"):
        polar(G, "cholesky")


def test_one_training_step_through_build_optimizer():
    both = {"polar_method": "gram_newton_schulz", "invsqrt_method": "gram_newton_schulz"}
    assert OverrideSpec.model_validate(both).options() == both  # a job spec may name it
    torch.manual_seed(0)
    model = build_model("qwen3", "tiny", vocab_size=65)
    overrides = {
        "all": {"polar_method": "gram_newton_schulz"},
        "embedding": {"rule": "right_spectral", "invsqrt_method": "gram_newton_schulz"},
    }
    optimizer = build_optimizer(model, "symmetric", overrides=overrides)
    methods = {(g["rule"], g["polar_method"], g["invsqrt_method"]) for g in optimizer.param_groups}
    assert ("polar", "gram_newton_schulz", "polar_express") in methods
    assert ("right_spectral", "gram_newton_schulz", "gram_newton_schulz") in methods
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    tokens = torch.randint(0, 65, (2, 17), generator=torch.Generator().manual_seed(0))
    loss = model(tokens[:, :-1], tokens[:, 1:]).loss
    loss.backward()
    optimizer.step()
    for name, p in model.named_parameters():
        assert torch.isfinite(p).all(), name
        assert not torch.equal(p, before[name]), name
    # The option reaches the direction: the same step with Polar Express moves the hidden
    # matrices differently.
    reference = build_model("qwen3", "tiny", vocab_size=65)
    reference.load_state_dict(before)
    reference_optimizer = build_optimizer(reference, "symmetric")
    reference(tokens[:, :-1], tokens[:, 1:]).loss.backward()
    reference_optimizer.step()
    q = next(name for name in before if name.endswith("attn.q.weight"))
    assert not torch.allclose(dict(model.named_parameters())[q], dict(reference.named_parameters())[q])
