"""Presets built by `build_optimizer` on a real model, against the optimizers they claim to be."""

from __future__ import annotations

import copy

import pytest
import torch

from symopt_core import PRESETS, ScheduleFree, build_model, build_optimizer, describe_params
from symopt_core.params import ParamClass
from symopt_core.presets import ADAMW_SHARE, param_groups

C = ParamClass
HIDDEN = {C.ATTN_QKV, C.ATTN_OUT, C.MLP_IN, C.MLP_OUT}


def test_muon_preset_matches_torch_optim_muon_and_adamw_on_qwen3():
    torch.manual_seed(0)
    model = build_model("qwen3", "tiny", vocab_size=65)
    reference = copy.deepcopy(model)
    initial = {name: p.detach().clone() for name, p in model.named_parameters()}
    lr, weight_decay = 0.02, 0.1
    # torch.optim.Muon iterates in bf16 on every device; the preset's "auto" would be fp32 on CPU.
    bf16 = {"polar_dtype": "bfloat16"}
    ours = build_optimizer(
        model, "muon", lr=lr, weight_decay=weight_decay, overrides={"attention": bf16, "mlp": bf16}
    )
    hidden_names = [name for name, info in describe_params(model).items() if info.param_class in HIDDEN]
    assert len(hidden_names) == 2 * 7  # q, k, v, o, gate, up, down per layer
    theirs = dict(reference.named_parameters())
    hidden = [theirs[name] for name in hidden_names]
    rest = [p for name, p in theirs.items() if name not in hidden_names]
    muon = torch.optim.Muon(
        hidden, lr=lr, weight_decay=weight_decay, momentum=0.95, nesterov=True,
        ns_coefficients=(3.4445, -4.775, 2.0315), eps=1e-7, ns_steps=5,
        adjust_lr_fn="original",  # lr·√max(1, rows/cols): the preset's scale "kj" for polar
    )  # fmt: skip
    adamw = torch.optim.AdamW(rest, lr=ADAMW_SHARE * lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)

    generator = torch.Generator().manual_seed(1)
    for _ in range(10):
        tokens = torch.randint(0, 65, (4, 33), generator=generator)
        ours.zero_grad()
        model(tokens[:, :-1], tokens[:, 1:]).loss.backward()
        # The same gradients on both sides: the test compares optimizers, not two trajectories of
        # a chaotic loss that a 1e-6 difference in the weights would already separate.
        for name, p in model.named_parameters():
            theirs[name].grad = p.grad.clone()
        ours.step()
        muon.step()
        adamw.step()
    # Hidden matrices: the same bf16 Newton–Schulz operations (SymOpt batches same-shape matrices,
    # torch runs them one by one). Equal to ≤ 2e-8 after 10 steps on one x86 machine; on another
    # (AMD EPYC, AVX2 kernels) one step's bf16 iteration on one matrix (blocks.0.mlp.up, step 5)
    # rounds apart and that step's direction differs by up to one bf16 ulp of its largest
    # entries, which moves those weights by ≤ lr·√(m/n)·2⁻⁸ ≈ 1.4e-4, once. 3e-4 allows that,
    # while a wrong scale, coefficient or momentum form moves the weights by ~1e-3 in every step
    # (updates here are lr·√max(1, m/n)·|D| ≈ 5e-3 per step), ~1e-2 over the 10. The rest is fp32
    # AdamW against torch's (lr 1e-3, 10 steps): 1e-6, about 100× fp32 rounding.
    for name, p in model.named_parameters():
        atol = 3e-4 if name in hidden_names else 1e-6
        torch.testing.assert_close(p.detach(), theirs[name].detach(), rtol=0, atol=atol, msg=name)
        assert (p.detach() - initial[name]).abs().max() > 1e-3, f"{name} did not move"


@pytest.mark.parametrize("preset", ["muon", "normuon", "sf-normuon"])
def test_muon_presets_orthogonalize_whole_attention_matrices(preset):
    # DESIGN.md: head-wise polar belongs to the symmetric family only.
    groups = param_groups(build_model("qwen3", "tiny"), preset)
    attention = [g for g in groups if g["param_class"] in ("attn_qkv", "attn_out")]
    assert attention
    assert {g["layout"] for g in attention} == {"matrix"}


@pytest.mark.parametrize("preset", ["symmetric", "symmetric-hybrid", "sf-symmetric"])
def test_symmetric_presets_orthogonalize_attention_per_head(preset):
    groups = param_groups(build_model("qwen3", "tiny"), preset)  # head_dim 16
    layouts = {g["param_class"]: g["layout"] for g in groups}
    assert layouts["attn_qkv"] == "heads_rows.16"
    assert layouts["attn_out"] == "heads_cols.16"


def test_symmetric_hybrid_pairs_gate_and_up_of_interleaved_experts():
    # ALGORITHMS.md 6: gpt-oss's interleaved [E, d, 2r] gate/up take the paired rule (EO's
    # gpt_oss_gate_up_pair); OLMoE's concatenated [E, 2r, d] keeps the row-aware hybrid.
    gpt_oss = {g["param_class"]: g for g in param_groups(build_model("gpt-oss", "tiny"), "symmetric-hybrid")}
    assert (gpt_oss["expert_in"]["rule"], gpt_oss["expert_in"]["layout"]) == (
        "paired_hybrid",
        "gate_up.interleave.t",
    )
    assert gpt_oss["expert_out"]["rule"] == "col_hybrid"
    olmoe = {g["param_class"]: g for g in param_groups(build_model("olmoe", "tiny"), "symmetric-hybrid")}
    assert (olmoe["expert_in"]["rule"], olmoe["expert_in"]["layout"]) == ("hybrid", "gate_up.concat")
    # An explicit override still wins over the interleaved default.
    overridden = param_groups(
        build_model("gpt-oss", "tiny"), "symmetric-hybrid", overrides={"expert_in": "hybrid"}
    )
    assert next(g for g in overridden if g["param_class"] == "expert_in")["rule"] == "hybrid"


def test_sf_symmetric_is_the_schedule_free_wrapper_over_symmetric():
    # Same rules, layouts and lrs as `symmetric`; only the base momenta differ (presets.py: μ = 0.8
    # EMA for matrix rules as SF-NorMuon, β1 = 0 for AdamW parts as SF-AdamW), wrapped with β = 0.9.
    model = build_model("olmoe", "tiny")
    keys = ("rule", "layout", "lr", "weight_decay", "scale", "polar_method")

    def table(preset: str) -> dict[str, tuple[object, ...]]:
        return {g["param_class"]: tuple(g.get(k) for k in keys) for g in param_groups(model, preset)}

    assert table("sf-symmetric") == table("symmetric")
    optimizer = build_optimizer(model, "sf-symmetric")
    assert isinstance(optimizer, ScheduleFree)
    assert PRESETS["sf-symmetric"].schedule_free == {"momentum": 0.9}
    for group in optimizer.param_groups:
        assert group["sf_momentum"] == 0.9
        if group["rule"] == "adamw":
            assert group["betas"][0] == 0.0
        else:
            assert (group["momentum"], group["nesterov"]) == (0.8, False)
