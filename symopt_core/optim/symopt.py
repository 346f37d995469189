"""SymOpt: one torch optimizer whose param groups each name a symmetry-compatible rule.

    opt = SymOpt([
        {"params": hidden, "rule": "polar", "nesterov": True},
        {"params": [embedding], "rule": "row_norm", "lr": 0.01, "scale": "none"},
        {"params": vectors, "rule": "adamw", "lr": 1e-3},
    ], lr=0.02)

A step is: EMA momentum (optional Nesterov) -> the group's layout turns each tensor into a batch
of logical (out, in) matrices -> the rule's direction (same-shape matrices of all params batched
into one call) -> optional NorMuon row normalization -> shape scale -> decoupled weight decay
p <- (1 - lr·wd) p -> p <- p - lr · update. Elementwise rules (adamw, sgd) skip the matrix view.

SymOpt gathers parameters, gradients and state; how the tensor work runs is its `engine`'s
(engines.py), chosen by the constructor: the readable per-tensor reference (symopt_reference.py,
batched=False), the batched engine (the default), or the batched engine that splits the
whole-matrix work across data-parallel ranks (shard=True), each under the FSDP adapter that
updates FSDP2-sharded parameters row-wise on each rank (fsdp.py). No mode is tested in `step`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError
from .directions import DirectionOptions, neuron_normalize
from .engines import BatchedEngine, DistributedEngine, Engine, MatrixJob
from .fsdp import FsdpRows, gather_rows_reference
from .layout import Layout, parse_layout
from .options import DEFAULT_LR, POLAR_DTYPES, SCALES, group_defaults, upgrade_saved_group, validate_options
from .rules import Rule, get_rule
from .sharding import ShardStats
from .symopt_reference import ReferenceEngine

__all__ = ["SCALES", "SymOpt"]


class SymOpt(torch.optim.Optimizer):
    """Symmetry-compatible optimizer: each param group carries a rule name from `RULES`.

    Every other group option (momentum, nesterov, weight_decay, scale, polar_method, betas, ...)
    is a row of `GROUP_OPTIONS` (options.py): its default, the values it takes and the rules that
    read it. Keyword `options` set the defaults of every group; a group's own keys override them.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = DEFAULT_LR,
        *,
        rule: str = "polar",
        batched: bool = True,
        shard: bool = False,
        process_group: Any = None,
        **options: Any,
    ) -> None:
        defaults = {"rule": rule, **group_defaults({"lr": lr, **options})}
        # How the step's tensor work runs (engines.py); an attribute a caller may replace (a
        # RecordingEngine in benchmarks/sharded_step.py).
        self.engine: Engine = _engine(batched=batched, shard=shard, process_group=process_group)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        _validate_group(self.param_groups[-1])

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Also what `load_state_dict` ends with: a checkpoint written before a group option
        existed gets the value that reproduces how it was trained (the option's `before`), else
        its default; one written with a removed option runs as it did (upgrade_saved_group)."""
        super().__setstate__(state)
        upgrade_saved_group(self.defaults, self.defaults)
        for group in self.param_groups:
            upgrade_saved_group(group, self.defaults)

    # -- the step -----------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One update of every parameter that has a gradient; returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        jobs: list[MatrixJob] = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                _check_gradient(p)
            rule = get_rule(group["rule"])
            if rule.name == "adamw":
                self._adamw(group, params)
            elif rule.elementwise:
                self._sgd(group, params)
            else:
                jobs.extend(self._matrix_jobs(group, rule, params))
        if jobs:
            self._apply_matrix_updates(jobs, self.engine.updates(jobs))
        return loss

    @property
    def shard_stats(self) -> ShardStats | None:
        """How the whole-matrix work was split across data-parallel ranks (shard=True), else None."""
        return self.engine.stats

    def _adamw(self, group: dict[str, Any], params: list[Tensor]) -> None:
        states = [self._state(p, ("exp_avg", "exp_avg_sq")) for p in params]
        self.engine.adamw(
            params,
            [p.grad for p in params],  # type: ignore[misc]
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [s["step"] for s in states],
            lr=group["lr"],
            betas=group["betas"],
            eps=group["adam_eps"],
            weight_decay=group["weight_decay"],
        )

    def _momentum(self, group: dict[str, Any], params: list[Tensor]) -> list[Tensor]:
        momentum = group["momentum"]
        states = [self._state(p, ("momentum_buffer",) if momentum > 0 else ()) for p in params]
        self.engine.count([s["step"] for s in states])
        buffers = [s["momentum_buffer"] for s in states] if momentum > 0 else []
        grads = [p.grad for p in params]
        return self.engine.momentum(grads, buffers, momentum, group["nesterov"])  # type: ignore[arg-type]

    def _sgd(self, group: dict[str, Any], params: list[Tensor]) -> None:
        updates = self._momentum(group, params)
        self.engine.apply(params, updates, group["lr"], group["weight_decay"])

    def _matrix_jobs(self, group: dict[str, Any], rule: Rule, params: list[Tensor]) -> list[MatrixJob]:
        options = _direction_options(group)
        updates = self._momentum(group, params)
        jobs = []
        for p, update in zip(params, updates, strict=True):
            finish = partial(self._finish, group, rule, p)
            rows_independent = _row_local(group, rule, p)
            jobs.append(
                MatrixJob(p, group, rule, _layout_of(group, p), options, update, finish, rows_independent)
            )
        return jobs

    def _finish(self, group: dict[str, Any], rule: Rule, param: Tensor, D: Tensor) -> Tensor:
        """The direction D of `param`'s matrices -> its update's: NorMuon, then the shape scale."""
        if rule.neuron_norm:
            state = self.state[param]
            if "second_moment" not in state:
                state["second_moment"] = torch.zeros(
                    (*D.shape[:-1], 1), dtype=torch.promote_types(D.dtype, torch.float32), device=D.device
                )
            D = neuron_normalize(D, state["second_moment"], group["beta2"], group["normuon_eps"])
        return D * _scale_factor(group["scale"], rule, D, group["rms_target"])

    def _apply_matrix_updates(self, jobs: list[MatrixJob], updates: list[Tensor]) -> None:
        by_group: dict[int, tuple[dict[str, Any], list[Tensor], list[Tensor]]] = {}
        for job, update in zip(jobs, updates, strict=True):
            entry = by_group.setdefault(id(job.group), (job.group, [], []))
            entry[1].append(job.param)
            entry[2].append(update.to(job.param.dtype))
        for group, params, group_updates in by_group.values():
            self.engine.apply(params, group_updates, group["lr"], group["weight_decay"])

    def _state(self, p: Tensor, buffers: tuple[str, ...]) -> dict[str, Any]:
        state = self.state[p]
        if "step" not in state:
            # float32 step counters, as torch.optim keeps them (state_dict round-trips them as is).
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
        for name in buffers:
            if name not in state:
                state[name] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state


def _engine(*, batched: bool, shard: bool, process_group: Any) -> Engine:
    """The engine the constructor's flags name (engines.py), under the FSDP adapter (a no-op
    without FSDP-sharded parameters). batched=False: the readable per-tensor reference, the
    one the parity tests compare against. shard=True, under data parallelism (every rank has
    the same gradients): each rank of `process_group` (default: the world) computes a balanced
    share of the whole-matrix directions and all-gathers the rest; on one process no
    communication at all."""
    if not batched:
        return FsdpRows(ReferenceEngine(), gather=gather_rows_reference)
    return FsdpRows(DistributedEngine(process_group) if shard else BatchedEngine())


def _row_local(group: dict[str, Any], rule: Rule, p: Tensor) -> bool:
    """Whether each row of `p`'s update depends on that row of the momentum alone (an FSDP rank
    then updates its rows from its rows): a row-local rule (communication "none": row-norm) on a
    plain [out, in] matrix, whose logical rows are the stored rows, and nothing that looks across
    rows (NorMuon's statistics, the "rms" scale)."""
    plain = _layout_of(group, p) == parse_layout("matrix") and p.ndim == 2
    return rule.communication == "none" and plain and not rule.neuron_norm and group["scale"] != "rms"


def _scale_factor(mode: str, rule: Rule, D: Tensor, rms_target: float) -> float | Tensor:
    m, n = D.shape[-2:]
    if mode == "none" or rule.natural_rms is None:
        return 1.0
    if mode == "kj":
        return 1.0 / (math.sqrt(rule.fan_in(n)) * rule.natural_rms(m, n))
    if mode == "kj_transposed":
        return 1.0 / (math.sqrt(m) * rule.natural_rms(m, n))
    if mode == "match_rms_adamw":
        return rms_target / rule.natural_rms(m, n)
    rms = torch.linalg.matrix_norm(D.float(), keepdim=True) / math.sqrt(m * n)
    return (rms_target / rms.clamp_min(1e-30)).to(D.dtype)


def _direction_options(group: dict[str, Any]) -> DirectionOptions:
    dtype = None if group["polar_dtype"] == "auto" else POLAR_DTYPES[group["polar_dtype"]]
    return DirectionOptions(
        alpha=group["alpha"],
        eps=group["eps"],
        polar_method=group["polar_method"],
        polar_steps=group["polar_steps"],
        polar_dtype=dtype,
        invsqrt_method=group["invsqrt_method"],
        invsqrt_steps=group["invsqrt_steps"],
        gram_eps=group["gram_eps"],
        hybrid_polar=group["hybrid_polar"],
    )


def _layout_of(group: dict[str, Any], p: Tensor) -> Layout:
    if group["layout"] == "auto":
        return parse_layout("vector" if p.ndim < 2 else "matrix")
    return parse_layout(group["layout"])


def _check_gradient(p: Tensor) -> None:
    if p.grad is not None and p.grad.is_sparse:
        raise ConfigError("SymOpt does not support sparse gradients (use nn.Embedding(sparse=False))")


def _validate_group(group: dict[str, Any]) -> None:
    rule = get_rule(group["rule"])
    validate_options(group)  # every option against its row of GROUP_OPTIONS
    for p in group["params"]:
        if not p.is_floating_point():
            raise ConfigError(f"Invalid parameter dtype {p.dtype}: SymOpt needs floating-point parameters")
        layout = _layout_of(group, p)
        layout.check(tuple(p.shape), f"a parameter of shape {tuple(p.shape)}")
        if not rule.elementwise and layout.kind == "vector":
            raise ConfigError(
                f"Invalid rule {rule.name!r} for a parameter of shape {tuple(p.shape)}: matrix rules need "
                "2+ dims; give vectors an elementwise rule (adamw, sgd)"
            )
