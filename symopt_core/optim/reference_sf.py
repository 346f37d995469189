"""Readable references of the schedule-free iteration with x, y and z all stored: the generic
wrapper over any base step, and SF-AdamW as its authors' reference implementation writes it.

Not for training (they keep extra copies of the model): the parity tests check that
`ScheduleFree` (one extra buffer, lerp-based swaps) follows them step for step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["ScheduleFreeAdamWReference", "ScheduleFreeReference"]


class ScheduleFreeReference:
    """y_t = (1-β) z_t + β x_t; z_{t+1} = base(z_t, g(y_t)); x_{t+1} = (1-c) x_t + c z_{t+1}."""

    def __init__(
        self,
        params: list[Tensor],
        base_step: Callable[[list[Tensor], list[Tensor], float], None],
        *,
        momentum: float = 0.9,
        weight_lr_power: float = 2.0,
        r: float = 0.0,
    ) -> None:
        self.params = params
        self.base_step = base_step  # base_step(z_list, grads, lr): updates z in place
        self.beta, self.power, self.r = momentum, weight_lr_power, r
        self.x = [p.detach().clone() for p in params]
        self.z = [p.detach().clone() for p in params]
        self.t, self.weight_sum, self.lr_max = 0, 0.0, 0.0

    @torch.no_grad()
    def y(self) -> list[Tensor]:
        return [(1 - self.beta) * z + self.beta * x for x, z in zip(self.x, self.z, strict=True)]

    @torch.no_grad()
    def step(self, grads: list[Tensor], lr: float) -> None:
        """Take grads evaluated at y(), advance z, x and write y into the params."""
        self.base_step(self.z, grads, lr)
        self.lr_max = max(self.lr_max, lr)
        weight = (self.t + 1) ** self.r * self.lr_max**self.power
        self.weight_sum += weight
        c = weight / self.weight_sum if self.weight_sum > 0 else 0.0
        self.x = [(1 - c) * x + c * z for x, z in zip(self.x, self.z, strict=True)]
        self.t += 1
        for p, y in zip(self.params, self.y(), strict=True):
            p.copy_(y)


class ScheduleFreeAdamWReference:
    """SF-AdamW as Defazio et al.'s reference writes it, with x, y, z and v all stored:

    γ_t = lr · √(1 - β₂^{t+1})                    # the averaging weights see this γ_t
    v <- β₂ v + (1 - β₂) g²;  z <- z - γ_t · g / (√v + ε)
    w_t = (t + 1)^r · (max_{s≤t} γ_s)^weight_lr_power;  c = w_t / Σ_{s≤t} w_s
    x <- (1 - c) x + c z;  y = β₁ x + (1 - β₁) z   # β₁: the interpolation, no base momentum
    """

    def __init__(
        self,
        params: list[Tensor],
        *,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_lr_power: float = 2.0,
        r: float = 0.0,
    ) -> None:
        self.params = params
        self.lr, (self.beta1, self.beta2), self.eps = lr, betas, eps
        self.power, self.r = weight_lr_power, r
        self.x = [p.detach().clone() for p in params]
        self.z = [p.detach().clone() for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t, self.weight_sum, self.lr_max = 0, 0.0, 0.0

    @torch.no_grad()
    def step(self, grads: list[Tensor]) -> None:
        """Take grads evaluated at y (the params), advance v, z, x and write y into the params."""
        gamma = self.lr * (1 - self.beta2 ** (self.t + 1)) ** 0.5
        self.lr_max = max(self.lr_max, gamma)
        weight = (self.t + 1) ** self.r * self.lr_max**self.power
        self.weight_sum += weight
        c = weight / self.weight_sum
        for i, g in enumerate(grads):
            self.v[i] = self.beta2 * self.v[i] + (1 - self.beta2) * g * g
            self.z[i] = self.z[i] - gamma * g / (self.v[i].sqrt() + self.eps)
            self.x[i] = (1 - c) * self.x[i] + c * self.z[i]
            self.params[i].copy_(self.beta1 * self.x[i] + (1 - self.beta1) * self.z[i])
        self.t += 1
