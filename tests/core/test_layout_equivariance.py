"""Equivariance through SymOpt's real layouts (ALGORITHMS.md 0.3, 1 and 6).

The group acts on the stored tensor as a model would see it (heads of q/k/v/o, expert stacks,
fused gate/up in OLMoE's concatenated and gpt-oss's interleaved, transposed storage); SymOpt
runs a trajectory (momentum, Nesterov, weight decay) on W and on g·W with g·G_t, and the
parameter's displacement and its momentum buffer must transform by g. The actions are written
here with plain indexing, independently of symopt_core.optim.layout. Exact backends, float64,
1e-10. Negative controls: a rotation mixing heads breaks the head-wise layout (not the whole
matrix), independent gate and up permutations break the paired rules.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from symopt_core import SymOpt
from symopt_core.optim import RULES

from .group_actions import element, random_orthogonal, random_permutation, relative_error

Action = Callable[[Tensor], Tensor]
EXACT = {"polar_method": "svd", "polar_dtype": "float64", "invsqrt_method": "eigh"}
MATRIX_RULES = [name for name, rule in RULES.items() if not rule.elementwise]
BI_ORTHOGONAL = [
    name for name in MATRIX_RULES if RULES[name].symmetry.rows == RULES[name].symmetry.cols == "orthogonal"
]
# Rules with O(d) on the input side: what a fused gate/up stack needs (S_r × O(d) per expert).
INPUT_ORTHOGONAL = [name for name in MATRIX_RULES if RULES[name].symmetry.cols == "orthogonal"]
PAIRED = [name for name in MATRIX_RULES if RULES[name].view == "paired"]


def run(rule: str, layout: str, W: Tensor, grads: list[Tensor], alpha: float = 0.0) -> tuple[Tensor, Tensor]:
    """(W_k - W, momentum buffer) after SymOpt steps `rule` in `layout` through `grads`."""
    p = torch.nn.Parameter(W.clone())
    group = {"params": [p], "rule": rule, "layout": layout}
    optimizer = SymOpt([group], lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1, alpha=alpha, **EXACT)
    for grad in grads:
        p.grad = grad.clone()
        optimizer.step()
    return p.detach() - W, optimizer.state[p]["momentum_buffer"]


def check(rule: str, layout: str, g: Action, shape: tuple[int, ...], seed: int, alpha: float = 0.0) -> float:
    """The worst relative error of update and momentum under g over a 3-step trajectory."""
    generator = torch.Generator().manual_seed(seed)
    W = torch.randn(shape, dtype=torch.float64, generator=generator)
    grads = [torch.randn(shape, dtype=torch.float64, generator=generator) for _ in range(3)]
    delta, buffer = run(rule, layout, W, grads, alpha)
    moved_delta, moved_buffer = run(rule, layout, g(W), [g(grad) for grad in grads], alpha)
    return max(relative_error(moved_delta, g(delta)), relative_error(moved_buffer, g(buffer)))


# -- (a) head-wise attention: head permutations × per-head O(head_dim) × O(d) ------------------


def heads_action(heads: int, head_dim: int, d: int, generator: torch.Generator, *, rows: bool) -> Action:
    # q/k/v [H·hd, d]: head h of g·W is Q_h · (head π(h) of W) · Rᵀ. o [d, H·hd]: the same on columns.
    perm = torch.randperm(heads, generator=generator)
    Q = torch.stack([random_orthogonal(head_dim, generator) for _ in range(heads)])
    R = random_orthogonal(d, generator)

    def act(X: Tensor) -> Tensor:
        if rows:
            blocks = X.reshape(heads, head_dim, d)[perm]
            return (Q @ blocks @ R.mT).reshape(heads * head_dim, d)
        blocks = X.reshape(d, heads, head_dim).permute(1, 0, 2)[perm]  # [H, d, hd]
        return (R @ blocks @ Q.mT).permute(1, 0, 2).reshape(d, heads * head_dim)

    return act


heads_shapes = st.tuples(st.integers(1, 4), st.integers(2, 4), st.integers(2, 7))


@pytest.mark.parametrize("rule", BI_ORTHOGONAL)
@pytest.mark.parametrize("kind", ["heads_rows", "heads_cols"])
@pytest.mark.parametrize("alpha", [0.0, 1.0])
@settings(max_examples=10, deadline=None)
@given(dims=heads_shapes, seed=st.integers(0, 2**31 - 1))
def test_head_wise_layout_is_equivariant_under_heads_and_rotations(rule, kind, alpha, dims, seed):
    heads, head_dim, d = dims
    generator = torch.Generator().manual_seed(seed)
    g = heads_action(heads, head_dim, d, generator, rows=kind == "heads_rows")
    shape = (heads * head_dim, d) if kind == "heads_rows" else (d, heads * head_dim)
    assert check(rule, f"{kind}.{head_dim}", g, shape, seed, alpha) < 1e-10


@pytest.mark.parametrize("kind", ["heads_rows", "heads_cols"])
def test_a_rotation_mixing_heads_breaks_the_head_wise_layout_only(kind):
    # U ∈ O(H·hd) on the head side mixes heads: not in the head-wise group, but in the group of
    # the whole-matrix polar (O(m) × O(n)), which muon's attention layout uses.
    heads, head_dim, d = 3, 2, 5
    generator = torch.Generator().manual_seed(0)
    U = random_orthogonal(heads * head_dim, generator)
    g: Action = (lambda X: U @ X) if kind == "heads_rows" else (lambda X: X @ U.mT)
    shape = (heads * head_dim, d) if kind == "heads_rows" else (d, heads * head_dim)
    assert check("polar", f"{kind}.{head_dim}", g, shape, seed=1) > 0.01
    assert check("polar", "matrix", g, shape, seed=1) < 1e-10


# -- (b) expert stacks [E, ·, ·]: expert permutation × per-expert groups -------------------------


def experts_action(
    rule: str, experts: int, m: int, n: int, generator: torch.Generator, *, stored_t: bool
) -> Action:
    # Expert e of g·W is A_e · (expert σ(e) of W) · B_eᵀ on the logical (out, in) matrix, A_e and
    # B_e drawn from the rule's per-expert group; "matrix.t" stores each expert transposed.
    symmetry = RULES[rule].symmetry
    sigma = torch.randperm(experts, generator=generator)
    A = torch.stack([element(symmetry.rows, m, generator) for _ in range(experts)])
    B = torch.stack([element(symmetry.cols, n, generator) for _ in range(experts)])

    def act(X: Tensor) -> Tensor:
        logical = X.mT if stored_t else X
        moved = A @ logical[sigma] @ B.mT
        return moved.mT if stored_t else moved

    return act


@pytest.mark.parametrize("rule", MATRIX_RULES)
@pytest.mark.parametrize("layout", ["matrix", "matrix.t"])
@settings(max_examples=8, deadline=None)
@given(
    dims=st.tuples(st.integers(1, 3), st.integers(2, 5), st.integers(2, 5)), seed=st.integers(0, 2**31 - 1)
)
def test_expert_stacks_are_equivariant_under_expert_permutation_and_per_expert_groups(
    rule, layout, dims, seed
):
    experts, m, n = dims  # logical (out, in) = (m, n) per expert
    generator = torch.Generator().manual_seed(seed)
    g = experts_action(rule, experts, m, n, generator, stored_t=layout == "matrix.t")
    shape = (experts, n, m) if layout == "matrix.t" else (experts, m, n)
    assert check(rule, layout, g, shape, seed) < 1e-10


# -- (c) fused gate/up: joint neuron permutation of gate and up, O(d) on the input of both ------


def split(X: Tensor, layout: str) -> tuple[Tensor, Tensor]:
    """(gate, up), each [E, r, d], of a fused stack: OLMoE [E, 2r, d] or gpt-oss [E, d, 2r]."""
    if layout == "gate_up.concat":
        r = X.shape[1] // 2
        return X[:, :r], X[:, r:]
    return X[..., ::2].mT, X[..., 1::2].mT  # gpt-oss: gate in even, up in odd outputs, stored (in, out)


def join(gate: Tensor, up: Tensor, layout: str) -> Tensor:
    if layout == "gate_up.concat":
        return torch.cat([gate, up], dim=1)
    E, r, d = gate.shape
    return torch.stack([gate.mT, up.mT], dim=-1).reshape(E, d, 2 * r)


def gate_up_action(
    experts: int, r: int, d: int, generator: torch.Generator, layout: str, *, joint: bool = True
) -> Action:
    # Expert e: gate and up of expert σ(e), both P_e · half · Q_eᵀ (joint=False: up gets its own P).
    sigma = torch.randperm(experts, generator=generator)
    P = torch.stack([random_permutation(r, generator) for _ in range(experts)])
    P_up = P if joint else torch.stack([random_permutation(r, generator) for _ in range(experts)])
    Q = torch.stack([random_orthogonal(d, generator) for _ in range(experts)])

    def act(X: Tensor) -> Tensor:
        gate, up = split(X, layout)
        return join(P @ gate[sigma] @ Q.mT, P_up @ up[sigma] @ Q.mT, layout)

    return act


def test_split_and_join_follow_the_models_storage():
    E, r, d = 2, 3, 4
    gate, up = torch.randn(E, r, d, dtype=torch.float64), torch.randn(E, r, d, dtype=torch.float64)
    olmoe, gpt_oss = join(gate, up, "gate_up.concat"), join(gate, up, "gate_up.interleave.t")
    assert olmoe.shape == (E, 2 * r, d)
    assert gpt_oss.shape == (E, d, 2 * r)
    assert torch.equal(gpt_oss[..., 2], gate[:, 1])  # stored column 2j is gate_j, 2j + 1 is up_j
    assert torch.equal(gpt_oss[..., 3], up[:, 1])
    for layout, stored in (("gate_up.concat", olmoe), ("gate_up.interleave.t", gpt_oss)):
        assert all(torch.equal(a, b) for a, b in zip(split(stored, layout), (gate, up), strict=True))


FUSED = ["gate_up.concat", "gate_up.interleave.t"]


@pytest.mark.parametrize("rule", INPUT_ORTHOGONAL)
@pytest.mark.parametrize("layout", FUSED)
@settings(max_examples=8, deadline=None)
@given(
    dims=st.tuples(st.integers(1, 3), st.integers(2, 4), st.integers(2, 5)), seed=st.integers(0, 2**31 - 1)
)
def test_fused_gate_up_is_equivariant_under_joint_neuron_permutation(rule, layout, dims, seed):
    experts, r, d = dims
    generator = torch.Generator().manual_seed(seed)
    g = gate_up_action(experts, r, d, generator, layout)
    shape = (experts, 2 * r, d) if layout == "gate_up.concat" else (experts, d, 2 * r)
    assert check(rule, layout, g, shape, seed) < 1e-10


@pytest.mark.parametrize("rule", PAIRED)
@pytest.mark.parametrize("layout", FUSED)
def test_independent_gate_and_up_permutations_break_the_paired_rules(rule, layout):
    # Row j of the paired view is [gate_j, up_j]: permuting gate and up neurons apart tears pairs.
    generator = torch.Generator().manual_seed(2)
    g = gate_up_action(2, 4, 3, generator, layout, joint=False)
    shape = (2, 8, 3) if layout == "gate_up.concat" else (2, 3, 8)
    assert check(rule, layout, g, shape, seed=3) > 0.01
