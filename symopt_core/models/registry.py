"""The model registry: a family name and a size name (or explicit dims) -> a model."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from ..errors import ConfigError, did_you_mean
from . import gemma3, gpt2, gpt_oss, olmoe, qwen3
from .base import CausalLM

__all__ = ["MODEL_FAMILIES", "ModelFamily", "build_config", "build_model", "list_models"]


@dataclass(frozen=True)
class ModelFamily:
    name: str
    config: type[Any]  # the family's frozen config dataclass; its defaults are the `small` size
    model: Callable[[Any], CausalLM]  # config -> model
    sizes: Mapping[str, Mapping[str, Any]]  # size name -> overrides of the config defaults
    description: str

    def dims(self) -> list[str]:
        return [f.name for f in fields(self.config)]


MODEL_FAMILIES: dict[str, ModelFamily] = {
    "gpt2": ModelFamily("gpt2", gpt2.GPT2Config, gpt2.GPT2, gpt2.SIZES, "nanoGPT's GPT-2"),
    "qwen3": ModelFamily("qwen3", qwen3.Qwen3Config, qwen3.Qwen3, qwen3.SIZES, "Qwen3 dense"),
    "gemma3": ModelFamily("gemma3", gemma3.Gemma3Config, gemma3.Gemma3, gemma3.SIZES, "Gemma 3 text"),
    "olmoe": ModelFamily("olmoe", olmoe.OLMoEConfig, olmoe.OLMoE, olmoe.SIZES, "OLMoE mixture of experts"),
    "gpt-oss": ModelFamily("gpt-oss", gpt_oss.GptOssConfig, gpt_oss.GptOss, gpt_oss.SIZES, "gpt-oss MoE"),
}
_ALIASES = {"gpt_oss": "gpt-oss", "gptoss": "gpt-oss", "gemma-3": "gemma3", "qwen-3": "qwen3"}


def get_family(family: str) -> ModelFamily:
    """The registered family named `family` (case-insensitive; `gpt_oss` is `gpt-oss`)."""
    key = family.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in MODEL_FAMILIES:
        raise ConfigError(
            f"Unknown model family: {family!r}{did_you_mean(family, MODEL_FAMILIES)}; valid families: "
            f"{', '.join(MODEL_FAMILIES)}"
        )
    return MODEL_FAMILIES[key]


def build_config(family: str, size: str | None = None, *, vocab_size: int | None = None, **dims: Any) -> Any:
    """The config of `family` at `size` (None: the config defaults), with `dims` overriding the table."""
    spec = get_family(family)
    values: dict[str, Any] = {}
    if size is not None:
        sizes = {name.lower(): name for name in spec.sizes}
        if size.strip().lower() not in sizes:
            raise ConfigError(
                f"Unknown size {size!r} for model family {spec.name!r}; valid sizes: {', '.join(spec.sizes)}"
            )
        values.update(spec.sizes[sizes[size.strip().lower()]])
    unknown = sorted(set(dims) - set(spec.dims()))
    if unknown:
        raise ConfigError(
            f"Unknown dim(s) {', '.join(map(repr, unknown))} for model family {spec.name!r}; "
            f"valid dims: {', '.join(spec.dims())}"
        )
    values.update(dims)
    if vocab_size is not None:
        values["vocab_size"] = vocab_size
    return spec.config(**values)


def build_model(
    family: str, size: str | None = None, *, vocab_size: int | None = None, **dims: Any
) -> CausalLM:
    """A freshly initialised model; e.g. `build_model("qwen3", "tiny", vocab_size=65, n_layers=4)`.

    Build large sizes under `with torch.device("meta"):` to inspect them without allocating memory.
    """
    spec = get_family(family)
    return spec.model(build_config(spec.name, size, vocab_size=vocab_size, **dims))


def list_models() -> dict[str, list[str]]:
    """{family: [size names]}, for `symopt models`."""
    return {name: list(spec.sizes) for name, spec in MODEL_FAMILIES.items()}
