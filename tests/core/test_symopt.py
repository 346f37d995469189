"""SymOpt: torch.optim conventions, parity with torch's Muon and AdamW, batched vs reference."""

from __future__ import annotations

import copy

import pytest
import torch

from symopt_core import ConfigError, SymOpt
from symopt_core.optim import RULES, DirectionOptions

from .group_actions import act, element, random_orthogonal, relative_error


def make_params(dtype: torch.dtype = torch.float64, seed: int = 0) -> dict[str, torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)

    def param(*shape: int) -> torch.nn.Parameter:
        return torch.nn.Parameter(torch.randn(*shape, dtype=dtype, generator=generator))

    return {
        "q": param(8, 6),  # 4 heads of 2 rows
        "o": param(6, 8),  # 4 heads of 2 columns: [6, 2] blocks, transposed into q's [2, 6] batch
        "plain": param(6, 8),
        "tall": param(10, 6),
        "experts_gate_up": param(3, 8, 6),  # [E, 2r, d], concatenated
        "experts_down": param(3, 6, 4),
        "gpt_oss_gate_up": param(3, 6, 8),  # [E, d, 2r], interleaved, stored (in, out)
    }


LAYOUTS = {
    "q": "heads_rows.2",
    "o": "heads_cols.2",
    "plain": "matrix",
    "tall": "matrix",
    "experts_gate_up": "gate_up.concat",
    "experts_down": "matrix",
    "gpt_oss_gate_up": "gate_up.interleave.t",
}

MATRIX_RULES = [name for name, rule in RULES.items() if not rule.elementwise]
EXACT = {"polar_method": "svd", "invsqrt_method": "eigh", "polar_dtype": "float64"}


def groups_for(
    params: dict[str, torch.nn.Parameter], rule: str, **options: object
) -> list[dict[str, object]]:
    return [{"params": [p], "rule": rule, "layout": LAYOUTS[name], **options} for name, p in params.items()]


def run(
    optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], steps: int, seed: int = 1
) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, dtype=p.dtype, generator=generator)
        optimizer.step()


@pytest.mark.parametrize("rule", MATRIX_RULES)
@pytest.mark.parametrize(
    "options",
    [{}, EXACT, {"nesterov": True, "weight_decay": 0.1, "scale": "rms"}],
    ids=["default", "exact", "nesterov-decay-rms"],
)
def test_batched_step_matches_the_per_tensor_reference(rule, options):
    fast_params, slow_params = make_params(), make_params()
    fast = SymOpt(groups_for(fast_params, rule, **options), lr=0.01, batched=True)
    slow = SymOpt(groups_for(slow_params, rule, **options), lr=0.01, batched=False)
    run(fast, list(fast_params.values()), 4)
    run(slow, list(slow_params.values()), 4)
    for name in fast_params:
        torch.testing.assert_close(fast_params[name], slow_params[name], rtol=0, atol=1e-12, msg=name)


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize(("adjust", "scale"), [(None, "kj"), ("match_rms_adamw", "match_rms_adamw")])
@pytest.mark.parametrize("shape", [(64, 32), (32, 96)])
def test_muon_configuration_matches_torch_optim_muon(nesterov, adjust, scale, shape):
    torch.manual_seed(0)
    ours = torch.nn.Parameter(torch.randn(shape))
    theirs = torch.nn.Parameter(ours.detach().clone())
    symopt = SymOpt(
        [ours],
        lr=0.02,
        rule="polar",
        momentum=0.95,
        nesterov=nesterov,
        weight_decay=0.05,
        scale=scale,
        polar_method="newton_schulz",
        polar_dtype="bfloat16",
    )
    muon = torch.optim.Muon(
        [theirs], lr=0.02, momentum=0.95, nesterov=nesterov, weight_decay=0.05, adjust_lr_fn=adjust
    )
    for _ in range(10):
        grad = torch.randn(shape)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        symopt.step()
        muon.step()
    # Same bf16 Newton–Schulz, same order of operations: agreement to fp32 rounding of the updates.
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("rule", ["polar", "row_norm", "normuon"])
def test_scale_none_leaves_the_direction_unscaled(rule):
    # One step, no momentum: the update is lr · D(G) exactly. A scaled mode on the same 10 × 4
    # block must differ (match_rms_adamw: 0.2·√10 for polar, 0.2·√4 for row-norm).
    G = torch.randn(10, 4, dtype=torch.float64)
    updates = {}
    for scale in ("none", "match_rms_adamw"):
        p = torch.nn.Parameter(torch.zeros(10, 4, dtype=torch.float64))
        p.grad = G.clone()
        SymOpt([p], lr=0.1, rule=rule, momentum=0.0, scale=scale, **EXACT).step()
        updates[scale] = -p.detach() / 0.1
    rule_ = RULES[rule]
    expected = rule_.direction(G.unsqueeze(0), _exact_options())[0]
    if rule_.neuron_norm:  # NorMuon's first step: v = mean square of each row, ‖D‖_F kept
        v = expected.square().mean(dim=1, keepdim=True) * (1 - 0.95)
        normalized = expected / (v.sqrt() + 1e-10)
        expected = normalized * expected.norm() / normalized.norm()
    torch.testing.assert_close(updates["none"], expected, rtol=0, atol=1e-12)
    assert (updates["match_rms_adamw"] - updates["none"]).abs().max() > 0.01


def _exact_options() -> DirectionOptions:
    return DirectionOptions(polar_method="svd", polar_dtype=torch.float64, invsqrt_method="eigh")


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adamw_rule_matches_torch_optim_adamw(batched, dtype):
    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(s, dtype=dtype)) for s in ((7,), (5, 3), (2, 3, 4))]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    symopt = SymOpt(
        ours, lr=3e-3, rule="adamw", betas=(0.9, 0.99), adam_eps=1e-8, weight_decay=0.1, batched=batched
    )
    adamw = torch.optim.AdamW(theirs, lr=3e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    for _ in range(10):
        for a, b in zip(ours, theirs, strict=True):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        symopt.step()
        adamw.step()
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-14)


def test_step_takes_a_closure_and_returns_its_loss():
    w = torch.nn.Parameter(torch.randn(4, 3))
    optimizer = SymOpt([w], lr=0.1)
    calls = []

    def closure() -> float:
        optimizer.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        calls.append(torch.is_grad_enabled())
        return float(loss.detach())

    before = float((w.detach() ** 2).sum())
    assert optimizer.step(closure) == pytest.approx(before)
    assert calls == [True]
    assert float((w.detach() ** 2).sum()) < before


def test_parameters_without_gradients_are_left_alone():
    a, b = torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(4, 3))
    optimizer = SymOpt([a, b], lr=0.1)
    a.grad = torch.randn(4, 3)
    frozen = b.detach().clone()
    optimizer.step()
    assert torch.equal(b, frozen)
    assert b not in optimizer.state


@pytest.mark.parametrize("rule", list(RULES))
def test_state_dict_round_trip_continues_bit_identically(rule):
    options = {"layout": "matrix"} if not RULES[rule].elementwise else {}
    a = make_params(torch.float32)
    first = SymOpt([{"params": [a["plain"], a["tall"]], "rule": rule, **options}], lr=0.01)
    run(first, [a["plain"], a["tall"]], 3)
    saved_params = {k: v.detach().clone() for k, v in a.items()}
    saved = copy.deepcopy(first.state_dict())
    run(first, [a["plain"], a["tall"]], 3, seed=7)

    b = make_params(torch.float32)
    with torch.no_grad():
        for name, p in b.items():
            p.copy_(saved_params[name])
    second = SymOpt([{"params": [b["plain"], b["tall"]], "rule": rule, **options}], lr=0.01)
    second.load_state_dict(saved)
    run(second, [b["plain"], b["tall"]], 3, seed=7)
    for name in ("plain", "tall"):
        assert torch.equal(a[name], b[name]), name
    state = second.state[b["plain"]]
    assert state["step"].dtype == torch.float32
    assert float(state["step"]) == 6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -1.0}, "Invalid lr: -1.0"),
        ({"momentum": 1.0}, "Invalid momentum: 1.0"),
        ({"weight_decay": -0.1}, "Invalid weight_decay: -0.1"),
        ({"rule": "muon"}, "Invalid rule: 'muon'; valid rules: adamw, sgd, polar"),
        ({"scale": "auto"}, "Invalid scale: 'auto'; valid values: kj, match_rms_adamw, rms, none"),
        ({"polar_method": "qr"}, "Invalid polar_method: 'qr'"),
        ({"polar_steps": 0}, "Invalid polar_steps: 0"),
        ({"polar_dtype": "float8"}, "Invalid polar_dtype: 'float8'"),
        ({"betas": (0.9, 1.5)}, "Invalid betas: \\(0.9, 1.5\\)"),
        ({"layout": "heads_rows.5"}, "Invalid layout 'heads_rows.5' for a parameter of shape \\(8, 6\\)"),
        ({"layout": "rows"}, "Invalid layout: 'rows'"),
    ],
)
def test_invalid_configuration_names_the_bad_value(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SymOpt([torch.nn.Parameter(torch.randn(8, 6))], **kwargs)
    with pytest.raises(ValueError, match=message):  # ConfigError is a ValueError, as torch.optim raises
        SymOpt([{"params": [torch.nn.Parameter(torch.randn(8, 6))], **kwargs}])


def test_vectors_need_an_elementwise_rule():
    with pytest.raises(ConfigError, match="Invalid rule 'polar' for a parameter of shape \\(5,\\)"):
        SymOpt([torch.nn.Parameter(torch.randn(5))], rule="polar")
    SymOpt([torch.nn.Parameter(torch.randn(5))], rule="adamw")


def test_sparse_gradients_are_refused_with_a_hint():
    embedding = torch.nn.Embedding(10, 4, sparse=True)
    optimizer = SymOpt(embedding.parameters(), rule="row_norm")
    embedding(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ConfigError, match="sparse gradients"):
        optimizer.step()


# -- trajectories: state and updates transform with the group (ALGORITHMS.md 0.3) --------------


def trajectory(
    rule: str, W: torch.Tensor, grads: list[torch.Tensor], wrap: bool = False
) -> tuple[torch.Tensor, dict]:
    """The parameter and its state (the base optimizer's, plus the wrapper's z when wrapped)."""
    from symopt_core import ScheduleFree

    p = torch.nn.Parameter(W.clone())
    optimizer = SymOpt([p], lr=0.05, rule=rule, weight_decay=0.1, nesterov=True, **EXACT)
    stepper: torch.optim.Optimizer = ScheduleFree(optimizer) if wrap else optimizer
    for grad in grads:
        p.grad = grad.clone()
        stepper.step()
    state = dict(optimizer.state[p])
    if wrap:
        state["z"] = stepper.state[p]["z"]
    return p.detach(), state


@pytest.mark.parametrize("rule", list(RULES))
@pytest.mark.parametrize("wrap", [False, True], ids=["plain", "schedule-free"])
def test_stateful_trajectories_are_equivariant(rule, wrap):
    generator = torch.Generator().manual_seed(3)
    m, n = 6, 4
    symmetry = RULES[rule].symmetry
    A, B = element(symmetry.rows, m, generator), element(symmetry.cols, n, generator)
    W = torch.randn(m, n, dtype=torch.float64, generator=generator)
    grads = [torch.randn(m, n, dtype=torch.float64, generator=generator) for _ in range(4)]
    base, base_state = trajectory(rule, W, grads, wrap)
    moved, moved_state = trajectory(rule, act(A, W, B), [act(A, g, B) for g in grads], wrap)
    assert relative_error(moved, act(A, base, B)) < 1e-10
    assert ("z" in base_state) == wrap
    for key in ("momentum_buffer", "exp_avg", "z"):
        if key in base_state:
            assert relative_error(moved_state[key], act(A, base_state[key], B)) < 1e-10, key
    if "exp_avg_sq" in base_state:  # squares move with the permutation only, not its signs
        A_abs, B_abs = A.abs(), B.abs()
        assert relative_error(moved_state["exp_avg_sq"], act(A_abs, base_state["exp_avg_sq"], B_abs)) < 1e-10
    if "second_moment" in base_state:  # NorMuon's per-row statistics permute with the rows
        assert relative_error(moved_state["second_moment"][0], A @ base_state["second_moment"][0]) < 1e-10


def test_normuon_trajectory_breaks_left_rotations():
    generator = torch.Generator().manual_seed(5)
    A = random_orthogonal(6, generator)
    I = torch.eye(4, dtype=torch.float64)
    W = torch.randn(6, 4, dtype=torch.float64, generator=generator)
    grads = [torch.randn(6, 4, dtype=torch.float64, generator=generator) for _ in range(3)]
    base, _ = trajectory("normuon", W, grads)
    moved, _ = trajectory("normuon", act(A, W, I), [act(A, g, I) for g in grads])
    assert relative_error(moved, act(A, base, I)) > 1e-3


def test_a_checkpoint_from_before_hybrid_polar_resumes_as_it_was_trained():
    """Groups saved before `hybrid_polar` existed took the hybrids' polar factor with the quintic:
    loading one fills in "polar" (not today's default "invsqrt"), and other missing options get
    their defaults; a group that names the option keeps it."""
    a = make_params(torch.float32)
    first = SymOpt(
        [{"params": [a["plain"]], "rule": "hybrid", "layout": "matrix", "hybrid_polar": "polar"}], lr=0.01
    )
    run(first, [a["plain"]], 2)
    saved = copy.deepcopy(first.state_dict())
    old = copy.deepcopy(saved)
    for group in old["param_groups"]:
        del group["hybrid_polar"], group["gram_eps"]
    second = SymOpt([{"params": [a["plain"]], "rule": "hybrid", "layout": "matrix"}], lr=0.01)
    second.load_state_dict(old)
    assert second.param_groups[0]["hybrid_polar"] == "polar"
    assert second.param_groups[0]["gram_eps"] == second.defaults["gram_eps"]
    run(second, [a["plain"]], 1)  # steps with the filled-in options
    third = SymOpt([{"params": [a["plain"]], "rule": "hybrid", "layout": "matrix"}], lr=0.01)
    third.load_state_dict(saved)
    assert third.param_groups[0]["hybrid_polar"] == "polar"  # saved explicitly: kept
