"""The tokenizer stored with a transformers model (`data.tokenizer: model`), read from local files only.

A model directory's `tokenizer.json` is loaded by the `tokenizers` library directly (fast, and no
transformers import); a directory with only the older files (vocab.json + merges.txt, a
SentencePiece model) goes through `transformers.AutoTokenizer` once, offline, and is kept as the
fast tokenizer's JSON from then on, so checkpoints and the token cache need only that text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import DTypeLike, NDArray
from tokenizers import Tokenizer as RustTokenizer

from ..errors import ConfigError
from ..extras import require
from .bpe import encode_joined

__all__ = ["ModelTokenizer", "load_model_tokenizer"]

# Files from which transformers can build a fast tokenizer when tokenizer.json is absent.
_LEGACY_FILES = ("tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model", "vocab.txt")


class ModelTokenizer:
    """A model's own tokenizer: its tokenizer.json text and its end-of-sequence token."""

    name: ClassVar[str] = "model"

    def __init__(self, json_text: str, eos_token: str | None) -> None:
        try:
            self._rust = RustTokenizer.from_str(json_text)
        except Exception as e:  # the Rust side raises plain Exceptions for malformed JSON
            raise ConfigError(
                f"The model's tokenizer.json does not load ({e}); upload a valid one."
            ) from None
        self._json = json_text
        self.eos_token = eos_token
        self.eos_id: int | None = None if eos_token is None else self._rust.token_to_id(eos_token)
        if eos_token is not None and self.eos_id is None:
            raise ConfigError(
                f"The model's eos token {eos_token!r} is not in its tokenizer's vocabulary; fix "
                "eos_token in tokenizer_config.json."
            )
        vocab = self._rust.get_vocab(with_added_tokens=True)
        # len(tokenizer) as transformers counts it, widened to cover the largest id should the
        # ids have gaps: every id must index the embedding.
        self._size = max(len(vocab), max(vocab.values(), default=-1) + 1)

    @property
    def vocab_size(self) -> int:
        return self._size

    def encode(self, text: str) -> list[int]:
        return list(self._rust.encode(text, add_special_tokens=False).ids)

    def encode_array(self, text: str, dtype: DTypeLike = np.int64) -> NDArray[Any]:
        return encode_joined(self._rust, [text], None, dtype)

    def encode_documents(self, documents: Iterable[str], dtype: DTypeLike = np.int64) -> NDArray[Any]:
        """Each document whole (a model's pre-tokenizer may treat a text's start specially, so
        documents are not cut), with the eos token between documents when the model has one."""
        if self.eos_id is None:
            return encode_joined(self._rust, _with_newlines(documents), None, dtype)
        return encode_joined(self._rust, documents, self.eos_id, dtype)

    def decode(self, ids: Sequence[int]) -> str:
        try:
            return str(self._rust.decode(list(ids), skip_special_tokens=False))
        except (OverflowError, TypeError):
            raise ConfigError(
                f"Token ids must be ints in [0, {self.vocab_size}) for this tokenizer."
            ) from None

    def token_of(self, token_id: int) -> str | None:
        """The token with id `token_id`, None when there is none."""
        token = self._rust.id_to_token(token_id)
        return None if token is None else str(token)

    def to_json(self) -> str:
        return self._json

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.name, "json": self._json, "eos_token": self.eos_token}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> ModelTokenizer:
        eos = state.get("eos_token")
        if (
            state.get("kind") != cls.name
            or not isinstance(state.get("json"), str)
            or not isinstance(eos, str | None)
        ):
            raise ConfigError("Not a model tokenizer state; pass what ModelTokenizer.to_dict() made.")
        return cls(state["json"], eos)

    def __repr__(self) -> str:
        return f"ModelTokenizer(vocab_size={self.vocab_size}, eos_token={self.eos_token!r})"


def _with_newlines(documents: Iterable[str]) -> Iterable[str]:
    # Without an eos token, documents are joined as the char and byte tokenizers join them.
    iterator = iter(documents)
    first = next(iterator, None)
    if first is None:
        return
    yield first
    for document in iterator:
        yield "\n" + document


def load_model_tokenizer(model_dir: Path) -> ModelTokenizer:
    """The tokenizer saved in the transformers model directory `model_dir` (never the hub)."""
    if (model_dir / "tokenizer.json").is_file():
        text = (model_dir / "tokenizer.json").read_text(encoding="utf-8")
        eos = _configured_eos(model_dir)
        if isinstance(eos, int):  # only an id in the model's config: name its token
            eos = ModelTokenizer(text, None).token_of(eos)
        return ModelTokenizer(text, eos)
    if not any((model_dir / name).is_file() for name in _LEGACY_FILES):
        raise ConfigError(
            f"The model directory {model_dir.name!r} has no tokenizer (no tokenizer.json or "
            "tokenizer_config.json): upload the model together with its tokenizer files, or set "
            "data.tokenizer to char, byte or bpe."
        )
    require("transformers", f"The tokenizer of {model_dir.name!r} (no tokenizer.json)")
    import transformers  # slow to import, and only older model directories need it

    try:
        loaded = transformers.AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError, ImportError) as e:
        raise ConfigError(
            f"The tokenizer of the model directory {model_dir.name!r} does not load ({e}); upload "
            "its tokenizer.json, or set data.tokenizer to char, byte or bpe."
        ) from None
    if not getattr(loaded, "is_fast", False):
        raise ConfigError(
            f"The tokenizer of {model_dir.name!r} has no fast (Rust) version; upload a tokenizer.json "
            "for the model, or set data.tokenizer to char, byte or bpe."
        )
    return ModelTokenizer(loaded.backend_tokenizer.to_str(), loaded.eos_token)


def _configured_eos(model_dir: Path) -> str | int | None:
    """The eos token as transformers finds it: tokenizer_config.json's eos_token, else the id in
    generation_config.json or config.json (the first, when it lists several stop tokens)."""
    eos = _read_json(model_dir / "tokenizer_config.json").get("eos_token")
    if isinstance(eos, Mapping):  # an AddedToken saved as a dict
        eos = eos.get("content")
    if isinstance(eos, str):
        return eos
    for name in ("generation_config.json", "config.json"):
        eos_id = _read_json(model_dir / name).get("eos_token_id")
        if isinstance(eos_id, list):
            eos_id = eos_id[0] if eos_id else None
        if isinstance(eos_id, int) and not isinstance(eos_id, bool):
            return eos_id
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path.name} of the model does not parse ({e}); upload a valid one.") from None
    return value if isinstance(value, dict) else {}
