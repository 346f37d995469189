"""Reference models: shapes, causality, windows, tying, routing, registry, classification, MoE metrics."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from symopt_core.errors import ConfigError
from symopt_core.models import (
    MODEL_FAMILIES,
    RoutingStats,
    average_load_metrics,
    build_model,
    list_models,
    load_metrics,
)
from symopt_core.models.layers import Attention, sink_attention
from symopt_core.models.moe import MoE
from symopt_core.params import ParamClass, describe_params

FAMILIES = list(MODEL_FAMILIES)
MOE_FAMILIES = ["olmoe", "gpt-oss"]
WINDOWED = ["gemma3", "gpt-oss"]
V = 256  # the tiny sizes' vocabulary


def tiny(family, **dims):
    torch.manual_seed(0)
    return build_model(family, "tiny", **dims).eval()


def tokens(B=2, T=24, seed=1):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


# --- forward --------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_output_shapes_and_losses(family):
    model = tiny(family)
    idx = tokens(B=3, T=20)
    out = model(idx)
    assert out.logits.shape == (3, 20, V)
    assert out.loss is None
    assert out.ce_loss is None
    assert out.aux_loss.shape == ()
    assert out.aux_loss.item() == 0.0
    n_moe = model.config.n_layers if family in MOE_FAMILIES else 0
    assert len(out.routing) == n_moe

    out = model(idx, tokens(B=3, T=20, seed=2))
    assert out.loss.shape == ()
    assert torch.isfinite(out.loss)
    torch.testing.assert_close(out.loss, out.ce_loss + out.aux_loss)
    assert model.max_seq_len == model.config.max_seq_len


@pytest.mark.parametrize("family", FAMILIES)
def test_future_tokens_do_not_change_past_logits(family):
    model = tiny(family)
    idx = tokens(T=40)
    changed = idx.clone()
    changed[:, 25:] = (changed[:, 25:] + 7) % V
    a, b = model(idx).logits, model(changed).logits
    torch.testing.assert_close(a[:, :25], b[:, :25], rtol=0, atol=1e-5)
    assert not torch.allclose(a[:, 25:], b[:, 25:])


@pytest.mark.parametrize("family", WINDOWED)
def test_sliding_window_hides_tokens_beyond_it(family):
    # One local layer: position t sees t-w+1 ... t only, so a change at p reaches p ... p+w-1.
    w, p, T = 5, 3, 20
    model = tiny(family, n_layers=1, sliding_window=w)
    assert model.blocks[0].attn.window == w
    idx = tokens(T=T)
    changed = idx.clone()
    changed[:, p] = (changed[:, p] + 1) % V
    a, b = model(idx).logits, model(changed).logits
    torch.testing.assert_close(a[:, :p], b[:, :p], rtol=0, atol=1e-6)
    torch.testing.assert_close(a[:, p + w :], b[:, p + w :], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, p + w - 1], b[:, p + w - 1])


@pytest.mark.parametrize(
    ("family", "full"), [("gemma3", {"global_every": 1}), ("gpt-oss", {"sliding_window": None})]
)
def test_full_attention_layers_see_the_whole_prefix(family, full):
    model = tiny(family, n_layers=1, **full)
    assert model.blocks[0].attn.window is None
    idx = tokens(T=40)
    changed = idx.clone()
    changed[:, 0] = (changed[:, 0] + 1) % V
    assert not torch.allclose(model(idx).logits[:, -1], model(changed).logits[:, -1])


def test_windows_follow_the_family_patterns():
    with torch.device("meta"):
        gemma = build_model("gemma3", "1b")
        oss = build_model("gpt-oss", "downsized")
    assert [b.attn.window for b in gemma.blocks[:6]] == [512] * 5 + [None]
    assert sum(b.attn.window is None for b in gemma.blocks) == 3
    assert [b.attn.window for b in oss.blocks[:4]] == [128, None, 128, None]


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_model(family):
    idx = tokens()
    a, b = tiny(family)(idx).logits, tiny(family)(idx).logits
    assert torch.equal(a, b)
    torch.manual_seed(1)
    other = build_model(family, "tiny").eval()
    assert not torch.allclose(a, other(idx).logits)


@pytest.mark.parametrize("family", FAMILIES)
def test_initial_loss_is_about_log_vocab(family):
    model = tiny(family)
    out = model(tokens(B=4, T=64), tokens(B=4, T=64, seed=2))
    assert abs(out.ce_loss.item() - math.log(V)) < 0.1


@pytest.mark.parametrize("family", FAMILIES)
def test_every_parameter_gets_a_gradient(family):
    model = tiny(family).train()
    model(tokens(B=8, T=64), tokens(B=8, T=64, seed=2)).loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("family", ["gpt2", "qwen3"])
def test_dropout_is_active_in_train_mode_only(family):
    model = tiny(family, dropout=0.3)
    idx = tokens()
    torch.testing.assert_close(model(idx).logits, model(idx).logits, rtol=0, atol=0)
    model.train()
    assert not torch.allclose(model(idx).logits, model(idx).logits)


def test_sequences_longer_than_the_context_are_rejected():
    model = tiny("qwen3", max_seq_len=16)
    with pytest.raises(ValueError, match="max_seq_len=16"):
        model(tokens(T=17))


# --- tied embeddings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "dims"),
    [("gpt2", {}), ("gemma3", {}), ("qwen3", {"tie_embeddings": True}), ("olmoe", {"tie_embeddings": True}),
     ("gpt-oss", {"tie_embeddings": True})],
)  # fmt: skip
def test_tied_head_is_the_embedding(family, dims):
    model = tiny(family, **dims).train()
    assert model.lm_head.weight is model.embed.weight
    idx = torch.randint(0, 100, (2, 16))  # tokens >= 100 never enter: their rows learn through the head only
    before = model.embed.weight.detach().clone()
    model(idx, idx.roll(-1, dims=1)).loss.backward()
    torch.optim.SGD(model.parameters(), lr=1.0).step()
    assert not torch.equal(model.embed.weight[100:], before[100:])
    assert torch.equal(model.lm_head.weight, model.embed.weight)


@pytest.mark.parametrize("family", ["qwen3", "olmoe", "gpt-oss"])
def test_untied_by_default(family):
    model = tiny(family)
    assert model.lm_head.weight is not model.embed.weight


# --- mixture of experts ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_each_token_goes_to_exactly_k_experts(family):
    model = tiny(family)
    B, T = 4, 32
    out = model(tokens(B=B, T=T))
    k, E = model.config.top_k, model.config.n_experts
    assert (k, E) == (2, 4)
    for stats in out.routing:
        assert stats.tokens == B * T
        assert stats.top_k == k
        assert stats.counts.shape == (E,)
        assert int(stats.counts.sum()) == B * T * k
        assert not stats.counts.requires_grad
        assert not stats.mean_probs.requires_grad
        torch.testing.assert_close(stats.mean_probs.sum(), torch.tensor(1.0))


def _naive_moe(moe, x):
    # Token by token, from the documented layouts only.
    E, k = moe.n_experts, moe.top_k
    ex = moe.experts
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        logits = moe.router(x[t])
        if moe.selection == "softmax_topk":
            weights, chosen = logits.softmax(-1).topk(k)
            if moe.renormalize:
                weights = weights / weights.sum()
        else:
            top, chosen = logits.topk(k)
            weights = top.softmax(-1)
        for w, e in zip(weights, chosen.tolist(), strict=True):
            assert 0 <= e < E
            if hasattr(ex, "gate_up_bias"):  # gpt-oss: [E, d, 2r], gate in even columns
                h = x[t] @ ex.gate_up[e] + ex.gate_up_bias[e]
                y = (F.silu(h[::2]) * h[1::2]) @ ex.down[e] + ex.down_bias[e]
            else:  # OLMoE: [E, 2r, d], gate rows first
                r = ex.gate_up.shape[1] // 2
                y = ex.down[e] @ (F.silu(ex.gate_up[e, :r] @ x[t]) * (ex.gate_up[e, r:] @ x[t]))
            out[t] += w * y
    return out


@pytest.mark.parametrize(
    "options",
    [{"layout": "concat", "selection": "softmax_topk"},
     {"layout": "concat", "selection": "softmax_topk", "renormalize": True},
     {"layout": "interleave", "selection": "topk_softmax", "router_bias": True}],
)  # fmt: skip
def test_moe_matches_a_token_by_token_reference(options):
    torch.manual_seed(0)
    moe = MoE(16, 5, 2, 12, **options)
    with torch.no_grad():
        for p in moe.parameters():
            p.normal_(0, 0.3)
    x = torch.randn(2, 9, 16)
    torch.testing.assert_close(moe(x).y.reshape(-1, 16), _naive_moe(moe, x.reshape(-1, 16)))


def test_aux_losses_follow_their_formulas():
    model = tiny("olmoe", balance_loss_coef=0.01, z_loss_coef=0.001).train()
    out = model(tokens(B=4, T=32), tokens(B=4, T=32, seed=2))
    metrics = [load_metrics(s) for s in out.routing]
    balance = sum(m["load_balancing_loss"] for m in metrics) / len(metrics)
    z = sum(s.z_loss for s in out.routing) / len(out.routing)
    assert out.aux_loss.item() == pytest.approx(0.01 * balance + 0.001 * z, rel=1e-5)
    torch.testing.assert_close(out.loss, out.ce_loss + out.aux_loss)
    out.aux_loss.backward()  # the aux losses alone train the routers
    assert all(b.moe.router.weight.grad.abs().sum() > 0 for b in model.blocks)


# --- attention pieces -----------------------------------------------------------------------------


def test_attention_sinks_join_the_denominator_only():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 10, 8), torch.randn(2, 2, 10, 8), torch.randn(2, 2, 10, 8)
    no_sink = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    torch.testing.assert_close(sink_attention(q, k, v, torch.full((4,), -1e4), None), no_sink)
    # A sink at logit s keeps sum_u exp(a_tu) / (exp(s) + sum_u exp(a_tu)) of the output.
    s = torch.tensor([0.0, 1.0, 2.0, 3.0])
    scores = (q @ k.repeat_interleave(2, 1).mT) / math.sqrt(8)
    scores = scores.masked_fill(~torch.ones(10, 10, dtype=torch.bool).tril(), float("-inf"))
    mass = scores.exp().sum(-1, keepdim=True)
    kept = mass / (mass + s.exp().view(1, 4, 1, 1))
    torch.testing.assert_close(sink_attention(q, k, v, s, None), no_sink * kept)


def test_attention_has_head_dim_and_role_names():
    attn = Attention(32, 4, 2, 8, qk_norm=True, sinks=True, bias=True)
    assert attn.head_dim == 8
    assert attn.q.weight.shape == (32, 32)
    assert attn.k.weight.shape == (16, 32)
    assert attn.o.weight.shape == (32, 32)
    assert attn.sinks.shape == (4,)


# --- registry -------------------------------------------------------------------------------------


def test_list_models_names_every_family_and_size():
    assert list_models() == {
        "gpt2": ["tiny", "small", "124m"],
        "qwen3": ["tiny", "small", "0.6b", "0.6b-28l"],
        "gemma3": ["tiny", "small", "1b"],
        "olmoe": ["tiny", "small", "1b-7b"],
        "gpt-oss": ["tiny", "small", "downsized"],
    }


def test_explicit_dims_override_the_size_table():
    model = build_model("qwen3", "tiny", vocab_size=65, n_layers=3, d_ff=96)
    assert model.config.vocab_size == 65
    assert len(model.blocks) == 3
    assert model.embed.weight.shape == (65, 64)
    assert model.blocks[0].mlp.up.weight.shape == (96, 64)
    assert build_model("gpt_oss", "tiny").config == build_model("gpt-oss", "tiny").config
    assert build_model("gpt2").config == build_model("gpt2", "small").config  # no size: the defaults


@pytest.mark.parametrize(
    ("args", "dims", "bad", "listed"),
    [(("llama",), {}, "llama", "qwen3"), (("qwen3", "7b"), {}, "7b", "0.6b"),
     (("olmoe", "tiny"), {"n_expert": 8}, "n_expert", "n_experts")],
)  # fmt: skip
def test_unknown_names_raise_value_errors_listing_valid_ones(args, dims, bad, listed):
    with pytest.raises(ValueError, match=re.escape(bad)) as info:
        build_model(*args, **dims)
    assert isinstance(info.value, ConfigError)
    assert listed in str(info.value)


@pytest.mark.parametrize(
    ("family", "dims", "field"),
    [("qwen3", {"n_heads": 5}, "n_heads"), ("qwen3", {"n_kv_heads": 3}, "n_kv_heads"),
     ("olmoe", {"top_k": 5}, "top_k"), ("gpt2", {"n_layers": 0}, "n_layers"),
     ("gemma3", {"dropout": 1.5}, "dropout"), ("gpt-oss", {"head_dim": 7}, "head_dim"),
     # found by tests/service/test_fuzz_specs.py: these built, then the first loss was NaN
     ("qwen3", {"rope_theta": 0.0}, "rope_theta"), ("qwen3", {"rope_theta": 4.7e-146}, "rope_theta"),
     ("gemma3", {"rope_local_theta": -1.0}, "rope_local_theta"),
     ("gpt2", {"norm_eps": 0.0}, "norm_eps"), ("olmoe", {"init_std": 0}, "init_std")],
)  # fmt: skip
def test_bad_dims_raise_value_errors(family, dims, field):
    with pytest.raises(ValueError, match=field):
        build_model(family, "tiny", **dims)


def test_paper_shapes_have_the_published_sizes():
    with torch.device("meta"):
        assert build_model("gpt2", "124m").num_params() == 124_475_904  # nanoGPT: 123.69M + 0.79M positions
        paper = build_model("qwen3", "0.6b")  # ALGORITHMS.md 14: 20 / 1024 / 3072 / 151936, untied
        assert (len(paper.blocks), paper.config.d_model, paper.config.d_ff) == (20, 1024, 3072)
        assert paper.lm_head.weight.shape == (151936, 1024)
        assert paper.lm_head.weight is not paper.embed.weight
        assert paper.num_params() == 625_784_832  # 20 × 15,730,944 per block + 2 × 151936·1024 + 1024
        released = build_model("qwen3", "0.6b-28l", tie_embeddings=True)
        assert len(released.blocks) == 28
        assert released.num_params() == 596_049_920  # the released Qwen3-0.6B
        assert build_model("gemma3", "1b", n_layers=26).num_params() == 999_885_952  # Gemma 3 1B
        olmoe = build_model("olmoe", "1b-7b")
        oss = build_model("gpt-oss", "downsized")
    assert olmoe.blocks[0].moe.experts.gate_up.shape == (32, 2048, 2048)
    assert oss.blocks[0].moe.experts.gate_up.shape == (16, 2048, 4096)
    assert oss.blocks[0].moe.experts.down.shape == (16, 2048, 2048)


# --- parameter classification ---------------------------------------------------------------------

C = ParamClass


def _expected(name, model):
    # The class and layout each parameter name must get, written out independently of classify.
    hd = model.blocks[0].attn.head_dim
    tied = model.lm_head.weight is model.embed.weight
    rules = [
        (r"embed\.weight", C.TIED_EMBEDDING if tied else C.EMBEDDING, "matrix"),
        (r"pos_embed\.weight", C.POSITION, "matrix"),
        (r"lm_head\.weight", C.LM_HEAD, "matrix"),
        (r"blocks\.\d+\.attn\.(q|k|v|qkv)\.weight", C.ATTN_QKV, f"heads_rows.{hd}"),
        (r"blocks\.\d+\.attn\.o\.weight", C.ATTN_OUT, f"heads_cols.{hd}"),
        (r"blocks\.\d+\.mlp\.(gate|up|fc)\.weight", C.MLP_IN, "matrix"),
        (r"blocks\.\d+\.mlp\.(down|proj)\.weight", C.MLP_OUT, "matrix"),
        (r"blocks\.\d+\.moe\.router\.weight", C.ROUTER, "matrix"),
        (r"blocks\.\d+\.moe\.experts\.gate_up", C.EXPERT_IN, None),
        (r"blocks\.\d+\.moe\.experts\.down", C.EXPERT_OUT, None),
        (r".*(norm.*\.weight|\.bias|_bias|\.sinks)", C.VECTOR, "vector"),
    ]
    gpt_oss = model.config.__class__.__name__ == "GptOssConfig"
    for pattern, cls, layout in rules:
        if re.fullmatch(pattern, name):
            if cls == C.EXPERT_IN:
                layout = "gate_up.interleave.t" if gpt_oss else "gate_up.concat"
            if cls == C.EXPERT_OUT:
                layout = "matrix.t" if gpt_oss else "matrix"
            return cls, layout
    raise AssertionError(f"no expectation for {name}")


@pytest.mark.parametrize(("family", "size"), [(f, s) for f, sizes in list_models().items() for s in sizes])
def test_every_parameter_lands_in_exactly_one_class(family, size):
    if size == "tiny":
        model = build_model(family, size)
    else:  # paper shapes on the meta device: shapes without memory
        with torch.device("meta"):
            model = build_model(family, size)
    infos = describe_params(model)
    names = [name for name, _ in model.named_parameters()]
    assert sorted(infos) == sorted(names)
    assert len(set(names)) == len(names)
    assert sum(math.prod(i.shape) for i in infos.values()) == model.num_params()
    for name, info in infos.items():
        assert (info.param_class, info.layout) == _expected(name, model), name

    L = model.config.n_layers
    counts = {cls: sum(i.param_class == cls for i in infos.values()) for cls in ParamClass}
    moe = family in MOE_FAMILIES
    assert counts[C.ATTN_QKV] == (L if family == "gpt2" else 3 * L)
    assert counts[C.ATTN_OUT] == L
    assert counts[C.MLP_IN] == (0 if moe else L if family == "gpt2" else 2 * L)
    assert counts[C.MLP_OUT] == (0 if moe else L)
    assert counts[C.ROUTER] == counts[C.EXPERT_IN] == counts[C.EXPERT_OUT] == (L if moe else 0)
    assert counts[C.TIED_EMBEDDING] == (1 if family in ("gpt2", "gemma3") else 0)
    assert counts[C.LM_HEAD] == (0 if family in ("gpt2", "gemma3") else 1)
    assert counts[C.POSITION] == (1 if family == "gpt2" else 0)
    assert counts[C.HIDDEN] == 0


# --- MoE metrics ----------------------------------------------------------------------------------


def _stats(counts, probs=None, top_k=2, lse=1.5):
    counts = torch.tensor(counts)
    E = counts.numel()
    probs = torch.full((E,), 1 / E) if probs is None else torch.tensor(probs)
    return RoutingStats(counts, probs, int(counts.sum()) // top_k, top_k, lse, lse**2)


def test_balanced_load_metrics():
    m = load_metrics(_stats([10, 10, 10, 10]))
    assert m["load_cv"] == pytest.approx(0.0, abs=1e-12)
    assert m["maxvio"] == pytest.approx(0.0, abs=1e-12)
    assert m["max_mean_load"] == pytest.approx(1.0)
    assert m["load_entropy"] == pytest.approx(1.0)
    assert m["load_balancing_loss"] == pytest.approx(1.0)
    assert m["dead_expert_fraction"] == 0.0
    assert m["logsumexp_mean"] == 1.5
    assert m["z_loss"] == 2.25


def test_imbalanced_load_metrics():
    E = 4
    m = load_metrics(_stats([20, 10, 10, 0]))  # f = [1/2, 1/4, 1/4, 0]
    assert m["dead_expert_fraction"] == pytest.approx(1 / E)
    assert m["maxvio"] == pytest.approx(E * 0.5 - 1)
    assert m["top_expert_load"] == pytest.approx(0.5)
    f = torch.tensor([0.5, 0.25, 0.25, 0.0], dtype=torch.float64)
    assert m["load_cv"] == pytest.approx(float(f.std(correction=0) / f.mean()))
    assert m["load_entropy"] == pytest.approx(1.5 * math.log(2) / math.log(E))
    collapsed = load_metrics(_stats([40, 0, 0, 0], probs=[1.0, 0.0, 0.0, 0.0], top_k=1))
    assert collapsed["load_entropy"] == pytest.approx(0.0)
    assert collapsed["dead_expert_fraction"] == pytest.approx(3 / E)
    assert collapsed["load_balancing_loss"] == pytest.approx(E)


def test_average_load_metrics_is_a_mean_over_layers():
    a, b = _stats([10, 10, 10, 10]), _stats([20, 10, 10, 0])
    avg = average_load_metrics([a, b])
    assert avg["maxvio"] == pytest.approx((0.0 + 1.0) / 2)
    assert avg.keys() == load_metrics(a).keys()
    assert average_load_metrics([]) == {}


def test_model_routing_feeds_the_metrics():
    out = tiny("gpt-oss")(tokens(B=4, T=32))
    metrics = average_load_metrics(out.routing)
    assert 0.0 <= metrics["load_entropy"] <= 1.0
    assert metrics["maxvio"] >= 0.0


# --- hygiene --------------------------------------------------------------------------------------


def test_importing_the_models_pulls_in_no_service_dependencies():
    code = (
        "import sys, symopt_core.models\n"
        "bad = [m for m in ('ray', 'fastapi', 'sqlalchemy', 'optuna') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
