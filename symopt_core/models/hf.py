"""Jobs on any transformers causal LM: `family: hf` with an inline `config` or a local `path`.

    model = build_hf_model(spec.model, vocab_size=65, assets=assets)
    out = model(idx, targets)        # ModelOutput, as the reference models return it

`HFCausalLM` holds the transformers model as `hf`, so its parameters are named `hf.<name>`; every
name a user sees or writes (classification tables, `optimizer.mapping`, errors) is the
transformers name without that prefix (`model.layers.0.mlp.gate_proj.weight`).

MoE routing, as transformers 5.25 reports it with `output_router_logits=True`: a tuple with one
tensor per sparse layer of raw router logits [batch·seq, experts] (a forward hook records the
router module's first output). Mixtral, Qwen3-MoE and OLMoE pick the top-k of softmax(logits);
gpt-oss picks the top-k logits (bias included) and softmaxes only those, which selects the same
experts, so one function turns every family's logits into `RoutingStats`.

transformers is imported inside the functions: the API validates specs on its event loop, and
`import transformers` costs seconds (job_model.py imports this module only for hf jobs).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from ..assets import Assets
from ..errors import ConfigError
from ..extras import require
from ..hf_spec import hf_label
from .output import ModelOutput, RoutingStats

if TYPE_CHECKING:
    from ..spec import ModelSpec

__all__ = ["PREFIX", "HFCausalLM", "build_hf_model", "hf_config", "routing_stats"]

# The wrapper's attribute that holds the transformers model: the prefix of its parameter names.
PREFIX = "hf."
# Decoder-only types to suggest when a model_type is unknown or not a causal LM.
_EXAMPLES = "llama, qwen3, mistral, gemma3_text, mixtral, qwen3_moe, olmoe, gpt_oss, gpt2"


class HFCausalLM(nn.Module):
    """A transformers `*ForCausalLM` called like the reference models: `model(idx, targets)`.

    targets are the inputs shifted by the sampler already, so they are never handed to
    transformers as `labels` (it would shift them again); the loss is computed here.
    """

    def __init__(self, model: nn.Module, label: str) -> None:
        super().__init__()
        self.hf = model
        self.label = label  # what the run's log says it trains: "llama (config)", "mdl_… (pretrained)"
        config = model.config
        positions = getattr(config, "max_position_embeddings", None)
        self.max_seq_len: int | None = positions if isinstance(positions, int) else None
        # An MoE model reports its router logits when asked (output_router_logits) and says its k.
        top_k = getattr(config, "num_experts_per_tok", None)
        routed = hasattr(config, "output_router_logits") and isinstance(top_k, int)
        self.top_k: int | None = top_k if routed else None
        # transformers adds coef × its load-balancing loss in training only when the config asks
        # for router logits; the same here, whereas the logits themselves are always asked for
        # (detached, for the load metrics).
        wants_aux = routed and bool(getattr(config, "output_router_logits", False))
        self.aux_coef = float(getattr(config, "router_aux_loss_coef", 0.0) or 0.0) if wants_aux else 0.0

    @property
    def blocks(self) -> list[nn.Module]:
        """The decoder layers, each one FSDP unit (parallel.shard_model), as the reference
        models' `blocks`: the modules of a ModuleList whose class transformers lists in
        `_no_split_modules` (what it keeps whole when it splits a model across devices)."""
        unit_names = set(getattr(self.hf, "_no_split_modules", None) or ())
        return [
            layer
            for module in self.hf.modules()
            if isinstance(module, nn.ModuleList)
            for layer in module
            # the class's ancestors too: FSDP2 subclasses each module it shards (FSDPLlamaDecoderLayer)
            if any(cls.__name__ in unit_names for cls in type(layer).__mro__)
        ]

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> ModelOutput:
        if idx.ndim != 2:
            raise ConfigError(f"Invalid input shape {tuple(idx.shape)}; expected token ids [batch, seq_len]")
        if self.max_seq_len is not None and idx.shape[1] > self.max_seq_len:
            raise ConfigError(
                f"Sequence length {idx.shape[1]} exceeds max_position_embeddings={self.max_seq_len} of "
                f"{self.label}; lower data.seq_len or raise model.config.max_position_embeddings"
            )
        asks = {"output_router_logits": True} if self.top_k is not None else {}
        out = self.hf(input_ids=idx, use_cache=False, **asks)
        logits = out.logits
        routing = []
        if self.top_k is not None:
            routing = [routing_stats(layer, self.top_k) for layer in out.get("router_logits") or ()]
        aux = logits.new_zeros((), dtype=torch.float32)
        if self.aux_coef and out.get("aux_loss") is not None:
            aux = self.aux_coef * out.aux_loss.float()
        if targets is None:
            return ModelOutput(logits=logits, aux_loss=aux, routing=routing)
        # Cross-entropy in float32 whatever the logits' dtype; target -1 marks padding (as nanoGPT).
        ce = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-1)
        return ModelOutput(logits=logits, aux_loss=aux, loss=ce + aux, ce_loss=ce, routing=routing)


@torch.no_grad()
def routing_stats(router_logits: Tensor, top_k: int) -> RoutingStats:
    """One layer's routing from its router logits [tokens, experts] (or [batch, seq, experts])."""
    # float32: softmax, top-k ties and logsumexp are precision-sensitive in bf16 (as moe.py).
    logits = router_logits.detach().reshape(-1, router_logits.shape[-1]).float()
    n_experts = logits.shape[-1]
    chosen = logits.topk(top_k, dim=-1).indices  # the top-k logits are the top-k probabilities
    lse = logits.logsumexp(dim=-1)
    lse_mean, z_loss = torch.stack([lse.mean(), lse.square().mean()]).tolist()  # one host sync
    return RoutingStats(
        counts=torch.bincount(chosen.flatten(), minlength=n_experts),
        mean_probs=logits.softmax(dim=-1).mean(dim=0),
        tokens=logits.shape[0],
        top_k=top_k,
        logsumexp_mean=lse_mean,
        z_loss=z_loss,
    )


def hf_config(fields: dict[str, Any], vocab_size: int | None) -> Any:
    """The transformers config of `model.config`: `model_type` plus that architecture's fields.

    Without a vocab_size the tokenizer's is used (vocab_size None: the architecture's default).
    """
    require("transformers", "A transformers model (model.family hf)")
    import transformers

    fields = dict(fields)
    model_type = str(fields.pop("model_type"))
    if model_type not in transformers.CONFIG_MAPPING:
        raise ConfigError(
            f"Unknown model.config.model_type {model_type!r}: transformers {transformers.__version__} "
            f"has no such architecture; use a causal LM type such as {_EXAMPLES}"
        )
    config_class = transformers.CONFIG_MAPPING[model_type]
    _check_fields(model_type, config_class, fields)
    if vocab_size is not None:
        fields.setdefault("vocab_size", vocab_size)
    try:
        config = transformers.AutoConfig.for_model(model_type, **fields)
    except (ValueError, TypeError, KeyError) as error:
        raise ConfigError(
            f"model.config is not a valid {model_type} config: {error}; fix that field or remove it "
            "(the architecture's default)"
        ) from None
    if type(config) not in transformers.MODEL_FOR_CAUSAL_LM_MAPPING:
        raise ConfigError(
            f"model.config.model_type {model_type!r} is not a causal language model in transformers "
            f"(AutoModelForCausalLM has no class for it); use a decoder-only type such as {_EXAMPLES}"
        )
    return config


def _check_fields(model_type: str, config_class: Any, fields: dict[str, Any]) -> None:
    # transformers keeps any unknown keyword as an attribute, so a typo (`hidden_sise`) would
    # silently train the default width: refuse names the config neither stores nor takes.
    import inspect

    try:
        defaults = config_class().to_dict()
    except (TypeError, ValueError):  # a config without defaults: transformers alone judges its fields
        return
    known = set(defaults) | set(getattr(config_class, "attribute_map", {}))
    known |= set(inspect.signature(config_class.__init__).parameters)
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ConfigError(
            f"model.config: {', '.join(unknown)} is not a field of {model_type} ({config_class.__name__}); "
            f"check the spelling against its fields: {', '.join(sorted(known - {'self', 'kwargs'}))}"
        )


def check_vocab(model_vocab: int, vocab_size: int, where: str) -> None:
    """The embedding must hold every token id the tokenizer produces (it may be larger)."""
    if model_vocab < vocab_size:
        raise ConfigError(
            f"{where} vocab_size={model_vocab} is below the tokenizer's {vocab_size} tokens; raise it to "
            f"at least {vocab_size} (or remove it from model.config to use the tokenizer's), or use a "
            "tokenizer with fewer tokens"
        )


def _attention(config: Any) -> str:
    # Explicit, so a config.json asking for flash attention still runs on a CPU: SDPA where the
    # architecture supports it, else the eager reference (gpt-oss, with its attention sinks).
    import transformers

    model_class = transformers.MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    return "sdpa" if getattr(model_class, "_supports_sdpa", False) else "eager"


def _check_causal(model: nn.Module, what: str) -> None:
    # Encoder architectures that transformers also builds as `*LMHeadModel` (bert, roberta, ...)
    # attend both ways unless the config says is_decoder: they would see the tokens they predict.
    bidirectional = sorted(
        {type(m).__name__ for m in model.modules() if getattr(m, "is_causal", None) is False}
    )
    if bidirectional:
        raise ConfigError(
            f"{what} attends in both directions ({', '.join(bidirectional)} is not causal): set "
            f"is_decoder: true in its config, or use a decoder-only type such as {_EXAMPLES}"
        )


def pretrained_config(directory: Path, what: str) -> Any:
    """The transformers config in `directory` (a save_pretrained directory), refused unless it
    loads from local files and is a causal language model transformers knows."""
    require("transformers", "A transformers model (model.family hf)")
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{what}: its config.json does not load: {error}") from None
    if type(config) not in transformers.MODEL_FOR_CAUSAL_LM_MAPPING:
        raise ConfigError(
            f"{what} holds a {config.model_type} model, which is not a causal language model in "
            "transformers; upload a *ForCausalLM model"
        )
    return config


def build_transformers_model(
    model_spec: ModelSpec, vocab_size: int | None, assets: Assets | None, *, meta: bool = False
) -> tuple[nn.Module, str]:
    """The bare transformers model of an hf spec and its label; meta=True: on the meta device,
    without weights (the size of a 70B config costs nothing), for checks and classification."""
    require("transformers", "A transformers model (model.family hf)")
    import transformers

    label = hf_label(model_spec.config, model_spec.path)
    if model_spec.config is not None:
        config = hf_config(model_spec.config, vocab_size)
    else:
        assert model_spec.path is not None  # the spec holds exactly one of config and path
        directory = (assets or Assets()).model_dir(model_spec.path)
        config = pretrained_config(directory, f"model.path {model_spec.path!r}")
    if vocab_size is not None and isinstance(getattr(config, "vocab_size", None), int):
        where = "model.config" if model_spec.config is not None else f"the model at {model_spec.path!r} has"
        check_vocab(config.vocab_size, vocab_size, where)
    options = {"attn_implementation": _attention(config), "dtype": torch.float32}
    try:
        if meta:
            with torch.device("meta"):
                model = transformers.AutoModelForCausalLM.from_config(config, **options)
        elif model_spec.config is not None:
            model = transformers.AutoModelForCausalLM.from_config(config, **options)
        else:
            model = transformers.AutoModelForCausalLM.from_pretrained(
                directory, config=config, local_files_only=True, **options
            )
    except (ValueError, TypeError, KeyError, AssertionError, OSError) as error:
        raise ConfigError(
            f"transformers cannot build {label}: {type(error).__name__}: {error}; fix model.config "
            "(or the model's files) as it says"
        ) from None
    _check_causal(model, label)
    return model, label


def build_hf_model(model_spec: ModelSpec, vocab_size: int, assets: Assets | None = None) -> HFCausalLM:
    """The job's transformers model, wrapped: from `config` a random init seeded by the caller's
    torch.manual_seed, from `path` the weights in that directory (local files only), in float32."""
    model, label = build_transformers_model(model_spec, vocab_size, assets)
    model.train()  # from_pretrained returns it in eval mode (dropout off)
    return HFCausalLM(model, label)
