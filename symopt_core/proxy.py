"""Proxies: the user's own model shrunk by width and depth, to tune step sizes cheaply.

A sweep or study with a `proxy` block tunes the base job's model at smaller widths (and,
optionally, a smaller depth), fits how the best lr moves with width, and recommends the lr of
the full model (service/sweeps/transfer.py). This module only builds the proxies' job specs.

How a model is shrunk by a width factor f (the rule muP and the matrix presets' transfer
argument assume: the per-head geometry stays, the number of heads and the widths scale):
- heads: n_heads and n_kv_heads times f, rounded, at least 1 (n_kv_heads then the largest
  divisor of n_heads not above it, so GQA's grouping stays valid);
- head_dim is kept; d_model is n_heads * head_dim where the model had d_model = n_heads *
  head_dim (so a rounded head count snaps the width), else d_model times f;
- MLP and expert hidden widths (d_ff, expert_d_ff; transformers' intermediate_size,
  moe_intermediate_size, ...) times f; experts kept (`experts: keep`, the default: an expert's
  width is what shrinks) or times f, never below top_k (`experts: scale`);
- depth factor: n_layers times the factor, at least 1.
The vocabulary and context length are never changed: the data is the base job's.

Tokens per proxy trial: the base job's budget (default), or `tokens` named by the user; the
batch is the base job's, or (`batch: auto`) the critical batch of those tokens by the rule the
auto search space uses, B*·S = c·T^(2/3) (ALGORITHMS.md 11.2), as a power of two.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from .errors import ConfigError
from .models.registry import build_config
from .spec import MAX_SEED, JobSpec

__all__ = [
    "CRITICAL_BATCH_C",
    "ConfirmSpec",
    "ProxySize",
    "ProxySpec",
    "critical_batch",
    "model_width",
    "proxy_sizes",
    "shrink",
    "with_budget",
]

# B*·S = c·T^(2/3), c calibrated on nanoGPT's CPU reference (12 x 64 tokens per step at
# T = 2000 x 12 x 64 = 1.536M tokens): c = 0.0577. The auto search space uses the same constant.
CRITICAL_BATCH_C = 12 * 64 / (2000 * 12 * 64) ** (2 / 3)

# transformers config keys, by role (the first present is used; GPT-2 names its own).
_HF_WIDTH = ("hidden_size", "n_embd", "d_model")
_HF_HEADS = ("num_attention_heads", "n_head")
_HF_KV_HEADS = ("num_key_value_heads",)
_HF_HIDDEN = ("intermediate_size", "n_inner", "moe_intermediate_size", "shared_expert_intermediate_size")
_HF_EXPERTS = ("num_local_experts", "num_experts", "n_routed_experts")
_HF_TOP_K = ("num_experts_per_tok", "moe_topk")
_HF_LAYERS = ("num_hidden_layers", "n_layer")


def _factor(value: Any) -> float:
    """A factor given as a number or a fraction string ("1/8")."""
    if isinstance(value, str):
        try:
            value = float(Fraction(value.strip()))
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"invalid factor {value!r}: give a number or a fraction such as '1/8'") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ValueError(f"invalid factor {value!r}: a proxy factor lies in (0, 1]")
    return float(value)


class ConfirmSpec(BaseModel):
    """Full-size runs around the recommended lr: did the transferred setting win?"""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    factors: list[float] = Field(
        [0.5, 1.0, 2.0], min_length=1, max_length=9, description="multiples of the recommended lr to run"
    )
    seeds: int | list[int] = Field(1, description="runs per factor: k (base.seed .. base.seed+k-1), or seeds")

    @field_validator("factors")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if any(f <= 0 for f in value) or len(set(value)) != len(value):
            raise ValueError(f"confirm.factors must be distinct and > 0, got {value}")
        return value

    def seeds_for(self, base_seed: int) -> list[int]:
        if isinstance(self.seeds, int):
            return [base_seed + i for i in range(self.seeds)]
        return list(self.seeds)

    @model_validator(mode="after")
    def _seeds(self) -> ConfirmSpec:
        seeds = self.seeds_for(0)
        if not 1 <= len(seeds) <= 16 or len(set(seeds)) != len(seeds):
            raise ValueError(f"confirm.seeds: {self.seeds!r}; give k from 1 to 16, or 1 to 16 distinct seeds")
        if not all(0 <= s <= MAX_SEED for s in seeds):
            raise ValueError(f"confirm.seeds: {self.seeds!r}; each seed must lie in [0, {MAX_SEED}]")
        return self


class ProxySpec(BaseModel):
    """Tune at these shrunk sizes of the base model; recommend (and optionally confirm) at full size."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    width: list[float] = Field(
        min_length=2, max_length=8, description="width factors in (0, 1], e.g. ['1/8', '1/4'] (1: full width)"
    )
    depth: float = Field(1.0, description="one depth factor for every proxy, in (0, 1]")
    experts: Literal["keep", "scale"] = Field("keep", description="MoE: keep the expert count, or scale it")
    tokens: PositiveInt | None = Field(None, description="training tokens per proxy trial; None: the base's")
    batch: Literal["base", "auto"] = Field(
        "base", description="base: the base job's batch; auto: the critical batch of the proxy's tokens"
    )
    confirm: ConfirmSpec | None = Field(None, description="full-size runs around the recommendation")

    @field_validator("width", mode="before")
    @classmethod
    def _widths(cls, value: Any) -> Any:
        return [_factor(v) for v in value] if isinstance(value, list) else value

    @field_validator("depth", mode="before")
    @classmethod
    def _depth(cls, value: Any) -> float:
        return _factor(value)


class ProxySize(BaseModel):
    """One proxy: its factors, its job's model width and depth, and its label (`d64`, `d64-L2`)."""

    model_config = ConfigDict(frozen=True)

    width_factor: float
    depth_factor: float
    width: int
    layers: int
    label: str


def _first(config: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    return next((k for k in keys if isinstance(config.get(k), int) and not isinstance(config[k], bool)), None)


def _heads(n_heads: int, n_kv: int | None, f: float) -> tuple[int, int | None]:
    heads = max(1, round(n_heads * f))
    if n_kv is None:
        return heads, None
    kv = max(1, min(heads, round(n_kv * f)))
    while heads % kv:  # GQA: query heads come in equal groups per key/value head
        kv -= 1
    return heads, kv


def _shrink_dims(config: Any, f: float, depth: float, experts: str) -> dict[str, Any]:
    """New dims of a reference family's config (a frozen dataclass)."""
    head_dim = config.head_dim if getattr(config, "head_dim", None) else config.d_model // config.n_heads
    heads, kv = _heads(config.n_heads, getattr(config, "n_kv_heads", None), f)
    dims: dict[str, Any] = {"n_heads": heads, "n_layers": max(1, round(config.n_layers * depth))}
    if kv is not None:
        dims["n_kv_heads"] = kv
    snapped = config.n_heads * head_dim == config.d_model
    dims["d_model"] = heads * head_dim if snapped else max(1, round(config.d_model * f))
    if hasattr(config, "head_dim"):
        dims["head_dim"] = head_dim  # kept: d_model // n_heads would change it when not snapped
    for name in ("d_ff", "expert_d_ff"):
        if getattr(config, name, None) is not None:
            dims[name] = max(1, round(getattr(config, name) * f))
    if experts == "scale" and hasattr(config, "n_experts"):
        dims["n_experts"] = max(config.top_k, round(config.n_experts * f))
    return dims


def _shrink_hf(config: dict[str, Any], f: float, depth: float, experts: str) -> dict[str, Any]:
    """A transformers config shrunk by the same rule, on the fields it names."""
    width_key, heads_key = _first(config, _HF_WIDTH), _first(config, _HF_HEADS)
    if width_key is None or heads_key is None:
        raise ValueError(
            "a proxy of an hf model needs its width and head count in model.config (hidden_size and "
            "num_attention_heads, or n_embd and n_head), so that each head keeps its width"
        )
    width, n_heads = int(config[width_key]), int(config[heads_key])
    head_dim = int(config.get("head_dim") or width // n_heads)
    kv_key = _first(config, _HF_KV_HEADS)
    heads, kv = _heads(n_heads, int(config[kv_key]) if kv_key else None, f)
    shrunk = dict(config)
    shrunk[heads_key] = heads
    if kv_key is not None:
        shrunk[kv_key] = kv
    shrunk[width_key] = heads * head_dim if n_heads * head_dim == width else max(1, round(width * f))
    if "head_dim" in config:
        shrunk["head_dim"] = head_dim
    for key in _HF_HIDDEN:
        if isinstance(config.get(key), int):
            shrunk[key] = max(1, round(config[key] * f))
    experts_key, top_k_key = _first(config, _HF_EXPERTS), _first(config, _HF_TOP_K)
    if experts == "scale" and experts_key is not None:
        top_k = int(config[top_k_key]) if top_k_key else 1
        shrunk[experts_key] = max(top_k, round(config[experts_key] * f))
    layers_key = _first(config, _HF_LAYERS)
    if depth != 1.0:
        if layers_key is None:
            raise ValueError("a depth factor needs model.config's num_hidden_layers (or n_layer)")
        shrunk[layers_key] = max(1, round(config[layers_key] * depth))
    return shrunk


def model_width(spec: JobSpec) -> int:
    """The residual width of a spec's model (d_model; hidden_size of an hf config)."""
    model = spec.model
    if model.is_hf:
        key = _first(model.config or {}, _HF_WIDTH)
        if key is None:
            raise ValueError("model.config names no width (hidden_size or n_embd)")
        return int((model.config or {})[key])
    return int(build_config(model.family, model.size, **model.dims).d_model)


def _layers(spec: JobSpec) -> int:
    model = spec.model
    if model.is_hf:
        key = _first(model.config or {}, _HF_LAYERS)
        return int((model.config or {})[key]) if key else 0
    return int(build_config(model.family, model.size, **model.dims).n_layers)


def shrink(base: JobSpec, width: float, depth: float = 1.0, *, experts: str = "keep") -> JobSpec:
    """The base job with its model shrunk by the width and depth factors (module docstring)."""
    model = base.model
    if model.is_custom:
        raise ValueError("a custom model is built by your own script: the service cannot shrink it")
    if model.is_hf and model.path is not None:
        raise ValueError(
            "a proxy of a pretrained model (model.path) would be another, randomly initialised model: "
            "give the architecture as model.config to tune its proxies from a random init"
        )
    tree = base.model_dump(mode="json")
    if model.is_hf:
        tree["model"]["config"] = _shrink_hf(dict(model.config or {}), width, depth, experts)
    else:
        try:
            config = build_config(model.family, model.size, **model.dims)
        except ConfigError as error:
            raise ValueError(str(error)) from None
        tree["model"].update(_shrink_dims(config, width, depth, experts))
    try:
        return JobSpec.model_validate(tree)
    except ValueError as error:
        raise ValueError(f"proxy width {width:g}, depth {depth:g} makes an invalid job: {error}") from None


def critical_batch(tokens: int, seq_len: int) -> float:
    """B*, in sequences, for a budget of `tokens` (ALGORITHMS.md 11.2)."""
    return CRITICAL_BATCH_C * tokens ** (2 / 3) / seq_len


def with_budget(spec: JobSpec, tokens: int | None, batch: str) -> JobSpec:
    """`spec` trained on `tokens` tokens (None: its own budget) at its batch or the critical one;
    warmup and the eval, log and checkpoint intervals scale with the steps."""
    seq_len = spec.data.seq_len
    budget = tokens if tokens is not None else spec.steps * spec.batch.size * seq_len
    size = spec.batch.size
    if batch == "auto":
        size = 2 ** max(0, round(math.log2(max(1.0, critical_batch(budget, seq_len)))))
    steps = max(1, round(budget / (size * seq_len)))
    if steps == spec.steps and size == spec.batch.size:
        return spec
    ratio = steps / spec.steps
    tree = spec.model_dump(mode="json")
    tree["batch"]["size"], tree["steps"] = size, steps
    tree["schedule"]["warmup_steps"] = min(steps - 1, round(spec.schedule.warmup_steps * ratio))
    tree["eval"]["every"] = max(1, min(steps, round(spec.eval.every * ratio)))
    tree["log_every"] = max(1, round(spec.log_every * ratio))
    if spec.checkpoint.every:
        tree["checkpoint"]["every"] = max(1, round(spec.checkpoint.every * ratio))
    return JobSpec.model_validate(tree)


def proxy_sizes(base: JobSpec, proxy: ProxySpec) -> list[tuple[ProxySize, JobSpec]]:
    """Every proxy of the base job, widest last, each with its job spec (the lr left to the
    search); a ValueError naming the factor that makes an invalid job or repeats another's size."""
    found: dict[str, tuple[ProxySize, JobSpec]] = {}
    full_layers = _layers(base)
    for factor in sorted(proxy.width):
        shrunk = shrink(base, factor, proxy.depth, experts=proxy.experts)
        spec = with_budget(shrunk, proxy.tokens, proxy.batch)
        width, layers = model_width(spec), _layers(spec)
        label = f"d{width}" + (f"-L{layers}" if layers != full_layers else "")
        if label in found:
            raise ValueError(
                f"proxy widths {found[label][0].width_factor:g} and {factor:g} both make {label} "
                "(head counts are rounded): name factors further apart"
            )
        size = ProxySize(
            width_factor=factor, depth_factor=proxy.depth, width=width, layers=layers, label=label
        )
        found[label] = (size, spec)
    return list(found.values())
