"""Explicit classification of a model's parameters by module names, never by tensor rank alone.

Works on symopt's reference models and on Hugging Face `transformers` layouts (DESIGN.md):
dense `self_attn.{q,k,v,o}_proj` (and fused `qkv_proj`, GPT-2's `c_attn`, DeepSeek's latent
`q_a/q_b/kv_a/kv_b` projections), each viewed per head where the attention module says its head
sizes; `mlp.{gate,up,down}_proj`; GPT-2 `Conv1D` weights stored (in, out); MoE routers
`mlp.gate` (beside an `experts` module) or `mlp.router`, split by gating: softmax routers are
`router`, sigmoid ones `sigmoid_router` (params/gating.py); fused expert stacks whose storage
the experts module states with transformers' `is_transposed` / `is_concatenated` flags. A module
may declare layouts of its own parameters with a `symopt_layouts = {"param": "layout"}`
attribute. A tied embedding / LM head is detected by identity of the shared tensor.

What is not known is not guessed: a trainable parameter no rule claims is an
UnclaimedParamsError naming it, and one a rule would have to guess about (experts that do not
say how they are stored, a router whose gating cannot be read, a one-row matrix in a centered
class) is a RefusedParamsError naming it and why; `mapping` (fnmatch pattern -> class, or ->
(class, layout)) claims either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

from torch import Tensor, nn

from ..errors import ConfigError
from ..optim.layout import parse_layout
from .classes import ParamClass, ParamInfo
from .gating import router_gating

__all__ = ["RefusedParamsError", "UnclaimedParamsError", "classify", "describe_params"]

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
    "qkv", "qkv_proj", "c_attn", "wqkv", "query_key_value", "q_b_proj", "kv_b_proj",
}  # fmt: skip
_QK_NAMES = {"q", "k", "q_proj", "k_proj", "query", "key", "wq", "wk", "q_b_proj"}
_V_NAMES = {"v", "v_proj", "value", "wv"}
# Multi-head latent attention (DeepSeek-V2/V3): the shared down-projections to the latent q and
# kv (plus the shared RoPE key) have no head structure; q_b_proj / kv_b_proj expand per head.
_LATENT_NAMES = {"q_a_proj", "kv_a_proj_with_mqa", "kv_a_proj"}
_ATTN_OUT_NAMES = {"o", "o_proj", "out_proj", "wo", "dense", "c_proj", "proj"}
_MLP_IN_NAMES = {"gate", "up", "gate_proj", "up_proj", "w1", "w3", "fc", "fc1", "fc_in", "c_fc", "gate_up",
                 "gate_up_proj", "dense_h_to_4h"}  # fmt: skip
_MLP_OUT_NAMES = {"down", "down_proj", "w2", "fc2", "fc_out", "c_proj", "proj", "dense_4h_to_h"}
_ROUTER_NAMES = {"router", "gate_router"}
_SHARED_GATE_NAMES = {"shared_expert_gate"}  # Qwen2-MoE / Qwen3-Next: sigmoid(gate(x)) · shared(x)
_EXPERT_IN_NAMES = {"gate_up", "gate_up_proj", "w13", "gate_proj", "up_proj", "w1", "w3"}
_EXPERT_OUT_NAMES = {"down", "down_proj", "w2"}
_FUSED_GATE_UP = {"gate_up", "gate_up_proj"}
_ATTENTION_CONTEXT = ("attn", "attention")
_MLP_CONTEXT = ("mlp", "ffn", "feed_forward", "moe")
# Classes whose rules center the rows (ALGORITHMS.md 5, 7): a one-row matrix there never moves.
_CENTERED = (ParamClass.ROUTER, ParamClass.LM_HEAD)
_LISTED = 8  # names an error lists per reason (an 80-layer model repeats each one 80 times)


class UnclaimedParamsError(ConfigError):
    """Trainable parameters no rule claims: `params` holds each one's name and shape."""

    def __init__(self, params: list[tuple[str, tuple[int, ...]]]) -> None:
        self.params = params
        listed = ", ".join(f"{name} {shape}" for name, shape in params)
        super().__init__(
            f"No parameter class claims: {listed}. Map them explicitly, e.g. build_optimizer(model, ..., "
            "mapping={'<name pattern>': 'hidden'}); classes: " + ", ".join(c.value for c in ParamClass)
        )


class RefusedParamsError(ConfigError):
    """Parameters a rule would have to guess about: `params` holds each one's name, shape and why."""

    def __init__(self, params: list[tuple[str, tuple[int, ...], str]]) -> None:
        self.params = params
        by_reason: dict[str, list[str]] = {}
        for name, shape, reason in params:
            by_reason.setdefault(reason, []).append(f"{name} {shape}")
        parts = []
        for reason, names in by_reason.items():
            more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
            parts.append(f"{', '.join(names[:_LISTED])}{more}: {reason}")
        super().__init__("Refusing to guess the class or layout of " + "; ".join(parts))


class _RefusalError(Exception):
    """Raised while inferring one parameter; describe_params adds its name and shape."""


@dataclass(frozen=True)
class _Site:
    """One place a parameter appears: the module that holds it, the attribute name, and the
    module's ancestors (name, module), nearest first."""

    module_name: str
    module: nn.Module
    ancestors: tuple[tuple[str, nn.Module], ...]
    attribute: str

    @property
    def parent(self) -> nn.Module | None:
        return self.ancestors[0][1] if self.ancestors else None

    def leaf(self, up: int = 0) -> str:
        """The attribute name of the module `up` levels above the holder (0: the holder)."""
        if up > len(self.ancestors):
            return ""
        name = self.ancestors[up - 1][0] if up else self.module_name
        return name.rpartition(".")[2]

    @property
    def chain(self) -> list[nn.Module]:
        return [self.module, *(module for _, module in self.ancestors)]


def classify(model: nn.Module, *, mapping: Mapping[str, Mapped] | None = None) -> dict[str, ParamClass]:
    """{parameter name: ParamClass} for every trainable parameter of `model`."""
    return {name: info.param_class for name, info in describe_params(model, mapping=mapping).items()}


def describe_params(model: nn.Module, *, mapping: Mapping[str, Mapped] | None = None) -> dict[str, ParamInfo]:
    """Class and layout of every trainable parameter, keyed by `model.named_parameters()` names.

    Raises RefusedParamsError (first) and UnclaimedParamsError, both ConfigErrors naming every
    parameter concerned."""
    sites = _sites(model)
    infos: dict[str, ParamInfo] = {}
    unclaimed: list[tuple[str, tuple[int, ...]]] = []
    refused: list[tuple[str, tuple[int, ...], str]] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        shape = tuple(p.shape)
        try:
            mapped = _from_mapping(name, mapping or {})
            if mapped is not None:
                _check_mapped_experts(*mapped, shape, sites[id(p)])
            found = mapped or _infer(name, p, sites[id(p)])
            if found is None:
                unclaimed.append((name, shape))
                continue
            param_class, layout = found
            parse_layout(layout).check(shape, name)
            _check_centered(param_class, layout, shape)
        except _RefusalError as refusal:
            refused.append((name, shape, str(refusal)))
            continue
        infos[name] = ParamInfo(name, param_class, layout, shape)
    if refused:
        raise RefusedParamsError(refused)
    if unclaimed:
        raise UnclaimedParamsError(unclaimed)
    return infos


def _sites(model: nn.Module) -> dict[int, list[_Site]]:
    # Every (module, attribute) that holds each parameter, tied ones included.
    modules = dict(model.named_modules(remove_duplicate=False))
    sites: dict[int, list[_Site]] = {}
    for module_name, module in model.named_modules(remove_duplicate=False):
        ancestors = []
        name = module_name
        while name:
            name = name.rpartition(".")[0]
            ancestors.append((name, modules[name]))
        for attribute, p in module.named_parameters(recurse=False, remove_duplicate=False):
            sites.setdefault(id(p), []).append(_Site(module_name, module, tuple(ancestors), attribute))
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


def _check_mapped_experts(
    param_class: ParamClass, layout: str, shape: tuple[int, ...], sites: list[_Site]
) -> None:
    # A mapped expert layout meets the same size check as an inferred one: a mapping that reads
    # [E, 2I, H] as stored (in, out) would split each expert along the hidden dim.
    if param_class in (ParamClass.EXPERT_IN, ParamClass.EXPERT_OUT):
        for site in sites:
            if _is_experts(site.module, site.leaf()):
                _check_expert_shape(site.module, param_class, layout, shape)


def _check_centered(param_class: ParamClass, layout: str, shape: tuple[int, ...]) -> None:
    # Π = I − 11ᵀ/m is zero for m = 1: centering a single row removes all of it (Qwen2-MoE's
    # shared_expert_gate [1, d] mapped to "router" would never move).
    if param_class not in _CENTERED:
        return
    rows = shape[-1] if parse_layout(layout).transposed else shape[-2]
    if rows == 1:
        raise _RefusalError(
            f"a one-row {param_class.value} matrix: its rules center the rows (subtract the mean row, "
            "here the row itself), so it would never move; map it to 'sigmoid_router' if it is a "
            "sigmoid gate (as Qwen2-MoE's shared_expert_gate), else to 'hidden'"
        )


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
    leaf = site.leaf()
    declared = getattr(module, "symopt_layouts", {}).get(attribute)
    if p.ndim <= 1 or attribute.endswith("bias") or attribute == "sinks":
        return ParamClass.VECTOR, "vector"
    if isinstance(module, nn.Embedding) or (
        attribute == "weight" and leaf in _EMBEDDING_NAMES | _POSITION_NAMES
    ):
        position = leaf in _POSITION_NAMES
        return (ParamClass.POSITION if position else ParamClass.EMBEDDING), declared or "matrix"
    if attribute == "weight" and type(module).__name__.lower().endswith("norm"):
        return ParamClass.VECTOR, "vector"  # stacked gains (Ergo's per-expert norm [E, d]): elementwise
    if attribute == "weight":
        return _infer_weight(site, leaf, declared)
    if _is_experts(module, leaf):
        return _infer_experts(module, attribute, tuple(p.shape), declared)
    return None


def _infer_weight(site: _Site, leaf: str, declared: str | None) -> tuple[ParamClass, str] | None:
    # Conv1D (GPT-2 in transformers) stores its weight as (in, out).
    stored = declared or ("matrix.t" if type(site.module).__name__ == "Conv1D" else "matrix")
    in_attention = any(word in site.leaf(1).lower() for word in _ATTENTION_CONTEXT)
    if leaf in _HEAD_NAMES and not in_attention:
        return ParamClass.LM_HEAD, stored
    router = _router_class(site, leaf)
    if router is not None:
        return router, stored
    if leaf in _SHARED_GATE_NAMES:
        sigmoid = router_gating(site.chain, config=False) == "sigmoid"
        return (ParamClass.SIGMOID_ROUTER, stored) if sigmoid else None
    if in_attention and leaf in _LATENT_NAMES:
        return ParamClass.ATTN_QKV, stored
    if in_attention and leaf in _QKV_NAMES:
        return ParamClass.ATTN_QKV, declared or _heads(stored, "heads_rows", _head_size(site.parent, leaf))
    if in_attention and leaf in _ATTN_OUT_NAMES:
        return ParamClass.ATTN_OUT, declared or _heads(stored, "heads_cols", _head_size(site.parent, leaf))
    in_mlp = any(word in site.module_name.lower() for word in _MLP_CONTEXT)
    if leaf in _MLP_IN_NAMES and (in_mlp or leaf not in {"fc", "gate", "up"}):
        fused = leaf in _FUSED_GATE_UP and stored == "matrix"
        return ParamClass.MLP_IN, declared or ("gate_up.concat" if fused else stored)
    if leaf in _MLP_OUT_NAMES and in_mlp:
        return ParamClass.MLP_OUT, stored
    if leaf in _QKV_NAMES - {"q", "k", "v"}:
        return ParamClass.ATTN_QKV, stored
    return None


def _router_class(site: _Site, leaf: str) -> ParamClass | None:
    """ROUTER or SIGMOID_ROUTER for a router weight (held by the router module itself, or by an
    nn.Linear directly inside it, as Ergo's `gate.linear`); None for any other weight."""
    routes = _routes(leaf, site.parent) or (
        isinstance(site.module, nn.Linear)
        and len(site.ancestors) > 1
        and _routes(site.leaf(1), site.ancestors[1][1])
    )
    if not routes:
        return None
    gating = router_gating(site.chain)
    if gating is None:
        raise _RefusalError(
            f"a router ({type(site.module).__name__}) whose gating cannot be read: the centered router "
            "rules assume softmax gates, which a shift of every expert's logit leaves unchanged; map it "
            "to 'router' (softmax gates) or 'sigmoid_router' (sigmoid or other unnormalized scores)"
        )
    return ParamClass.ROUTER if gating == "softmax" else ParamClass.SIGMOID_ROUTER


def _routes(leaf: str, parent: nn.Module | None) -> bool:
    return leaf in _ROUTER_NAMES or (leaf == "gate" and parent is not None and _has_experts(parent))


def _head_size(attention: nn.Module | None, leaf: str) -> int | None:
    # The attention module says its head sizes; MLA has separate q/k and v head sizes and a
    # kv_b_proj whose per-head block is [k_nope; v].
    def size(attribute: str) -> int | None:
        value = getattr(attention, attribute, None)
        return value if isinstance(value, int) and value > 0 else None

    head = size("head_dim")
    qk, v = size("qk_head_dim") or head, size("v_head_dim") or head
    if leaf == "kv_b_proj":
        nope = size("qk_nope_head_dim")
        return nope + v if nope is not None and v is not None else None
    if leaf in _ATTN_OUT_NAMES or leaf in _V_NAMES:
        return v
    if leaf in _QK_NAMES:
        return qk
    return qk if qk == v else None  # a fused qkv: one head size for all three


def _heads(stored: str, kind: str, head_dim: int | None) -> str:
    # Head-wise layouts need the head size; otherwise the whole matrix. Conv1D's (in, out)
    # storage keeps its ".t": GPT-2's c_attn is then one [hd, d] block per q, k and v head.
    if head_dim is None or stored not in ("matrix", "matrix.t"):
        return stored
    return f"{kind}.{head_dim}" + (".t" if stored == "matrix.t" else "")


def _is_experts(module: nn.Module, leaf: str) -> bool:
    return leaf == "experts" or type(module).__name__.endswith("Experts")


def _has_experts(module: nn.Module) -> bool:
    return any(_is_experts(child, name) for name, child in module.named_children())


def _infer_experts(
    module: nn.Module, attribute: str, shape: tuple[int, ...], declared: str | None
) -> tuple[ParamClass, str] | None:
    if attribute in _EXPERT_IN_NAMES:
        param_class, fused = ParamClass.EXPERT_IN, attribute in _FUSED_GATE_UP
    elif attribute in _EXPERT_OUT_NAMES:
        param_class, fused = ParamClass.EXPERT_OUT, False
    else:
        return None
    layout = declared or _expert_storage(module, fused)
    _check_expert_shape(module, param_class, layout, shape)
    return param_class, layout


def _expert_storage(module: nn.Module, fused: bool) -> str:
    # transformers' experts modules say how they store each expert (use_experts_implementation):
    # is_transposed [E, in, out] (gpt-oss, Aria, Ergo) and is_concatenated [gate; up] on the
    # output dim, else interleaved gate/up pairs (gpt-oss). A module that does not say is refused.
    transposed = getattr(module, "is_transposed", None)
    concatenated = getattr(module, "is_concatenated", None)
    if not isinstance(transposed, bool) or (fused and not isinstance(concatenated, bool)):
        raise _RefusalError(
            f"{type(module).__name__} does not say how it stores its experts (transformers' experts "
            "modules carry is_transposed and is_concatenated); map it with its layout: ['expert_in', "
            "'gate_up.concat'] for [E, 2I, H] with gate rows first, 'gate_up.concat.t' for [E, H, 2I], "
            "'gate_up.interleave.t' for [E, H, 2I] with gate/up alternating, ['expert_out', 'matrix'] "
            "for [E, H, I] or 'matrix.t' for [E, I, H]"
        )
    base = ("gate_up.concat" if concatenated else "gate_up.interleave") if fused else "matrix"
    return base + (".t" if transposed else "")


def _check_expert_shape(
    module: nn.Module, param_class: ParamClass, layout: str, shape: tuple[int, ...]
) -> None:
    # Where the module says its sizes, the storage read must put the hidden size on the input
    # side of gate/up and the output side of down: flags or a layout that disagree are refused.
    if len(shape) != 3:
        raise _RefusalError(f"an expert stack must be [experts, ·, ·]; layout {layout!r} cannot read {shape}")
    config = getattr(module, "config", None)
    hidden = _size(module, "hidden_dim", "hidden_size") or _size(config, "hidden_size")
    inner = _size(module, "intermediate_dim", "intermediate_size")
    parsed = parse_layout(layout)
    out, inp = (shape[2], shape[1]) if parsed.transposed else (shape[1], shape[2])
    if param_class == ParamClass.EXPERT_IN:
        expected = (None if inner is None else inner * (2 if parsed.kind == "gate_up" else 1), hidden)
    else:
        expected = (hidden, inner)
    if all(want is None or want == got for want, got in zip(expected, (out, inp), strict=True)):
        return
    sizes = f"hidden={hidden}" + (f", intermediate={inner}" if inner is not None else "")
    raise _RefusalError(
        f"layout {layout!r} reads each expert of {type(module).__name__} as (out, in) = ({out}, {inp}), "
        f"which does not fit its {sizes}; map it with the layout that does"
    )


def _size(owner: object, *attributes: str) -> int | None:
    for attribute in attributes:
        value = getattr(owner, attribute, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
