"""Explicit classification of a model's parameters by module names, never by tensor rank alone.

Works on symopt's reference models and on Hugging Face `transformers` layouts (DESIGN.md):
dense `self_attn.{q,k,v,o}_proj`, `mlp.{gate,up,down}_proj`; MoE routers `mlp.gate` (beside an
`experts` module) or `mlp.router`; fused expert stacks `experts.gate_up_proj` / `experts.down_proj`
(OLMoE / Qwen3-MoE [E, 2I, H] concatenated, gpt-oss [E, H, 2I] interleaved and stored (in, out));
GPT-2 `Conv1D` weights stored (in, out). A module may declare layouts of its own parameters with
a `symopt_layouts = {"param": "layout"}` attribute. A tied embedding / LM head is detected by
identity of the shared tensor. A trainable parameter no rule claims is an error naming it, unless
`mapping` (fnmatch pattern -> class, or -> (class, layout)) claims it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

from torch import Tensor, nn

from ..errors import ConfigError
from ..optim.layout import parse_layout
from .classes import ParamClass, ParamInfo

__all__ = ["UnclaimedParamsError", "classify", "describe_params"]

Mapped = str | ParamClass | tuple[str | ParamClass, str]

_EMBEDDING_NAMES = {
    "embed",
    "embed_tokens",
    "wte",
    "tok_embeddings",
    "word_embeddings",
    "embedding",
    "tok_embed",
}
_POSITION_NAMES = {"wpe", "pos_embed", "position_embeddings", "embed_positions", "pos_emb", "pos_embedding"}
_HEAD_NAMES = {"lm_head", "head", "output", "unembed", "embed_out"}
_QKV_NAMES = {
    "q", "k", "v", "q_proj", "k_proj", "v_proj", "query", "key", "value", "wq", "wk", "wv",
    "qkv", "qkv_proj", "c_attn", "wqkv", "query_key_value",
}  # fmt: skip
_ATTN_OUT_NAMES = {"o", "o_proj", "out_proj", "wo", "dense", "c_proj", "proj"}
_MLP_IN_NAMES = {"gate", "up", "gate_proj", "up_proj", "w1", "w3", "fc", "fc1", "fc_in", "c_fc", "gate_up",
                 "gate_up_proj", "dense_h_to_4h"}  # fmt: skip
_MLP_OUT_NAMES = {"down", "down_proj", "w2", "fc2", "fc_out", "c_proj", "proj", "dense_4h_to_h"}
_ROUTER_NAMES = {"router", "gate_router"}
_EXPERT_IN_NAMES = {"gate_up", "gate_up_proj", "w13", "gate_proj", "up_proj", "w1", "w3"}
_EXPERT_OUT_NAMES = {"down", "down_proj", "w2"}
_FUSED_GATE_UP = {"gate_up", "gate_up_proj"}
_ATTENTION_CONTEXT = ("attn", "attention")
_MLP_CONTEXT = ("mlp", "ffn", "feed_forward", "moe")


class UnclaimedParamsError(ConfigError):
    """Trainable parameters no rule claims: `params` holds each one's name and shape."""

    def __init__(self, params: list[tuple[str, tuple[int, ...]]]) -> None:
        self.params = params
        listed = ", ".join(f"{name} {shape}" for name, shape in params)
        super().__init__(
            f"No parameter class claims: {listed}. Map them explicitly, e.g. build_optimizer(model, ..., "
            "mapping={'<name pattern>': 'hidden'}); classes: " + ", ".join(c.value for c in ParamClass)
        )


@dataclass(frozen=True)
class _Site:
    """One place a parameter appears: the module that holds it and the attribute name."""

    module_name: str
    module: nn.Module
    parent: nn.Module | None
    attribute: str


def classify(model: nn.Module, *, mapping: Mapping[str, Mapped] | None = None) -> dict[str, ParamClass]:
    """{parameter name: ParamClass} for every trainable parameter of `model`."""
    return {name: info.param_class for name, info in describe_params(model, mapping=mapping).items()}


def describe_params(model: nn.Module, *, mapping: Mapping[str, Mapped] | None = None) -> dict[str, ParamInfo]:
    """Class and layout of every trainable parameter, keyed by `model.named_parameters()` names."""
    sites = _sites(model)
    infos: dict[str, ParamInfo] = {}
    unclaimed: list[tuple[str, tuple[int, ...]]] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        mapped = _from_mapping(name, mapping or {})
        found = mapped or _infer(name, p, sites[id(p)])
        if found is None:
            unclaimed.append((name, tuple(p.shape)))
            continue
        param_class, layout = found
        parse_layout(layout).check(tuple(p.shape), name)
        infos[name] = ParamInfo(name, param_class, layout, tuple(p.shape))
    if unclaimed:
        raise UnclaimedParamsError(unclaimed)
    return infos


def _sites(model: nn.Module) -> dict[int, list[_Site]]:
    # Every (module, attribute) that holds each parameter, tied ones included.
    modules = dict(model.named_modules(remove_duplicate=False))
    sites: dict[int, list[_Site]] = {}
    for module_name, module in model.named_modules(remove_duplicate=False):
        parent = modules.get(module_name.rpartition(".")[0]) if module_name else None
        for attribute, p in module.named_parameters(recurse=False, remove_duplicate=False):
            sites.setdefault(id(p), []).append(_Site(module_name, module, parent, attribute))
    return sites


def _from_mapping(name: str, mapping: Mapping[str, Mapped]) -> tuple[ParamClass, str] | None:
    for pattern, target in mapping.items():
        if not fnmatchcase(name, pattern):
            continue
        if isinstance(target, tuple):
            return _param_class(target[0], pattern), parse_layout(target[1]).spec
        param_class = _param_class(target, pattern)
        return param_class, "vector" if param_class == ParamClass.VECTOR else "matrix"
    return None


def _param_class(value: str | ParamClass, pattern: str) -> ParamClass:
    try:
        return ParamClass(value)
    except ValueError:
        valid = ", ".join(c.value for c in ParamClass)
        raise ConfigError(
            f"Invalid class {value!r} for mapping {pattern!r}; valid classes: {valid}"
        ) from None


def _infer(name: str, p: Tensor, sites: list[_Site]) -> tuple[ParamClass, str] | None:
    roles = {role for role in (_infer_site(p, site) for site in sites) if role is not None}
    classes = {role[0] for role in roles}
    embedding_like = {ParamClass.EMBEDDING, ParamClass.LM_HEAD}
    if len(sites) > 1 and classes == embedding_like:
        return ParamClass.TIED_EMBEDDING, "matrix"
    if len(roles) == 1:
        return roles.pop()
    if roles:
        raise ConfigError(f"Parameter {name} is shared by modules with different roles: {sorted(roles)}")
    return None


def _infer_site(p: Tensor, site: _Site) -> tuple[ParamClass, str] | None:
    module, attribute = site.module, site.attribute
    leaf = site.module_name.rpartition(".")[2]
    declared = getattr(module, "symopt_layouts", {}).get(attribute)
    if p.ndim <= 1 or attribute.endswith("bias") or attribute == "sinks":
        return ParamClass.VECTOR, "vector"
    if isinstance(module, nn.Embedding) or (
        attribute == "weight" and leaf in _EMBEDDING_NAMES | _POSITION_NAMES
    ):
        position = leaf in _POSITION_NAMES
        return (ParamClass.POSITION if position else ParamClass.EMBEDDING), declared or "matrix"
    if attribute == "weight":
        return _infer_weight(p, site, leaf, declared)
    if _is_experts(module, leaf):
        return _infer_experts(module, attribute, declared)
    return None


def _infer_weight(p: Tensor, site: _Site, leaf: str, declared: str | None) -> tuple[ParamClass, str] | None:
    # Conv1D (GPT-2 in transformers) stores its weight as (in, out).
    stored = declared or ("matrix.t" if type(site.module).__name__ == "Conv1D" else "matrix")
    context = site.module_name.lower()
    parent = site.parent
    in_attention = any(word in context.rpartition(".")[0].rpartition(".")[2] for word in _ATTENTION_CONTEXT)
    if leaf in _HEAD_NAMES and not in_attention:
        return ParamClass.LM_HEAD, stored
    if leaf in _ROUTER_NAMES or (leaf == "gate" and parent is not None and _has_experts(parent)):
        return ParamClass.ROUTER, stored
    head_dim = getattr(parent, "head_dim", None) if in_attention else None
    if in_attention and leaf in _QKV_NAMES:
        return ParamClass.ATTN_QKV, declared or _heads(stored, "heads_rows", head_dim)
    if in_attention and leaf in _ATTN_OUT_NAMES:
        return ParamClass.ATTN_OUT, declared or _heads(stored, "heads_cols", head_dim)
    in_mlp = any(word in context for word in _MLP_CONTEXT)
    if leaf in _MLP_IN_NAMES and (in_mlp or leaf not in {"fc", "gate", "up"}):
        fused = leaf in _FUSED_GATE_UP and stored == "matrix"
        return ParamClass.MLP_IN, declared or ("gate_up.concat" if fused else stored)
    if leaf in _MLP_OUT_NAMES and in_mlp:
        return ParamClass.MLP_OUT, stored
    if leaf in _QKV_NAMES - {"q", "k", "v"}:
        return ParamClass.ATTN_QKV, stored
    return None


def _heads(stored: str, kind: str, head_dim: object) -> str:
    # Head-wise layouts need the head size and the (out, in) storage; otherwise the whole matrix.
    if isinstance(head_dim, int) and head_dim > 0 and stored == "matrix":
        return f"{kind}.{head_dim}"
    return stored


def _is_experts(module: nn.Module, leaf: str) -> bool:
    return leaf == "experts" or type(module).__name__.endswith("Experts")


def _has_experts(module: nn.Module) -> bool:
    return any(_is_experts(child, name) for name, child in module.named_children())


def _infer_experts(module: nn.Module, attribute: str, declared: str | None) -> tuple[ParamClass, str] | None:
    # gpt-oss keeps its experts as (in, out) with gate/up interleaved on the last dim.
    gpt_oss = type(module).__name__.startswith("GptOss")
    if attribute in _EXPERT_IN_NAMES:
        fused = attribute in _FUSED_GATE_UP
        default = ("gate_up.interleave.t" if gpt_oss else "gate_up.concat") if fused else "matrix"
        layout = declared or default
        _check_expert_shape(module, attribute, layout, fused_in=True)
        return ParamClass.EXPERT_IN, layout
    if attribute in _EXPERT_OUT_NAMES:
        layout = declared or ("matrix.t" if gpt_oss else "matrix")
        _check_expert_shape(module, attribute, layout, fused_in=False)
        return ParamClass.EXPERT_OUT, layout
    return None


def _check_expert_shape(module: nn.Module, attribute: str, layout: str, *, fused_in: bool) -> None:
    # Where the module says its sizes, make sure the assumed storage order agrees with them.
    hidden = getattr(module, "hidden_size", None) or getattr(module, "hidden_dim", None)
    inner = getattr(module, "intermediate_size", None) or getattr(module, "intermediate_dim", None)
    if not (isinstance(hidden, int) and isinstance(inner, int)):
        return
    shape = tuple(getattr(module, attribute).shape[-2:])
    out, inp = (2 * inner if fused_in else hidden), (hidden if fused_in else inner)
    expected = (inp, out) if layout.endswith(".t") else (out, inp)
    if shape != expected:
        raise ConfigError(
            f"Expert tensor {attribute} of {type(module).__name__} has shape {shape}, but layout "
            f"{layout!r} with hidden={hidden}, intermediate={inner} expects {expected}; pass a mapping "
            "with the right layout"
        )
