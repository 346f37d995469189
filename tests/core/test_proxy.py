"""Proxies of a job's model (symopt_core/proxy.py): every reference family and an hf config shrink
by width with each head's width kept, by depth, and with experts kept or scaled; bad input is a
ValueError that names it."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from symopt_core.models.registry import build_config, build_model
from symopt_core.proxy import ProxySpec, model_width, proxy_sizes, shrink, with_budget
from symopt_core.spec import JobSpec

NANOGPT_256 = {
    "model": {"family": "gpt2", "n_layers": 4, "n_heads": 8, "d_model": 256},
    "data": {"seq_len": 64},
}


def job(model: dict[str, Any], **rest: Any) -> JobSpec:
    return JobSpec.model_validate({"model": model, "batch": {"size": 12}, "steps": 400, **rest})


def head_dim(config: Any) -> int:
    return int(getattr(config, "head_dim", None) or config.d_model // config.n_heads)


@pytest.mark.parametrize("family", ["gpt2", "qwen3", "gemma3", "olmoe", "gpt-oss"])
def test_each_family_shrinks_by_width_and_depth_and_builds(family: str):
    base = job({"family": family, "size": "small"})
    full = build_config(family, "small")
    small = shrink(base, 0.5, 0.5, experts="scale")
    config = build_config(family, small.model.size, **small.model.dims)
    assert head_dim(config) == head_dim(full)  # each head keeps its width; there are fewer heads
    assert config.n_heads == full.n_heads // 2
    assert config.d_model == full.d_model // 2
    assert config.n_layers == full.n_layers // 2
    if hasattr(full, "n_experts"):
        assert config.n_experts == full.n_experts // 2
        assert config.expert_d_ff == full.expert_d_ff // 2
    with torch.device("meta"):
        build_model(family, small.model.size, **small.model.dims)


def test_nanogpt_widths_and_budgets():
    base = job(NANOGPT_256["model"], data=NANOGPT_256["data"], eval={"every": 100})
    sizes = proxy_sizes(base, ProxySpec(width=["1/4", "1/2", 1], tokens=200 * 12 * 64))
    assert [(s.label, s.width, s.layers) for s, _ in sizes] == [
        ("d64", 64, 4),
        ("d128", 128, 4),
        ("d256", 256, 4),
    ]
    assert all(spec.steps == 200 and spec.eval.every == 50 for _, spec in sizes)  # tokens: 200 steps
    auto = with_budget(base, 12 * 64 * 2000, "auto")  # the calibration point: B* = 12 sequences
    assert (auto.batch.size, auto.steps) == (16, 1500)  # the nearest power of two, the same tokens


def test_an_hf_config_shrinks_the_fields_it_names():
    config = {
        "model_type": "mixtral", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4,
        "num_attention_heads": 8, "num_key_value_heads": 2, "num_local_experts": 8, "num_experts_per_tok": 2,
    }  # fmt: skip
    base = job({"family": "hf", "config": config})
    small = shrink(base, 0.25, experts="scale")
    shrunk = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2, "num_key_value_heads": 1}
    assert small.model.config == {**config, **shrunk, "num_local_experts": 2}
    assert model_width(small) == 64


@pytest.mark.parametrize(
    ("model", "proxy", "message"),
    [
        ({"family": "hf", "path": "mdl_abcdef"}, {"width": [0.5, 1]}, "pretrained model"),
        ({"family": "hf", "config": {"model_type": "llama"}}, {"width": [0.5, 1]}, "hidden_size"),
        ({"family": "gpt2", "size": "tiny"}, {"width": ["1/3", 0.25]}, "0.25 and 0.333333 both make d16"),
        ({"family": "gpt2", "size": "tiny"}, {"width": [0.5, "x"]}, "invalid factor 'x'"),
        ({"family": "gpt2", "size": "tiny"}, {"width": [0.5, 1.5]}, "invalid factor 1.5"),
    ],
)
def test_bad_proxies_are_named(model: dict[str, Any], proxy: dict[str, Any], message: str):
    with pytest.raises(ValueError, match=message):
        proxy_sizes(job(model), ProxySpec.model_validate(proxy))
