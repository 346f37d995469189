"""The spec's checks for users' own models and data that need no transformers import.

A job spec is validated on the API's event loop, so these look only at the spec's shape: the
family name, that a config names its `model_type`, that a path stays inside its root, that a
mapping names real classes and layouts. Building the transformers config and classifying the
model's parameters (symopt_core.models.hf) happens off the loop, at submission and in the worker.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError
from .optim.layout import parse_layout
from .params.classes import ParamClass

__all__ = [
    "CUSTOM_FAMILY",
    "DATASET_ID_PATTERN",
    "HF_FAMILIES",
    "KNOWN_LAYOUTS",
    "MAX_BPE_VOCAB",
    "MIN_BPE_VOCAB",
    "MODEL_ID_PATTERN",
    "check_hf_model_fields",
    "check_mapping",
    "check_relative_path",
    "hf_label",
    "is_custom_family",
    "is_hf_family",
]

HF_FAMILIES = ("hf", "transformers")
# A model the user's own training script builds (an agent sweep's trials): the service never
# builds it, so it has no size and no config; a `d_model` dim, if given, informs the auto lr range.
CUSTOM_FAMILY = "custom"
# transformers model types whose every parameter the classifier claims by name, each built in
# tests/core (hf_models.py) and trained there (test_hf_jobs.py) or checked against its classes'
# symmetry groups (test_hf_layouts.py); other causal LMs train with optimizer.mapping.
KNOWN_LAYOUTS = (
    "llama", "mistral", "phi3", "mixtral", "qwen3", "qwen3_moe", "qwen2_moe", "gemma3_text", "olmoe",
    "gpt_oss", "gpt2", "deepseek_v3", "aria_text", "ergo",
)  # fmt: skip
DATASET_ID_PATTERN = r"^ds_[0-9a-f]{6,32}$"
MODEL_ID_PATTERN = r"^mdl_[0-9a-f]{6,32}$"
# 256 byte tokens and one end-of-text token, then at least a few merges.
MIN_BPE_VOCAB = 260
MAX_BPE_VOCAB = 1 << 18
_MAX_CONFIG_KEYS = 256


def is_hf_family(family: str) -> bool:
    return family.strip().lower() in HF_FAMILIES


def is_custom_family(family: str) -> bool:
    return family.strip().lower() == CUSTOM_FAMILY


def hf_label(config: Mapping[str, Any] | None, path: str | None) -> str:
    """What logs and errors call an hf model: "llama (config)", "mdl_3f2a9c (pretrained)"."""
    return f"{config.get('model_type')} (config)" if config is not None else f"{path} (pretrained)"


def check_relative_path(value: str, what: str, root: str, example: str) -> None:
    """A ValueError unless `value` is a relative path that cannot leave its root: no absolute
    path, `..`, drive, `~` or %-escape, checked after NFKC folding too ("\u2024\u2024" is ".." there)."""
    folded = unicodedata.normalize("NFKC", value).replace("\\", "/")
    outside = folded.startswith(("/", "~")) or ":" in folded or ".." in folded.split("/")
    if not value or outside or "%" in value:
        raise ValueError(
            f"{what} {value!r} must be a relative path inside the {root}, without '..' or %-escapes, "
            f"e.g. {example}"
        )


def check_hf_model_fields(
    config: Mapping[str, Any] | None, path: str | None, size: str | None, dims: Mapping[str, Any]
) -> None:
    """The shape of an hf model spec: exactly one of `config` and `path`, no size or dims."""
    if (config is None) == (path is None):
        raise ValueError(
            "model family 'hf' takes exactly one of model.config (a transformers config with its "
            "model_type, trained from a random init) and model.path (an uploaded model mdl_... or a "
            "directory under the model root)"
        )
    if size is not None or dims:
        extra = ", ".join(["size", *dims] if size is not None else list(dims))
        raise ValueError(
            f"model family 'hf' takes its sizes from model.config (or the model at model.path), "
            f"not from {extra}: move them into model.config"
        )
    if config is not None:
        model_type = config.get("model_type")
        if not isinstance(model_type, str) or not model_type:
            raise ValueError(
                "model.config needs a model_type (e.g. 'llama', 'qwen3', 'mixtral'): the transformers "
                "architecture its other fields configure"
            )
        if len(config) > _MAX_CONFIG_KEYS:
            raise ValueError(f"model.config has {len(config)} keys; at most {_MAX_CONFIG_KEYS}")
    if path is not None and not path.startswith("mdl_"):
        check_relative_path(path, "model.path", "model root", "mdl_3f2a9c (an uploaded model) or qwen3-0.6b")


def check_mapping(mapping: Mapping[str, str | tuple[str, str]]) -> None:
    """Every target of a spec's parameter mapping is a class, or a (class, layout) pair."""
    classes = ", ".join(c.value for c in ParamClass)
    for pattern, target in mapping.items():
        if not pattern or len(pattern) > 300:
            raise ValueError(f"optimizer.mapping: pattern {pattern!r} must be 1 to 300 characters")
        name, layout = (target, None) if isinstance(target, str) else target
        if name not in {c.value for c in ParamClass}:
            raise ValueError(f"optimizer.mapping[{pattern!r}]: unknown class {name!r}; valid: {classes}")
        if layout is not None:
            try:
                parse_layout(layout)
            except ConfigError as error:
                raise ValueError(f"optimizer.mapping[{pattern!r}]: {error}") from None
