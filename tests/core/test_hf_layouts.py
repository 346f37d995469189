"""transformers models as build_optimizer meets them (issue 23), tiny and randomly initialised.

Every parameter lands in the class and layout its module says (head-wise attention, GPT-2's
fused c_attn included; per-expert stacks in the orientation transformers stores them; softmax
routers `router`, sigmoid ones `sigmoid_router`), or is refused by name. Then, on the real
parameters and through build_optimizer, each class's update transforms as its symmetry group
says (ALGORITHMS.md 0.3), in float64: D(g·G) = g·D(G), shifts for centered classes, and negative
controls that a wrong layout would pass (mixing heads, shifting a sigmoid router). The group
elements are built from the model's own sizes, never from the layout under test.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from symopt_core import ConfigError, build_optimizer, describe_params
from symopt_core.models.hf_check import describe
from symopt_core.params import ParamClass
from symopt_core.params.classify import RefusedParamsError
from symopt_core.presets import param_groups
from symopt_core.spec import load_spec

from .group_actions import random_orthogonal, random_permutation, relative_error
from .hf_models import build

C = ParamClass
REQUIRED = ["gpt2", "llama", "mistral", "phi3", "mixtral", "qwen2-moe", "deepseek-v3"]
STORED_IN_OUT = ["gpt-oss", "aria", "ergo"]  # experts stored [E, in, out]
PRESETS = ["symmetric", "symmetric-hybrid"]

_L0, _L1 = "model.layers.0.", "model.layers.1."
_DENSE = {
    _L0 + "self_attn.q_proj.weight": (C.ATTN_QKV, "heads_rows.8"),
    _L0 + "self_attn.k_proj.weight": (C.ATTN_QKV, "heads_rows.8"),
    _L0 + "self_attn.v_proj.weight": (C.ATTN_QKV, "heads_rows.8"),
    _L0 + "self_attn.o_proj.weight": (C.ATTN_OUT, "heads_cols.8"),
    _L0 + "mlp.gate_proj.weight": (C.MLP_IN, "matrix"),
    _L0 + "mlp.up_proj.weight": (C.MLP_IN, "matrix"),
    _L0 + "mlp.down_proj.weight": (C.MLP_OUT, "matrix"),
    "model.embed_tokens.weight": (C.EMBEDDING, "matrix"),
    "lm_head.weight": (C.LM_HEAD, "matrix"),
}
_ATTENTION = {k: v for k, v in _DENSE.items() if "self_attn" in k}
_EXPERTS = {
    _L0 + "mlp.gate.weight": (C.ROUTER, "matrix"),
    _L0 + "mlp.experts.gate_up_proj": (C.EXPERT_IN, "gate_up.concat"),
    _L0 + "mlp.experts.down_proj": (C.EXPERT_OUT, "matrix"),
}
# (class, layout) of the parameters that tell each family apart.
EXPECTED: dict[str, dict[str, tuple[ParamClass, str]]] = {
    "gpt2": {
        "transformer.wte.weight": (C.TIED_EMBEDDING, "matrix"),
        "transformer.wpe.weight": (C.POSITION, "matrix"),
        # Conv1D stores (in, out): q, k and v heads are [8, 32] blocks of the logical [96, 32].
        "transformer.h.0.attn.c_attn.weight": (C.ATTN_QKV, "heads_rows.8.t"),
        "transformer.h.0.attn.c_proj.weight": (C.ATTN_OUT, "heads_cols.8.t"),
        "transformer.h.0.mlp.c_fc.weight": (C.MLP_IN, "matrix.t"),
        "transformer.h.0.mlp.c_proj.weight": (C.MLP_OUT, "matrix.t"),
    },
    "llama": _DENSE,
    "mistral": _DENSE,
    "phi3": {
        _L0 + "self_attn.qkv_proj.weight": (C.ATTN_QKV, "heads_rows.8"),
        _L0 + "self_attn.o_proj.weight": (C.ATTN_OUT, "heads_cols.8"),
        _L0 + "mlp.gate_up_proj.weight": (C.MLP_IN, "gate_up.concat"),
        _L0 + "mlp.down_proj.weight": (C.MLP_OUT, "matrix"),
    },
    "mixtral": {**_ATTENTION, **_EXPERTS},
    "qwen2-moe": {
        **_ATTENTION,
        **_EXPERTS,
        _L0 + "self_attn.q_proj.bias": (C.VECTOR, "vector"),
        # sigmoid(shared_expert_gate(x)) · shared_expert(x): one sigmoid gate, no shift symmetry.
        _L0 + "mlp.shared_expert_gate.weight": (C.SIGMOID_ROUTER, "matrix"),
        _L0 + "mlp.shared_expert.gate_proj.weight": (C.MLP_IN, "matrix"),
    },
    "deepseek-v3": {
        # Multi-head latent attention: latent down-projections whole, q/kv up-projections per head
        # (q/k heads 4 nope + 4 rope, kv_b blocks [k_nope; v] = 4 + 8), o per v head (8).
        _L0 + "self_attn.q_a_proj.weight": (C.ATTN_QKV, "matrix"),
        _L0 + "self_attn.q_b_proj.weight": (C.ATTN_QKV, "heads_rows.8"),
        _L0 + "self_attn.kv_a_proj_with_mqa.weight": (C.ATTN_QKV, "matrix"),
        _L0 + "self_attn.kv_b_proj.weight": (C.ATTN_QKV, "heads_rows.12"),
        _L0 + "self_attn.o_proj.weight": (C.ATTN_OUT, "heads_cols.8"),
        _L0 + "mlp.gate_proj.weight": (C.MLP_IN, "matrix"),
        _L1 + "mlp.gate.weight": (C.SIGMOID_ROUTER, "matrix"),  # sigmoid scores
        _L1 + "mlp.experts.gate_up_proj": (C.EXPERT_IN, "gate_up.concat"),
        _L1 + "mlp.experts.down_proj": (C.EXPERT_OUT, "matrix"),
        _L1 + "mlp.shared_experts.down_proj.weight": (C.MLP_OUT, "matrix"),
    },
    "gpt-oss": {
        _L0 + "mlp.router.weight": (C.ROUTER, "matrix"),
        _L0 + "mlp.experts.gate_up_proj": (C.EXPERT_IN, "gate_up.interleave.t"),
        _L0 + "mlp.experts.down_proj": (C.EXPERT_OUT, "matrix.t"),
    },
    "aria": {
        _L0 + "mlp.router.weight": (C.ROUTER, "matrix"),  # top-k logits, then softmax
        _L0 + "mlp.experts.gate_up_proj": (C.EXPERT_IN, "gate_up.concat.t"),
        _L0 + "mlp.experts.down_proj": (C.EXPERT_OUT, "matrix.t"),
    },
    "ergo": {
        _L1 + "mlp.gate.linear.weight": (C.SIGMOID_ROUTER, "matrix"),
        _L1 + "mlp.experts.up_proj": (C.EXPERT_IN, "matrix.t"),  # relu² experts: no gate
        _L1 + "mlp.experts.down_proj": (C.EXPERT_OUT, "matrix.t"),
        _L1 + "mlp.experts.post_expert_norm.weight": (C.VECTOR, "vector"),  # per-expert gains
        _L0 + "self_attn.qkv_proj.weight": (C.ATTN_QKV, "heads_rows.8"),
    },
}


@pytest.mark.parametrize("family", REQUIRED + STORED_IN_OUT)
def test_each_family_classifies_as_its_modules_say(family):
    model = build(family)
    infos = describe_params(model)
    assert sorted(infos) == sorted(n for n, p in model.named_parameters() if p.requires_grad)
    for name, (param_class, layout) in EXPECTED[family].items():
        assert (infos[name].param_class, infos[name].layout) == (param_class, layout), name
    for name, info in infos.items():  # attention is head-wise wherever the module has heads
        latent = "_a_proj" in name
        if info.param_class in (C.ATTN_QKV, C.ATTN_OUT) and not latent:
            assert info.layout.startswith(("heads_rows", "heads_cols")), (name, info.layout)
    groups = param_groups(model, "symmetric")
    rules = {g["param_class"]: g["rule"] for g in groups}
    assert not rules.get("sigmoid_router", "").startswith("centered")
    if "router" in rules:
        assert rules["router"].startswith("centered")


# ---- the symmetry of each class, acted on the real parameters ---------------------------------


class Knowledge:
    """What the model's own sizes say about one parameter, independently of the classifier:
    whether it is stored (in, out), its head size, how a fused gate/up stacks its halves."""

    def __init__(self, model: nn.Module, name: str, shape: tuple[int, ...]) -> None:
        config = model.config
        hidden = config.hidden_size
        module = model.get_submodule(name.rpartition(".")[0])
        attribute = name.rpartition(".")[2]
        leaf = name.rpartition(".")[0].rpartition(".")[2]
        self.stack = len(shape) == 3
        if self.stack:  # the hidden size sits on the input side of gate/up, the output side of down
            self.transposed = shape[1] == hidden if attribute != "down_proj" else shape[2] == hidden
        else:
            self.transposed = type(module).__name__ == "Conv1D"
        interleaved = getattr(config, "model_type", "") == "gpt_oss"
        fused = "gate_up_proj" in (attribute, leaf)
        self.fused = ("interleave" if interleaved else "concat") if fused else None
        self.head = self._head_size(config, leaf)
        # Gates that are sigmoid(x·w) in the model's code: DeepSeek-V3's and Ergo's routers,
        # Qwen2-MoE's shared-expert gate. Their updates must see the mean row.
        sigmoid_routers = getattr(config, "model_type", "") in ("deepseek_v3", "ergo")
        self.sigmoid = leaf == "shared_expert_gate" or (sigmoid_routers and ".mlp.gate." in name)

    @staticmethod
    def _head_size(config, leaf: str) -> int | None:
        if hasattr(config, "qk_nope_head_dim"):  # MLA
            sizes = {
                "q_b_proj": config.qk_nope_head_dim + config.qk_rope_head_dim,
                "kv_b_proj": config.qk_nope_head_dim + config.v_head_dim,
                "o_proj": config.v_head_dim,
            }
            return sizes.get(leaf)
        head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        heads = {"q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "c_attn", "c_proj"}
        return head if leaf in heads else None  # read only for attention classes

    def logical(self, G: Tensor) -> Tensor:
        return G.mT if self.transposed else G

    def stored(self, L: Tensor) -> Tensor:
        return L.mT if self.transposed else L


def _heads_element(size: int, head: int, gen: torch.Generator) -> Tensor:
    # Permute heads and rotate each with its own O(head): the head-wise group on that side.
    blocks = [random_orthogonal(head, gen) for _ in range(size // head)]
    permuted = torch.kron(random_permutation(size // head, gen), torch.eye(head, dtype=torch.float64))
    return permuted @ torch.block_diag(*blocks)


def _neurons_element(size: int, fused: str | None, gen: torch.Generator) -> Tensor:
    # One permutation of hidden neurons, the same for the gate and up halves of a fused tensor.
    if fused is None:
        return random_permutation(size, gen)
    P = random_permutation(size // 2, gen)
    eye2 = torch.eye(2, dtype=torch.float64)
    return torch.block_diag(P, P) if fused == "concat" else torch.kron(P, eye2)


def _element(param_class: ParamClass, m: int, n: int, know: Knowledge, gen) -> tuple[Tensor, Tensor]:
    """(A, B) of one matrix of the class's group, acting as L ↦ A L Bᵀ on its logical (out, in)."""
    if param_class == C.ATTN_QKV:
        rows = _heads_element(m, know.head, gen) if know.head else random_orthogonal(m, gen)
        return rows, random_orthogonal(n, gen)
    if param_class == C.ATTN_OUT:
        cols = _heads_element(n, know.head, gen) if know.head else random_orthogonal(n, gen)
        return random_orthogonal(m, gen), cols
    if param_class in (C.MLP_IN, C.EXPERT_IN):
        return _neurons_element(m, know.fused, gen), random_orthogonal(n, gen)
    if param_class in (C.MLP_OUT, C.EXPERT_OUT):
        return random_orthogonal(m, gen), random_permutation(n, gen)
    # embedding, tied embedding, LM head, routers: permute rows (tokens, experts), rotate d
    return random_permutation(m, gen), random_orthogonal(n, gen)


class Action:
    """g for one parameter: per-matrix (A, B) and, for expert stacks, a permutation of experts."""

    def __init__(self, param_class: ParamClass, shape: tuple[int, ...], know: Knowledge, gen) -> None:
        self.know = know
        logical = know.logical(torch.empty(shape))
        *batch, m, n = logical.shape
        count = batch[0] if batch else 1
        pairs = [_element(param_class, m, n, know, gen) for _ in range(count)]
        self.A = torch.stack([a for a, _ in pairs]) if batch else pairs[0][0]
        self.B = torch.stack([b for _, b in pairs]) if batch else pairs[0][1]
        self.experts = torch.randperm(count, generator=gen) if batch else None

    def __call__(self, G: Tensor) -> Tensor:
        L = self.A @ self.know.logical(G) @ self.B.mT
        if self.experts is not None:
            L = L[self.experts]
        return self.know.stored(L)


def _updates(model: nn.Module, preset: str, grads: dict[str, Tensor]) -> dict[str, Tensor]:
    """The first step's update (W before − W after) of every parameter given these gradients."""
    params = dict(model.named_parameters())
    before = {name: p.detach().clone() for name, p in params.items()}
    optimizer = build_optimizer(model, preset, weight_decay=0.0)
    for name, p in params.items():
        p.grad = grads[name].clone()
    optimizer.step()
    with torch.no_grad():
        moved = {name: before[name] - p for name, p in params.items()}
        for name, p in params.items():
            p.copy_(before[name])
            p.grad = None
    return moved


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("family", REQUIRED + STORED_IN_OUT)
def test_updates_transform_with_each_class_group_on_the_real_model(family, preset):
    model = build(family).double()
    gen = torch.Generator().manual_seed(1)
    infos = describe_params(model)
    matrices = {n: i for n, i in infos.items() if i.param_class not in (C.VECTOR, C.POSITION)}
    know = {n: Knowledge(model, n, i.shape) for n, i in matrices.items()}
    grads = {n: torch.randn(p.shape, dtype=torch.float64, generator=gen) for n, p in model.named_parameters()}
    actions = {n: Action(i.param_class, i.shape, know[n], gen) for n, i in matrices.items()}

    D = _updates(model, preset, grads)
    moved = _updates(model, preset, {n: actions[n](G) if n in actions else G for n, G in grads.items()})
    for name, act in actions.items():  # (E): D(g·G) = g·D(G)
        assert D[name].abs().max() > 0, name
        assert relative_error(moved[name], act(D[name])) < 1e-9, (name, infos[name].layout)

    # Shifts G + 1vᵀ (v per matrix): gauge for centered classes, signal for sigmoid routers.
    shifted_classes = (C.ROUTER, C.LM_HEAD, C.SIGMOID_ROUTER)
    shifted = dict(grads)
    for name, info in matrices.items():
        if info.param_class in shifted_classes or know[name].sigmoid:
            L = know[name].logical(grads[name])
            v = torch.randn(L.shape[-1], dtype=torch.float64, generator=gen)
            shifted[name] = know[name].stored(L + v)
    after_shift = _updates(model, preset, shifted)
    for name, info in matrices.items():
        if know[name].sigmoid:  # uncentered: the mean row of the gradient moves it
            assert relative_error(after_shift[name], D[name]) > 1e-2, name
        elif info.param_class in (C.ROUTER, C.LM_HEAD):  # (S1) and (S2)
            assert relative_error(after_shift[name], D[name]) < 1e-9, name
            column_sums = know[name].logical(D[name]).sum(-2)
            assert column_sums.abs().max() < 1e-9 * D[name].abs().max(), name

    # Negative control: a generic rotation across all heads (where the model has heads) must not
    # commute with the update, as it would with a whole-matrix one.
    mixed, mixers = dict(grads), {}
    for name, info in matrices.items():
        L = know[name].logical(grads[name])
        rows = info.param_class == C.ATTN_QKV
        side = L.shape[-2] if rows else L.shape[-1]
        if info.param_class in (C.ATTN_QKV, C.ATTN_OUT) and know[name].head and side > know[name].head:
            Q = random_orthogonal(side, gen)
            mixers[name] = (rows, Q)
            mixed[name] = know[name].stored(Q @ L if rows else L @ Q.mT)
    after_mix = _updates(model, preset, mixed)
    for name, (rows, Q) in mixers.items():
        L = know[name].logical(D[name])
        expected = know[name].stored(Q @ L if rows else L @ Q.mT)
        assert relative_error(after_mix[name], expected) > 1e-3, name


# ---- refusals ------------------------------------------------------------------------------------


def test_a_one_row_matrix_in_a_centered_class_is_refused_by_name():
    model = build("qwen2-moe")
    gate = "model.layers.0.mlp.shared_expert_gate.weight"
    for target in ("router", "lm_head"):
        with pytest.raises(RefusedParamsError) as caught:
            describe_params(model, mapping={"*.shared_expert_gate.weight": target})
        message = str(caught.value)
        assert f"{gate} (1, 32)" in message
        assert f"a one-row {target} matrix" in message
        assert "'sigmoid_router'" in message
    # Unmapped it is a sigmoid gate, and it moves.
    assert describe_params(model)[gate].param_class == C.SIGMOID_ROUTER
    grads = {n: torch.ones_like(p) for n, p in model.named_parameters()}
    assert _updates(model, "symmetric", grads)[gate].abs().min() > 0


def _aria_experts(model: nn.Module) -> nn.Module:
    return model.get_submodule("model.layers.0.mlp.experts")


def test_experts_that_do_not_say_how_they_are_stored_are_refused_by_name():
    model = build("aria")
    for layer in (0, 1):
        del model.get_submodule(f"model.layers.{layer}.mlp.experts").is_transposed
    with pytest.raises(RefusedParamsError) as caught:
        describe_params(model)
    message = str(caught.value)
    assert "model.layers.0.mlp.experts.gate_up_proj (4, 32, 48)" in message
    assert "model.layers.1.mlp.experts.down_proj (4, 24, 32)" in message
    assert "AriaExperts does not say how it stores its experts" in message
    mapping = {
        "*.experts.gate_up_proj": ("expert_in", "gate_up.concat.t"),
        "*.experts.down_proj": ("expert_out", "matrix.t"),
    }
    infos = describe_params(model, mapping=mapping)
    assert infos["model.layers.1.mlp.experts.gate_up_proj"].layout == "gate_up.concat.t"


def test_expert_flags_or_layouts_that_contradict_the_sizes_are_refused():
    model = build("aria")
    _aria_experts(model).is_transposed = False  # [E, H, 2I] read as [E, 2I, H]
    read = r"experts\.gate_up_proj \(4, 32, 48\).*\(out, in\) = \(32, 48\)"
    with pytest.raises(RefusedParamsError, match=read):
        describe_params(model)
    model = build("mixtral")  # a mapping that reads [E, 2I, H] as stored (in, out)
    with pytest.raises(RefusedParamsError, match="hidden=32, intermediate=24"):
        describe_params(model, mapping={"*.experts.gate_up_proj": ("expert_in", "gate_up.concat.t")})


class _Experts(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.down_proj = nn.Parameter(torch.zeros(4, 8, 6))


class _OpaqueMoE(nn.Module):
    """A router whose gates are neither softmax nor sigmoid of its logits (to the reader)."""

    def __init__(self) -> None:
        super().__init__()
        self.router = nn.Linear(8, 4, bias=False)
        self.experts = _Experts()

    def forward(self, x: Tensor) -> Tensor:
        return self.router(x).exp()


def test_a_router_whose_gating_cannot_be_read_and_unflagged_experts_are_refused():
    model = nn.Sequential(_OpaqueMoE())
    with pytest.raises(RefusedParamsError) as caught:
        describe_params(model)
    message = str(caught.value)
    assert "0.router.weight (4, 8): a router (Linear) whose gating cannot be read" in message
    assert "0.experts.down_proj (4, 8, 6): _Experts does not say" in message
    mapping = {"*.router.weight": "sigmoid_router", "*.experts.down_proj": ("expert_out", "matrix")}
    assert describe_params(model, mapping=mapping)["0.router.weight"].param_class == C.SIGMOID_ROUTER


def test_describe_says_a_sigmoid_router_is_one_and_not_centered():
    config = {
        "model_type": "deepseek_v3", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 4, "intermediate_size": 48, "moe_intermediate_size": 24,
        "n_routed_experts": 4, "num_experts_per_tok": 2, "n_group": 1, "topk_group": 1,
        "first_k_dense_replace": 1, "q_lora_rank": 16, "kv_lora_rank": 16, "qk_rope_head_dim": 4,
        "qk_nope_head_dim": 4, "v_head_dim": 8, "max_position_embeddings": 64,
    }  # fmt: skip
    data = {"corpus": "shakespeare", "seq_len": 32}
    spec = load_spec({"model": {"family": "hf", "config": config}, "data": data})
    for preset in PRESETS:
        rows = {row["name"]: row for row in describe(spec.model, preset, vocab_size=65)}  # on meta
        router = rows["model.layers.1.mlp.gate.weight"]
        assert router["class"] == "sigmoid_router"
        assert not router["rule"].startswith("centered")
        assert rows["model.layers.0.self_attn.kv_b_proj.weight"]["layout"] == "heads_rows.12"


@pytest.mark.parametrize("preset", ["muon", "normuon"])
def test_whole_matrix_presets_keep_gpt2_attention_stored_in_out(preset):
    groups = param_groups(build("gpt2"), preset)
    layouts = {g["param_class"]: g["layout"] for g in groups}
    assert layouts["attn_qkv"] == layouts["attn_out"] == "matrix.t"


def test_a_mapped_layout_must_fit_the_tensor():
    with pytest.raises(ConfigError, match="are not whole heads"):
        describe_params(build("gpt2"), mapping={"*.c_attn.weight": ("attn_qkv", "heads_rows.7.t")})
