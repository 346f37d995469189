"""Classification of real model layouts, presets and build_optimizer, training and checkpoints."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import pytest
import torch

from symopt_core import (
    PRESETS,
    ConfigError,
    ParamClass,
    ScheduleFree,
    build_optimizer,
    classify,
    describe_params,
)
from symopt_core.presets import param_groups

from .hf_models import CONFIGS, build, lm_loss

C = ParamClass

# (regular expression on the parameter name, class), first match wins.
EXPECTED = [
    (r"(norm|layernorm|ln_\w+)\.weight$|bias$|sinks$", C.VECTOR),
    (r"embed_tokens", C.EMBEDDING),
    (r"wte", C.TIED_EMBEDDING),
    (r"wpe", C.POSITION),
    (r"lm_head", C.LM_HEAD),
    (r"\.(q|k|v)_proj\.|c_attn", C.ATTN_QKV),
    (r"o_proj|attn\.c_proj", C.ATTN_OUT),
    (r"mlp\.(gate|router)\.weight$", C.ROUTER),
    (r"experts\.gate_up_proj$", C.EXPERT_IN),
    (r"experts\.down_proj$", C.EXPERT_OUT),
    (r"(gate|up)_proj|c_fc", C.MLP_IN),
    (r"down_proj|mlp\.c_proj", C.MLP_OUT),
]
TIED = {"qwen3-tied", "gemma3"}


def expected_class(family: str, name: str) -> ParamClass:
    cls = next(cls for pattern, cls in EXPECTED if re.search(pattern, name))
    return C.TIED_EMBEDDING if cls == C.EMBEDDING and family in TIED else cls


def text_tokens(vocab: int = 96, batch: int = 4, length: int = 32) -> torch.Tensor:
    # A real batch of text: this project's own algorithm notes, mapped into the model's vocabulary.
    text = Path(__file__).read_text() + Path(__file__).with_name("test_equivariance.py").read_text()
    codes = torch.tensor([min(ord(ch), 126) - 31 for ch in text if 32 <= ord(ch) <= 126 or ch == "\n"])
    codes = codes.clamp(0, vocab - 1)
    starts = torch.arange(batch) * (len(codes) // batch)
    return torch.stack([codes[s : s + length] for s in starts])


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_trainable_parameter_lands_in_exactly_one_class(name):
    model = build(name)
    infos = describe_params(model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(infos) == sorted(trainable)
    for param_name, info in infos.items():
        assert info.param_class == expected_class(name, param_name), param_name


def test_layouts_follow_each_model():
    olmoe = describe_params(build("olmoe"))
    assert olmoe["model.layers.0.mlp.experts.gate_up_proj"].layout == "gate_up.concat"
    assert olmoe["model.layers.0.self_attn.q_proj.weight"].layout == "heads_rows.8"
    assert olmoe["model.layers.0.self_attn.o_proj.weight"].layout == "heads_cols.8"
    gpt_oss = describe_params(build("gpt-oss"))
    assert gpt_oss["model.layers.0.mlp.experts.gate_up_proj"].layout == "gate_up.interleave.t"
    assert gpt_oss["model.layers.0.mlp.experts.down_proj"].layout == "matrix.t"
    assert describe_params(build("gpt2"))["transformer.h.0.mlp.c_fc.weight"].layout == "matrix.t"


def test_unknown_parameters_are_named_and_can_be_mapped():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    model.register_parameter("mystery", torch.nn.Parameter(torch.randn(3, 3)))
    with pytest.raises(ConfigError, match=r"No parameter class claims: mystery \(3, 3\), 0\.weight \(4, 4\)"):
        classify(model)
    classes = classify(model, mapping={"0.weight": "hidden", "mystery": ("embedding", "matrix")})
    assert classes == {"0.weight": C.HIDDEN, "0.bias": C.VECTOR, "mystery": C.EMBEDDING}
    with pytest.raises(ConfigError, match="Invalid class 'weights' for mapping 'mystery'"):
        classify(model, mapping={"mystery": "weights", "0.weight": "hidden"})


def test_frozen_parameters_are_not_classified():
    model = build("qwen3")
    model.model.embed_tokens.weight.requires_grad_(False)
    assert "model.embed_tokens.weight" not in classify(model)


def test_symmetric_preset_cells_and_derived_learning_rates():
    groups = {g["param_class"]: g for g in param_groups(build("olmoe"), "symmetric", lr=0.02)}
    assert groups["embedding"]["rule"] == "row_norm"
    assert groups["lm_head"]["rule"] == "centered_row_norm"
    assert groups["router"]["rule"] == "centered_left_spectral"
    assert groups["expert_in"]["rule"] == "polar"
    assert groups["vector"]["rule"] == "adamw"
    assert groups["embedding"]["lr"] == pytest.approx(0.02 * 0.05 * math.sqrt(32))
    assert groups["lm_head"]["lr"] == pytest.approx(0.02 * 0.01 * math.sqrt(32))
    assert groups["router"]["lr"] == pytest.approx(7.5e-4)
    assert groups["vector"]["lr"] == pytest.approx(1e-3)
    tied = {g["param_class"]: g for g in param_groups(build("qwen3-tied"), "symmetric")}
    assert tied["tied_embedding"]["rule"] == "row_norm"  # uncentered: the tie breaks the shift symmetry
    assert "lm_head" not in tied


def test_hybrid_preset_uses_row_and_column_aware_rules():
    dense = {g["param_class"]: g["rule"] for g in param_groups(build("qwen3"), "symmetric-hybrid")}
    assert dense["mlp_in"] == "hybrid"
    assert dense["mlp_out"] == "col_hybrid"
    assert dense["attn_qkv"] == "polar"
    groups = {g["param_class"]: g["rule"] for g in param_groups(build("qwen3-moe"), "symmetric-hybrid")}
    assert groups["expert_in"] == "hybrid"
    assert groups["expert_out"] == "col_hybrid"
    assert groups["router"] == "centered_row_norm"


def test_overrides_by_class_alias_and_value():
    groups = param_groups(
        build("olmoe"),
        "muon",
        lr=0.01,
        overrides={
            "router": "centered_row_norm",
            "embedding": {"rule": "row_norm", "lr": 0.3},
            "attention": {"lr_mult": 2.0, "momentum": 0.9},
        },
    )
    by_class = {g["param_class"]: g for g in groups}
    assert by_class["router"]["rule"] == "centered_row_norm"
    assert by_class["embedding"]["rule"] == "row_norm"
    assert by_class["embedding"]["lr"] == 0.3
    assert (
        by_class["embedding"]["nesterov"] is True
    )  # a class moved to a matrix rule takes the preset's matrix options
    assert by_class["attn_qkv"]["lr"] == pytest.approx(0.02)
    assert by_class["attn_out"]["momentum"] == 0.9


def test_lr_scale_multiplies_each_class_default_lr_and_composes_with_the_others():
    model = build("olmoe")
    default = {g["param_class"]: g["lr"] for g in param_groups(model, "symmetric", lr=0.01)}
    scales = {"embedding": 0.5, "lm_head": 3.0, "router": 0.25, "vector": 4.0}
    scaled = param_groups(
        model, "symmetric", lr=0.01, overrides={c: {"lr_scale": v} for c, v in scales.items()}
    )
    found = {g["param_class"]: g["lr"] for g in scaled}
    assert found == {
        c: lr * scales.get(c, 1.0) for c, lr in default.items()
    }  # exactly, the rest as they were
    assert found["embedding"] == 0.01 * 0.05 * math.sqrt(32) * 0.5  # the derived lr, then the scale
    # Beside lr_mult (x base lr) and lr (absolute), lr_scale multiplies what those give.
    both = param_groups(
        model, "symmetric", lr=0.01, overrides={"all": {"lr_mult": 0.2}, "vector": {"lr_scale": 2.0}}
    )
    assert {g["param_class"]: g["lr"] for g in both}["vector"] == 0.01 * 0.2 * 2.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"vector": {"lr_scale": 0}}, "Invalid lr_scale for 'vector': 0; give a positive number"),
        ({"all": {"lr_scale": -2.0}}, "Invalid lr_scale for 'all': -2.0"),
        ({"router": {"lr_scale": "2"}}, "Invalid lr_scale for 'router': '2'"),
        ({"router": {"lr_scale": float("inf")}}, "Invalid lr_scale for 'router': inf"),
        ({"embeddings": "row_norm"}, "Invalid override class: 'embeddings'"),
        ({"router": "rownorm"}, "Invalid rule: 'rownorm'"),
        ({"router": {"learning_rate": 0.1}}, "Invalid override key\\(s\\) for 'router': learning_rate"),
        ({"router": {"momentum": 2.0}}, "Invalid momentum: 2.0"),
        ({"vector": "polar"}, "Invalid rule 'polar' for a parameter of shape"),
    ],
)
def test_bad_overrides_are_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        build_optimizer(build("olmoe"), "symmetric", overrides=overrides)


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="Invalid preset: 'lion'; valid presets: adamw, muon"):
        build_optimizer(build("qwen3"), "lion")


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("family", ["qwen3", "olmoe", "gpt-oss"])
def test_every_preset_lowers_the_loss_on_real_text(preset, family):
    model = build(family)
    optimizer = build_optimizer(model, preset)
    tokens = text_tokens()
    with torch.no_grad():
        before = float(lm_loss(model, tokens))
    for _ in range(15):
        optimizer.zero_grad()
        lm_loss(model, tokens).backward()
        optimizer.step()
    if isinstance(optimizer, ScheduleFree):
        optimizer.eval()
    with torch.no_grad():
        after = float(lm_loss(model, tokens))
    assert math.isfinite(after)
    assert after < before - 0.3, (before, after)


def train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        tokens = torch.randint(0, 96, (2, 16), generator=generator)
        optimizer.zero_grad()
        lm_loss(model, tokens).backward()
        optimizer.step()


@pytest.mark.parametrize("preset", list(PRESETS))
def test_checkpoint_resume_is_bit_identical(preset):
    straight = build("olmoe")
    straight_opt = build_optimizer(straight, preset)
    train(straight, straight_opt, 3, seed=1)
    buffer = io.BytesIO()
    torch.save({"model": straight.state_dict(), "optimizer": straight_opt.state_dict()}, buffer)
    train(straight, straight_opt, 3, seed=2)

    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)  # state must be plain data, no pickled classes
    resumed = build("olmoe", seed=123)
    resumed_opt = build_optimizer(resumed, preset)
    resumed.load_state_dict(checkpoint["model"])
    resumed_opt.load_state_dict(checkpoint["optimizer"])
    train(resumed, resumed_opt, 3, seed=2)
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_schedule_free_settings_reach_the_wrapper_and_only_schedule_free_presets_take_them():
    from symopt_core import build_model
    from symopt_core.spec import JobSpec

    model = build_model("qwen3", "tiny")
    wrapped = build_optimizer(model, "sf-symmetric", schedule_free={"momentum": 0.5, "weight_lr_power": 1.0})
    assert {group["sf_momentum"] for group in wrapped.param_groups} == {0.5}
    assert {group["weight_lr_power"] for group in wrapped.param_groups} == {1.0}
    default = build_optimizer(model, "sf-symmetric")
    assert {group["sf_momentum"] for group in default.param_groups} == {0.9}
    with pytest.raises(ConfigError, match="'muon' is not schedule-free"):
        build_optimizer(model, "muon", schedule_free={"momentum": 0.5})
    spec = {"model": {"family": "qwen3", "size": "tiny"}, "schedule": {"kind": "schedule_free"}}
    parsed = JobSpec.model_validate(
        {**spec, "optimizer": {"preset": "sf-normuon", "schedule_free": {"momentum": 0.7}}}
    )
    assert parsed.optimizer.schedule_free is not None
    assert parsed.optimizer.schedule_free.options() == {"momentum": 0.7}
    with pytest.raises(
        ValueError, match="preset 'muon' is not schedule-free; schedule-free presets: sf-normuon"
    ):
        JobSpec.model_validate(
            {"model": spec["model"], "optimizer": {"preset": "muon", "schedule_free": {"r": 1.0}}}
        )
