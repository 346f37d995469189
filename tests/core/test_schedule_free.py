"""The schedule-free wrapper: closed-form SF-SGD, its x/y/z reference, modes and state."""

from __future__ import annotations

import copy

import pytest
import torch

from symopt_core import ConfigError, ModeError, ScheduleFree, SymOpt
from symopt_core.optim.reference_sf import ScheduleFreeAdamWReference, ScheduleFreeReference
from symopt_core.optim.schedule_free import averaging_lr


def quadratic(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.randn(30, 8, dtype=torch.float64, generator=generator),
        torch.randn(30, dtype=torch.float64, generator=generator),
    )


def gradient(A: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return A.mT @ (A @ w - b) / len(b)


def test_sf_sgd_matches_the_closed_form_sequences():
    # ALGORITHMS.md 10.1 with base SGD and constant lr γ: z_{t+1} = z_t - γ ∇f(y_t),
    # x_{t+1} = (1 - 1/(t+1)) x_t + z_{t+1}/(t+1), y = (1 - β) z + β x.
    A, b = quadratic()
    gamma, beta = 0.05, 0.9
    w = torch.nn.Parameter(torch.zeros(8, dtype=torch.float64))
    optimizer = ScheduleFree(torch.optim.SGD([w], lr=gamma), momentum=beta)
    x = z = torch.zeros(8, dtype=torch.float64)
    for t in range(25):
        y = (1 - beta) * z + beta * x
        torch.testing.assert_close(w.detach(), y, rtol=0, atol=1e-14)
        w.grad = gradient(A, b, w.detach())
        optimizer.step()
        z = z - gamma * gradient(A, b, y)
        x = (1 - 1 / (t + 1)) * x + z / (t + 1)
    optimizer.eval()
    torch.testing.assert_close(w.detach(), x, rtol=0, atol=1e-14)


def test_wrapper_over_symopt_follows_the_reference_with_a_warmup_scheduler():
    A, b = quadratic(1)
    W = torch.nn.Parameter(torch.zeros(8, 1, dtype=torch.float64))
    base = SymOpt([W], lr=0.1, rule="row_norm", momentum=0.8, weight_decay=0.05)
    optimizer = ScheduleFree(base, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: min(1.0, (t + 1) / 5))

    shadow = torch.nn.Parameter(torch.zeros(8, 1, dtype=torch.float64))
    shadow_base = SymOpt([shadow], lr=0.1, rule="row_norm", momentum=0.8, weight_decay=0.05)

    def base_step(zs: list[torch.Tensor], grads: list[torch.Tensor], lr: float) -> None:
        with torch.no_grad():
            shadow.copy_(zs[0])
        shadow.grad = grads[0].clone()
        shadow_base.param_groups[0]["lr"] = lr
        shadow_base.step()
        zs[0].copy_(shadow.detach())

    reference = ScheduleFreeReference([torch.zeros(8, 1, dtype=torch.float64)], base_step, momentum=0.9)
    for _ in range(20):
        lr = optimizer.param_groups[0]["lr"]
        assert base.param_groups[0]["lr"] == lr  # the scheduler drives the base optimizer's lr
        W.grad = gradient(A, b, W.detach()[:, 0]).unsqueeze(1)
        reference_grad = gradient(A, b, reference.y()[0][:, 0]).unsqueeze(1)
        optimizer.step()
        scheduler.step()
        reference.step([reference_grad], lr)
        torch.testing.assert_close(W.detach(), reference.y()[0], rtol=0, atol=1e-13)
    assert optimizer.param_groups[0]["k"] == 20
    optimizer.eval()
    torch.testing.assert_close(W.detach(), reference.x[0], rtol=0, atol=1e-13)


@pytest.mark.parametrize("base", ["symopt", "torch"])
def test_sf_adamw_matches_the_reference_averaging_weights_included(base):
    # ALGORITHMS.md 10.1: SF-AdamW's γ_t carries √(1 - β₂^{t+1}), in the step and in the weights
    # of the average. The wrapper over an AdamW with β1 = 0 (the interpolation is the momentum)
    # takes the same steps; ε = 0 because the two place ε differently (torch-style AdamW adds it
    # to the bias-corrected root, the reference to the raw one), a difference of order ε.
    A, b = quadratic(2)
    W = torch.nn.Parameter(torch.zeros(8, dtype=torch.float64))
    if base == "symopt":
        inner: torch.optim.Optimizer = SymOpt([W], lr=0.05, rule="adamw", betas=(0.0, 0.95), adam_eps=0.0)
    else:
        inner = torch.optim.Adam([W], lr=0.05, betas=(0.0, 0.95), eps=0.0)
    optimizer = ScheduleFree(inner, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: min(1.0, (t + 1) / 5))
    reference_w = torch.zeros(8, dtype=torch.float64)
    reference = ScheduleFreeAdamWReference([reference_w], lr=0.05, betas=(0.9, 0.95), eps=0.0)
    for t in range(20):
        reference.lr = 0.05 * min(1.0, (t + 1) / 5)  # the reference's own warmup, as a schedule
        assert averaging_lr(optimizer.param_groups[0]) == pytest.approx(
            reference.lr * (1 - 0.95 ** (t + 1)) ** 0.5
        )
        W.grad = gradient(A, b, W.detach())
        reference.step([gradient(A, b, reference_w)])
        optimizer.step()
        scheduler.step()
        torch.testing.assert_close(W.detach(), reference_w, rtol=0, atol=1e-12)
    optimizer.eval()
    torch.testing.assert_close(W.detach(), reference.x[0], rtol=0, atol=1e-12)


def test_averaging_lr_has_the_adam_factor_only_for_adam_groups():
    w = torch.nn.Parameter(torch.zeros(3, 2))
    for group, expected in (
        ({"lr": 0.1, "k": 0, "rule": "adamw", "betas": (0.0, 0.99)}, 0.1 * 0.01**0.5),
        ({"lr": 0.1, "k": 2, "betas": (0.9, 0.5)}, 0.1 * (1 - 0.5**3) ** 0.5),  # torch Adam
        ({"lr": 0.1, "k": 0, "rule": "row_norm", "betas": (0.9, 0.95)}, 0.1),  # SymOpt defaults
        ({"lr": 0.1, "k": 0}, 0.1),  # SGD
    ):
        assert averaging_lr({"params": [w], **group}) == pytest.approx(expected)


def test_step_in_eval_mode_raises_mode_error_and_train_restores_y():
    w = torch.nn.Parameter(torch.randn(5, 3))
    optimizer = ScheduleFree(SymOpt([w], lr=0.02), momentum=0.9)
    for _ in range(3):
        w.grad = torch.randn(5, 3)
        optimizer.step()
    y = w.detach().clone()
    optimizer.eval()
    assert not optimizer.train_mode
    w.grad = torch.randn(5, 3)
    with pytest.raises(ModeError, match=r"call optimizer\.train\(\)"):
        optimizer.step()
    optimizer.eval()  # idempotent
    optimizer.train()
    torch.testing.assert_close(w.detach(), y, rtol=0, atol=1e-6)


def test_mode_and_averaging_state_survive_state_dict():
    w = torch.nn.Parameter(torch.randn(5, 3))
    optimizer = ScheduleFree(SymOpt([w], lr=0.02, rule="normuon"), momentum=0.9)
    for _ in range(4):
        w.grad = torch.randn(5, 3)
        optimizer.step()
    optimizer.eval()
    saved = copy.deepcopy(optimizer.state_dict())
    assert saved["param_groups"][0]["train_mode"] is False
    assert saved["param_groups"][0]["k"] == 4

    fresh_w = torch.nn.Parameter(w.detach().clone())
    fresh = ScheduleFree(SymOpt([fresh_w], lr=0.02, rule="normuon"), momentum=0.9)
    fresh.load_state_dict(saved)
    assert not fresh.train_mode
    assert fresh.param_groups is fresh.base.param_groups  # still shared after loading
    assert fresh.param_groups[0]["weight_sum"] == saved["param_groups"][0]["weight_sum"]
    for optim, param in ((optimizer, w), (fresh, fresh_w)):
        optim.train()
        param.grad = torch.ones(5, 3)
        optim.step()
    assert torch.equal(w, fresh_w)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"momentum": 1.0}, "Invalid schedule-free momentum: 1.0"),
        ({"weight_lr_power": -1.0}, "Invalid weight_lr_power: -1.0"),
    ],
)
def test_bad_wrapper_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ScheduleFree(SymOpt([torch.nn.Parameter(torch.randn(2, 2))]), **kwargs)
