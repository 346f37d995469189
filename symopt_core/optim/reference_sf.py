"""Readable reference of the schedule-free iteration with x, y and z all stored.

Not for training (it keeps two extra copies of the model): the parity test checks that
`ScheduleFree` (one extra buffer, lerp-based swaps) follows it step for step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["ScheduleFreeReference"]


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
