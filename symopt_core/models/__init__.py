"""Reference model families: GPT-2, Qwen3, Gemma 3, OLMoE and gpt-oss, as small torch modules.

    from symopt_core.models import build_model
    model = build_model("olmoe", "tiny", vocab_size=65)
    out = model(idx, targets)        # ModelOutput: logits, loss, ce_loss, aux_loss, routing

Parameter names follow the roles `symopt_core.params.classify` reads (`embed`, `attn.q`, `mlp.gate`,
`moe.router`, `moe.experts.gate_up`, `lm_head`, ...). Nothing here runs at import time.
"""

from __future__ import annotations

from .base import CausalLM
from .gemma3 import Gemma3, Gemma3Config
from .gpt2 import GPT2, GPT2Config
from .gpt_oss import GptOss, GptOssConfig
from .moe_metrics import average_load_metrics, load_metrics
from .olmoe import OLMoE, OLMoEConfig
from .output import ModelOutput, RoutingStats
from .qwen3 import Qwen3, Qwen3Config
from .registry import MODEL_FAMILIES, ModelFamily, build_config, build_model, get_family, list_models

__all__ = [
    "GPT2",
    "MODEL_FAMILIES",
    "CausalLM",
    "GPT2Config",
    "Gemma3",
    "Gemma3Config",
    "GptOss",
    "GptOssConfig",
    "ModelFamily",
    "ModelOutput",
    "OLMoE",
    "OLMoEConfig",
    "Qwen3",
    "Qwen3Config",
    "RoutingStats",
    "average_load_metrics",
    "build_config",
    "build_model",
    "get_family",
    "list_models",
    "load_metrics",
]
