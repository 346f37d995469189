"""What the service asks of an hf model before it trains: does it build, classify, and fit?

    rows = describe(spec.model, "symmetric", {}, vocab_size=65)   # POST /v1/models:classify
    check_hf_model(spec, assets)                                  # POST /v1/jobs (off the event loop)

Both build the model on the meta device (shapes, no storage), so even a 70B config costs a
fraction of a second and no memory. Names are the transformers names, without HFCausalLM's prefix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from torch import nn

from ..assets import Assets
from ..errors import ConfigError
from ..params.classes import ParamClass, ParamInfo
from ..params.classify import Mapped, UnclaimedParamsError, describe_params
from ..presets import param_groups
from .hf import build_transformers_model

if TYPE_CHECKING:
    from ..spec import JobSpec, ModelSpec

__all__ = ["check_hf_model", "check_seq_len", "classified", "describe"]

_LAYER_INDEX = re.compile(r"\.\d+\.")
_LISTED = 12  # names an error lists (an 80-layer model repeats each one 80 times)


def describe(
    model_spec: ModelSpec,
    preset: str = "symmetric",
    mapping: Mapping[str, Mapped] | None = None,
    vocab_size: int | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    assets: Assets | None = None,
) -> list[dict[str, Any]]:
    """One row per trainable parameter, in the model's order: name, shape, class, layout and the
    rule and lr `preset` gives it. vocab_size None: the config's own (or its architecture's).

    Raises ConfigError when the model does not build, a parameter is unclassified (naming them
    and the mapping to add) or refused (a layout or gating the classifier would have to guess:
    naming them and why). A sigmoid-gated router shows as class "sigmoid_router", with an
    uncentered rule."""
    model, _ = build_transformers_model(model_spec, vocab_size, assets, meta=True)
    classified(model, mapping)  # the ready-to-paste mapping, should one be missing
    groups = param_groups(model, preset, overrides=overrides, mapping=mapping)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    rows = {
        name: {
            "name": name,
            "shape": list(shapes[name]),
            "class": group["param_class"],
            "layout": group["layout"],
            "rule": group["rule"],
            "lr": group["lr"],
        }
        for group in groups
        for name in group["param_names"]
    }
    return [rows[name] for name in shapes if name in rows]


def check_hf_model(spec: JobSpec, assets: Assets | None = None, vocab_size: int | None = None) -> None:
    """The deep check of an hf job at submission: the config builds a causal LM, every parameter
    classifies under the spec's preset, overrides and mapping, the embedding holds the tokenizer's
    tokens and data.seq_len fits its positions. vocab_size: the tokenizer's, when known (None:
    data.vocab_size for bpe, else not checked here; the worker checks it). Raises ConfigError."""
    if not spec.model.is_hf:
        return
    if vocab_size is None and spec.data.tokenizer == "bpe":
        vocab_size = spec.data.vocab_size
    model, label = build_transformers_model(spec.model, vocab_size, assets, meta=True)
    check_seq_len(model, spec.data.seq_len, label)
    mapping = spec.optimizer.mapping_options()
    classified(model, mapping)
    param_groups(model, spec.optimizer.preset, overrides=spec.optimizer.override_options(), mapping=mapping)


def check_seq_len(model: nn.Module, seq_len: int, label: str) -> None:
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(positions, int) and seq_len > positions:
        raise ConfigError(
            f"data.seq_len={seq_len} exceeds max_position_embeddings={positions} of {label}; lower "
            "data.seq_len (or raise model.config.max_position_embeddings)"
        )


def classified(model: nn.Module, mapping: Mapping[str, Mapped] | None) -> dict[str, ParamInfo]:
    """describe_params of a bare transformers model; parameters no rule claims are a ConfigError
    that names them and shows the `optimizer.mapping` to paste into the spec (refused ones, a
    RefusedParamsError, already name themselves and what to map them to)."""
    try:
        return describe_params(model, mapping=mapping)
    except UnclaimedParamsError as error:
        raise ConfigError(_mapping_advice(error.params)) from None


def _mapping_advice(unclaimed: list[tuple[str, tuple[int, ...]]]) -> str:
    patterns = list(dict.fromkeys(_LAYER_INDEX.sub(".*.", name) for name, _ in unclaimed))
    mapping = json.dumps(dict.fromkeys(patterns, ParamClass.HIDDEN.value))
    listed = ", ".join(f"{name} {shape}" for name, shape in unclaimed[:_LISTED])
    if len(unclaimed) > _LISTED:
        listed += f" and {len(unclaimed) - _LISTED} more"
    classes = ", ".join(c.value for c in ParamClass)
    return (
        f"The optimizer does not know what these parameters are: {listed}. Say it in the spec's "
        f"optimizer.mapping (fnmatch patterns of these names), e.g.\n  optimizer: {{mapping: {mapping}}}\n"
        f"'hidden' gives them the preset's rule for hidden matrices; another class ({classes}) its own, "
        "and [class, layout] where a tensor is stored (in, out) or stacked"
    )
