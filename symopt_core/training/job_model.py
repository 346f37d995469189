"""A job's model, from its spec's `model` section: a reference family, or a transformers model."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..assets import Assets
from ..errors import ConfigError
from ..hf_spec import hf_label
from ..models.registry import build_model
from ..spec import JobSpec, ModelSpec

__all__ = ["build_job_model", "has_routed_experts", "model_label", "optimizer_mapping"]


def build_job_model(spec: JobSpec, vocab_size: int, assets: Assets) -> nn.Module:
    """The freshly initialised (or loaded) model of `spec`, with at least `vocab_size` tokens
    (what the tokenizer needs); seeded by the caller."""
    if spec.model.is_custom:
        raise ConfigError(
            "model.family 'custom' is a model your own training script builds: symopt cannot train it "
            'itself; run it as a sweep or study with `executor: agents` (README, "Your training code")'
        )
    if spec.model.is_hf:
        # transformers loads with these (seconds): only for hf jobs, never at import.
        from ..models.hf import build_hf_model
        from ..models.hf_check import check_seq_len, classified

        model = build_hf_model(spec.model, vocab_size, assets)
        check_seq_len(model.hf, spec.data.seq_len, model.label)
        # Unclassified parameters fail here, with the transformers names and the mapping to add,
        # rather than in build_optimizer, which sees the wrapper's prefixed names.
        classified(model.hf, spec.optimizer.mapping_options())
        return model
    dims = {"max_seq_len": spec.data.seq_len, **spec.model.dims}
    # The tokenizer sets the vocabulary; a spec may pad it (nanoGPT's 50304) but not shrink it.
    requested = dims.pop("vocab_size", None)
    if requested is not None and requested < vocab_size:
        raise ConfigError(
            f"model.vocab_size={requested} is below the {vocab_size} symbols of the "
            f"{spec.data.tokenizer} tokenizer on {spec.data.corpus}; remove it or raise it"
        )
    return build_model(spec.model.family, spec.model.size, vocab_size=requested or vocab_size, **dims)


def optimizer_mapping(spec: JobSpec, model: nn.Module) -> dict[str, Any]:
    """spec.optimizer.mapping as build_optimizer needs it for `model`: users write a transformers
    model's patterns against its own names, which the wrapper prefixes (HFCausalLM, "hf.")."""
    prefix = "hf." if spec.model.is_hf else ""
    return {prefix + pattern: target for pattern, target in spec.optimizer.mapping_options().items()}


def has_routed_experts(model: nn.Module) -> bool:
    """An MoE model, whose unrouted experts may take no part in a step's backward: the reference
    MoE layers carry `n_experts`, transformers' expert and router modules `num_experts`."""
    return any(hasattr(module, "n_experts") or hasattr(module, "num_experts") for module in model.modules())


def model_label(model: ModelSpec) -> str:
    """What a run's log says it trains: "qwen3 tiny", "hf llama (config)", "hf mdl_3f2a9c (pretrained)"."""
    if model.is_hf:
        return f"hf {hf_label(model.config, model.path)}"
    return f"{model.family} {model.size or 'custom dims'}"
