"""Parameter classes: the roles a tensor can play, each with its own symmetry group."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["CLASS_ALIASES", "ParamClass", "ParamInfo"]


class ParamClass(StrEnum):
    EMBEDDING = "embedding"  # token embedding [V, d], untied: S_V × O(d)
    TIED_EMBEDDING = "tied_embedding"  # embedding shared with the LM head: the shift symmetry is broken
    POSITION = "position"  # learned position embedding [T, d]
    LM_HEAD = "lm_head"  # untied output head [V, d]: S_V × O(d) ⋉ shifts 1vᵀ
    ATTN_QKV = "attn_qkv"  # q/k/v projections [H·hd, d] (or a fused qkv)
    ATTN_OUT = "attn_out"  # attention output projection [d, H·hd]
    MLP_IN = "mlp_in"  # gate/up (SwiGLU) or fc (GELU) [d_ff, d]: S_dff × O(d)
    MLP_OUT = "mlp_out"  # down / proj [d, d_ff]: O(d) × S_dff
    ROUTER = "router"  # MoE router [E, d]: S_E × O(d) ⋉ shifts (softmax gating)
    # Sigmoid gates [E, d] (DeepSeek-V3-style routers, Qwen2-MoE's shared_expert_gate): S_E × O(d)
    # without the shift symmetry (ALGORITHMS.md 7), so never a centered rule.
    SIGMOID_ROUTER = "sigmoid_router"
    EXPERT_IN = "expert_in"  # stacked expert gate/up [E, ·, ·]
    EXPERT_OUT = "expert_out"  # stacked expert down [E, ·, ·]
    HIDDEN = "hidden"  # any other hidden matrix (only through an explicit mapping)
    VECTOR = "vector"  # norms, biases, attention sinks, router and expert biases


# Names an override may use for several classes at once.
CLASS_ALIASES: dict[str, tuple[ParamClass, ...]] = {
    "attention": (ParamClass.ATTN_QKV, ParamClass.ATTN_OUT),
    "mlp": (ParamClass.MLP_IN, ParamClass.MLP_OUT),
    "experts": (ParamClass.EXPERT_IN, ParamClass.EXPERT_OUT),
    "all": tuple(ParamClass),
}


@dataclass(frozen=True)
class ParamInfo:
    """What `describe_params` knows of one trainable parameter."""

    name: str
    param_class: ParamClass
    layout: str  # a layout string, see symopt_core.optim.layout
    shape: tuple[int, ...]
