"""Schedule-free wrapper over any base optimizer (ALGORITHMS.md 10.1, Defazio et al. 2024).

Three sequences: z (the base optimizer's iterate), x (a weighted average of z, where the model
is evaluated) and y = (1 - β) z + β x (where gradients are taken). Parameters hold y in train
mode and x in eval mode; only z is stored (one buffer per parameter):

    z_{t+1} = base_step(z_t, ∇f(y_t))          # base weight decay therefore acts at z
    x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1},  c_{t+1} = w_t / Σ_{s≤t} w_s,
    w_t = (t + 1)^r · (max_{s≤t} γ_s)^weight_lr_power

γ_t is the group's lr, times √(1 - β₂^{t+1}) for Adam-normalized groups (SF-AdamW): an AdamW
step with bias-corrected v is γ·√(1 - β₂^{t+1})·g/(√v + ε'), so that factor is the size of the
step z really takes, and the average weights steps by their real size (ALGORITHMS.md 10.1).

Unlike the public reference, the mode is saved in `state_dict` (as `train_mode` in each param
group, beside `k` and `weight_sum`), stepping in eval mode raises `ModeError`, and the param
groups are the base optimizer's own dicts, so a `torch.optim.lr_scheduler` attached to the
wrapper schedules the base optimizer's lr (warmup belongs there).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError, ModeError

__all__ = ["ScheduleFree", "averaging_lr"]

# What the wrapper keeps in each param group (beside the base optimizer's own keys).
_KEYS = (
    "sf_momentum",
    "weight_lr_power",
    "r",
    "weight_decay_at_y",
    "train_mode",
    "k",
    "weight_sum",
    "lr_max",
)


class ScheduleFree(torch.optim.Optimizer):
    """Wraps `base` so that it follows the schedule-free iteration; use `.train()` / `.eval()`."""

    def __init__(
        self,
        base: torch.optim.Optimizer,
        *,
        momentum: float = 0.9,
        weight_lr_power: float = 2.0,
        r: float = 0.0,
        weight_decay_at_y: float = 0.0,
    ) -> None:
        if not 0.0 < momentum < 1.0:
            raise ConfigError(f"Invalid schedule-free momentum: {momentum!r} (expected a number in (0, 1))")
        if weight_lr_power < 0.0:
            raise ConfigError(f"Invalid weight_lr_power: {weight_lr_power!r} (expected >= 0)")
        if r < 0.0:
            raise ConfigError(f"Invalid r: {r!r} (expected >= 0)")
        if weight_decay_at_y < 0.0:
            raise ConfigError(f"Invalid weight_decay_at_y: {weight_decay_at_y!r} (expected >= 0)")
        self.base = base
        defaults: dict[str, Any] = {
            "sf_momentum": momentum,
            "weight_lr_power": weight_lr_power,
            "r": r,
            "weight_decay_at_y": weight_decay_at_y,
            "train_mode": True,
            "k": 0,
            "weight_sum": 0.0,
            "lr_max": 0.0,
        }
        # torch.optim.Optimizer.add_param_group keeps the dict it is given, so these are the
        # base optimizer's group dicts; the wrapper only adds its own keys to them.
        super().__init__(base.param_groups, defaults)

    @property
    def train_mode(self) -> bool:
        return all(group["train_mode"] for group in self.param_groups)

    @torch.no_grad()
    def eval(self) -> None:
        """Set every parameter to x (the point to evaluate and to save for inference)."""
        for group in self.param_groups:
            if group["train_mode"]:
                # y -> x: x = (y - (1 - β) z) / β = lerp(y, z, 1 - 1/β)
                self._lerp_to_z(group, 1 - 1 / group["sf_momentum"])
                group["train_mode"] = False

    @torch.no_grad()
    def train(self) -> None:
        """Set every parameter to y (the point where gradients are taken)."""
        for group in self.param_groups:
            if not group["train_mode"]:
                self._lerp_to_z(group, 1 - group["sf_momentum"])  # x -> y = lerp(x, z, 1 - β)
                group["train_mode"] = True

    def _lerp_to_z(self, group: dict[str, Any], weight: float) -> None:
        for p in group["params"]:
            z = self.state[p].get("z")
            if z is not None:
                p.lerp_(z, weight)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One schedule-free step: the base optimizer steps z with the gradient taken at y."""
        if not self.train_mode:
            raise ModeError(
                "ScheduleFree.step() called in eval mode: call optimizer.train() (and model.train()) "
                "before training steps, and optimizer.eval() only around evaluation"
            )
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        stepped: list[tuple[dict[str, Any], list[Tensor]]] = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            stepped.append((group, params))
            beta, decay = group["sf_momentum"], averaging_lr(group) * group["weight_decay_at_y"]
            for p in params:
                state = self.state[p]
                if "z" not in state:
                    state["z"] = p.detach().clone(memory_format=torch.preserve_format)
                z = state["z"]
                if decay != 0.0:
                    # z <- z - γλ y, and y moves with it so that x stays where it was.
                    z.sub_(p, alpha=decay)
                    p.mul_(1 - decay * (1 - beta))
                p.lerp_(z, 1 - 1 / beta)  # y -> x
                _swap(p, z)  # p holds z for the base step; the z buffer holds x meanwhile
        self.base.step()
        for group, params in stepped:
            beta = group["sf_momentum"]
            group["lr_max"] = max(group["lr_max"], averaging_lr(group))
            weight = (group["k"] + 1) ** group["r"] * group["lr_max"] ** group["weight_lr_power"]
            group["weight_sum"] += weight
            c = weight / group["weight_sum"] if group["weight_sum"] > 0 else 0.0
            for p in params:
                z = self.state[p]["z"]
                _swap(p, z)  # p holds x again, the buffer z_{t+1}
                p.lerp_(z, c)  # x_{t+1} = (1 - c) x_t + c z_{t+1}
                p.lerp_(z, 1 - beta)  # y_{t+1} = β x_{t+1} + (1 - β) z_{t+1}
            group["k"] += 1
        return loss

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["base"] = self.base.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load `state_dict()`'s output; one without "base" (the wrapper's own z and keys, as a
        sharded checkpoint stores them beside the base optimizer's) leaves the base as it is."""
        state_dict = dict(state_dict)
        if "base" in state_dict:
            self.base.load_state_dict(state_dict.pop("base"))
        super().load_state_dict(state_dict)
        # Both loads made new group dicts; share the base optimizer's again, with our keys.
        for ours, theirs in zip(self.param_groups, self.base.param_groups, strict=True):
            for key in _KEYS:
                theirs[key] = ours[key]
        self.param_groups = self.base.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)


def averaging_lr(group: dict[str, Any]) -> float:
    """γ_t of step k = group["k"]: the lr, times √(1 - β₂^{k+1}) for Adam-normalized groups.

    Those are SymOpt's "adamw" groups and torch Adam/AdamW groups (no "rule", but "betas").
    """
    lr = float(group["lr"])
    if group.get("rule", "adamw") == "adamw" and "betas" in group:
        lr *= math.sqrt(1 - group["betas"][1] ** (group["k"] + 1))
    return lr


def _swap(a: Tensor, b: Tensor) -> None:
    held = a.clone()
    a.copy_(b)
    b.copy_(held)
