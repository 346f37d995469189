"""Every rule is equivariant under the group it declares (ALGORITHMS.md 0.3), and only that.

One parametrized property test over the registry: for random shapes and inputs (hypothesis),
D(A G Bᵀ) = A D(G) Bᵀ for A, B drawn from the rule's row and column actions; centered rules are
also shift-invariant, D(G + 1vᵀ) = D(G), and horizontal, 1ᵀD(G) = 0. Exact backends (SVD, eigh)
in float64 hold to 1e-10, the iterative ones (Newton–Schulz, Polar Express) in fp32 to 1e-4.
Negative controls check that each rule breaks what it declares it breaks.

The iterative profiles draw inputs with singular values in [0.2, 1]: the one-sided rules invert
a Gram matrix, which squares the condition number, and fp32 rounding of an ill-conditioned
Gram is amplified accordingly (that is accuracy, not equivariance; the exact profile covers
Gaussian inputs of any conditioning).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from symopt_core.linalg import polar
from symopt_core.optim import RULES
from symopt_core.optim.directions import DirectionOptions, center_rows, centered_one_sided_spectral
from symopt_core.optim.rules import Rule

from .group_actions import act, element, random_orthogonal, relative_error


def well_conditioned(m: int, n: int, generator: torch.Generator, *, centered: bool = False) -> torch.Tensor:
    """Singular values in [0.2, 1]; with centered=True, those of ΠG, plus a random shift 1vᵀ."""
    if centered:
        # An orthonormal basis of 1^⊥ spans the left factor, so ΠG keeps the chosen spectrum.
        ones = torch.ones(m, 1, dtype=torch.float64) / m**0.5
        basis = torch.linalg.qr(
            torch.cat([ones, torch.randn(m, m - 1, dtype=torch.float64, generator=generator)], dim=1)
        )[0][:, 1:]
        k = min(m - 1, n)
        U = basis @ random_orthogonal(m - 1, generator)[:, :k]
        shift = torch.randn(1, n, dtype=torch.float64, generator=generator)
    else:
        k = min(m, n)
        U = random_orthogonal(m, generator)[:, :k]
        shift = torch.zeros(1, n, dtype=torch.float64)
    V = random_orthogonal(n, generator)[:, :k]
    singular = 0.2 + 0.8 * torch.rand(k, dtype=torch.float64, generator=generator)
    return (U * singular) @ V.mT + shift


MATRIX_RULES = [rule for rule in RULES.values() if rule.direction is not None]

EXACT = DirectionOptions(polar_method="svd", polar_dtype=torch.float64, invsqrt_method="eigh", gram_eps=0.0)
ITERATIVE = {
    "newton_schulz": DirectionOptions(polar_method="newton_schulz", polar_dtype=torch.float32),
    "polar_express": DirectionOptions(
        polar_method="polar_express", polar_dtype=torch.float32, invsqrt_method="polar_express"
    ),
}
PROFILES = [
    ("exact", EXACT, torch.float64, 1e-10),
    *((name, o, torch.float32, 1e-4) for name, o in ITERATIVE.items()),
]


def direction(rule: Rule, G: torch.Tensor, options: DirectionOptions) -> torch.Tensor:
    assert rule.direction is not None
    return rule.direction(G.unsqueeze(0), options)[0]


shapes = st.tuples(st.integers(2, 9), st.integers(2, 9))


@pytest.mark.parametrize("rule", MATRIX_RULES, ids=lambda r: r.name)
@pytest.mark.parametrize(("profile", "options", "dtype", "tolerance"), PROFILES, ids=[p[0] for p in PROFILES])
@pytest.mark.parametrize("alpha", [0.0, 1.0])
@settings(max_examples=15, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**31 - 1))
def test_rule_is_equivariant_under_its_group(rule, profile, options, dtype, tolerance, alpha, shape, seed):
    generator = torch.Generator().manual_seed(seed)
    m, n = shape
    options = DirectionOptions(**{**options.__dict__, "alpha": alpha})
    if profile == "exact":
        G = torch.randn(m, n, dtype=torch.float64, generator=generator)
    else:
        G = well_conditioned(m, n, generator, centered=rule.symmetry.shift)
    A = element(rule.symmetry.rows, m, generator)
    B = element(rule.symmetry.cols, n, generator)
    base = direction(rule, G.to(dtype), options).double()
    moved = direction(rule, act(A, G, B).to(dtype), options).double()
    assert relative_error(moved, act(A, base, B)) < tolerance, f"{rule.name}: {rule.symmetry}"
    if rule.symmetry.shift:
        v = torch.randn(n, dtype=torch.float64, generator=generator)
        shifted = direction(rule, (G + v).to(dtype), options).double()
        assert relative_error(shifted, base) < tolerance, f"{rule.name} is not shift-invariant"
        assert base.sum(dim=0).abs().max() < tolerance * base.abs().max(), f"{rule.name} is not horizontal"


def broken_property_error(rule: Rule, prop: str, seed: int) -> float:
    generator = torch.Generator().manual_seed(seed)
    m, n = 7, 5
    G = torch.randn(m, n, dtype=torch.float64, generator=generator)
    base = direction(rule, G, EXACT)
    if prop == "shift":
        v = 3 * torch.randn(n, dtype=torch.float64, generator=generator)
        return relative_error(direction(rule, G + v, EXACT), base)
    I_m, I_n = torch.eye(m, dtype=torch.float64), torch.eye(n, dtype=torch.float64)
    A = random_orthogonal(m, generator) if prop == "rows_orthogonal" else I_m
    B = random_orthogonal(n, generator) if prop == "cols_orthogonal" else I_n
    return relative_error(direction(rule, act(A, G, B), EXACT), act(A, base, B))


# NorMuon's direction is the polar factor; what breaks O(m) is its stateful row normalization,
# checked over a trajectory in test_optimizer_trajectories.py.
NEGATIVE_CONTROLS = [
    (rule, prop) for rule in MATRIX_RULES if not rule.neuron_norm for prop in rule.symmetry.breaks
]


@pytest.mark.parametrize(
    ("rule", "prop"), NEGATIVE_CONTROLS, ids=[f"{r.name}-{p}" for r, p in NEGATIVE_CONTROLS]
)
def test_rule_breaks_what_it_declares_it_breaks(rule, prop):
    errors = [broken_property_error(rule, prop, seed) for seed in range(3)]
    assert min(errors) > 0.01, f"{rule.name} unexpectedly has {prop} ({errors})"


def test_every_rule_declares_a_group_and_negative_controls_exist():
    assert {r.name for r in MATRIX_RULES} >= {
        "polar",
        "row_norm",
        "right_spectral",
        "hybrid",
        "centered_row_norm",
        "centered_left_spectral",
        "col_norm",
        "normuon",
    }
    for rule in RULES.values():
        assert str(rule.symmetry)
    assert RULES["row_norm"].symmetry.breaks == ("rows_orthogonal", "shift")


# Identities of ALGORITHMS.md Appendix A beyond the group actions.


def test_one_sided_spectral_equals_polar_for_full_column_rank():
    G = torch.randn(40, 12, dtype=torch.float64)
    torch.testing.assert_close(
        direction(RULES["right_spectral"], G, EXACT), polar(G, "svd"), rtol=0, atol=1e-12
    )


def test_centered_left_spectral_equals_polar_of_centered_block():
    G = torch.randn(6, 30, dtype=torch.float64)
    expected = polar(center_rows(G), "svd")
    torch.testing.assert_close(
        centered_one_sided_spectral(G.unsqueeze(0), EXACT)[0], expected, rtol=0, atol=1e-12
    )


def test_nuclear_scaling_is_the_nuclear_norm():
    G = torch.randn(9, 6, dtype=torch.float64)
    options = DirectionOptions(**{**EXACT.__dict__, "alpha": 1.0})
    D = direction(RULES["polar"], G, options)
    nuclear = torch.linalg.matrix_norm(G, ord="nuc")
    torch.testing.assert_close(D, nuclear * polar(G, "svd"), rtol=1e-12, atol=0)


def test_row_norm_rows_have_unit_norm_and_zero_rows_stay_zero():
    G = torch.randn(5, 8, dtype=torch.float64)
    G[2] = 0
    D = direction(RULES["row_norm"], G, EXACT)
    norms = D.norm(dim=1)
    torch.testing.assert_close(
        norms[[0, 1, 3, 4]], G.norm(dim=1)[[0, 1, 3, 4]] / (G.norm(dim=1)[[0, 1, 3, 4]] + 1e-8)
    )
    assert norms[2] == 0


def test_hybrid_magnitude_grows_with_rank_when_alpha_is_one():
    # ALGORITHMS.md 4, magnitude warning: RMS of ‖X‖_* polar(X) for unit-row X (2000 × 64).
    generator = torch.Generator().manual_seed(0)
    options = DirectionOptions(**{**EXACT.__dict__, "alpha": 1.0})
    for rank, expected in ((1, 0.125), (4, 0.50), (16, 1.94), (64, 6.8)):
        X = torch.randn(2000, rank, dtype=torch.float64, generator=generator) @ torch.randn(
            rank, 64, dtype=torch.float64, generator=generator
        )
        rms = direction(RULES["hybrid"], X, options).pow(2).mean().sqrt().item()
        assert rms == pytest.approx(expected, rel=0.05)
