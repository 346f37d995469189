"""Tokenizers chosen by name: `char` (nanoGPT's shakespeare_char vocabulary) and `byte` (UTF-8).
Checkpoints also restore the trained `bpe` (bpe.py) and a model's own (`model`, model_tokenizer.py).

Both encode to Python lists for small strings and to numpy arrays (`encode_array`) for whole
corpora: a per-character Python loop over 8 MB of text takes seconds, the vectorized path a
fraction of one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

import numpy as np
from numpy.typing import DTypeLike, NDArray

from ..errors import ConfigError
from .bpe import BPETokenizer
from .model_tokenizer import ModelTokenizer

__all__ = [
    "TOKENIZERS",
    "ByteTokenizer",
    "CharTokenizer",
    "Tokenizer",
    "build_tokenizer",
    "tokenizer_from_dict",
]

# Characters per chunk in the vectorized char encoder: bounds the UTF-32 copy and the int64
# index array to a few MB whatever the corpus size.
_CHUNK = 1 << 20


class Tokenizer(Protocol):
    """What the data pipeline and checkpoints need from a tokenizer."""

    @property
    def name(self) -> str: ...

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def encode_array(self, text: str, dtype: DTypeLike = np.int64) -> NDArray[Any]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


class CharTokenizer:
    """One token per character; the vocabulary is the sorted set of characters of a corpus.

    Built exactly as nanoGPT's shakespeare_char prepare.py does (`sorted(set(text))`), so the
    ids match its meta.pkl: 65 symbols for Tiny Shakespeare, `'\\n'` = 0, `' '` = 1.
    """

    name: ClassVar[str] = "char"

    def __init__(self, chars: str | Sequence[str]) -> None:
        symbols = list(chars)
        if not symbols:
            raise ConfigError(
                "A char tokenizer needs a non-empty vocabulary: build it from a non-empty corpus."
            )
        if any(len(c) != 1 for c in symbols) or len(set(symbols)) != len(symbols):
            raise ConfigError(
                "A char vocabulary must be distinct single characters (as from sorted(set(text)))."
            )
        if symbols != sorted(symbols):
            raise ConfigError(
                "A char vocabulary must be sorted, as nanoGPT builds it: use CharTokenizer.from_text."
            )
        self.chars: str = "".join(symbols)
        self._stoi = {c: i for i, c in enumerate(symbols)}
        # Sorted code points: searchsorted maps a code point to its id in the vectorized encoder.
        self._codes = np.array([ord(c) for c in symbols], dtype=np.uint32)

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self._stoi[c] for c in text]
        except KeyError as e:
            raise self._unknown(str(e.args[0])) from None

    def encode_array(self, text: str, dtype: DTypeLike = np.int64) -> NDArray[Any]:
        out = np.empty(len(text), dtype=dtype)
        for start in range(0, len(text), _CHUNK):
            piece = text[start : start + _CHUNK]
            codes = np.frombuffer(piece.encode("utf-32-le"), dtype=np.uint32)
            ids = np.searchsorted(self._codes, codes)
            # searchsorted returns an insertion point for absent characters: check it is a hit.
            hit = ids < len(self._codes)
            hit[hit] = self._codes[ids[hit]] == codes[hit]
            if not hit.all():
                raise self._unknown(piece[int(np.argmin(hit))])
            out[start : start + len(piece)] = ids
        return out

    def decode(self, ids: Sequence[int]) -> str:
        try:
            # Negative ids would silently index from the end: reject them with the too-large ones.
            if any(i < 0 for i in ids):
                raise IndexError
            return "".join([self.chars[i] for i in ids])
        except (IndexError, TypeError):
            raise ConfigError(
                f"Token ids must be ints in [0, {self.vocab_size}) for this char tokenizer; "
                "decode ids produced by the same tokenizer (restore it with CharTokenizer.from_dict)."
            ) from None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.name, "chars": self.chars}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> CharTokenizer:
        if state.get("kind") != cls.name or not isinstance(state.get("chars"), str):
            raise ConfigError(
                f"Not a char tokenizer state: {dict(state)!r}; pass what CharTokenizer.to_dict() made."
            )
        return cls(state["chars"])

    def _unknown(self, char: str) -> ConfigError:
        return ConfigError(
            f"Character {char!r} (U+{ord(char):04X}) is not in this char tokenizer's vocabulary of "
            f"{self.vocab_size} symbols; build the tokenizer from text that contains it, or use the "
            "'byte' tokenizer, which encodes any text."
        )

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


class ByteTokenizer:
    """One token per UTF-8 byte: vocabulary 256, any text, no state."""

    name: ClassVar[str] = "byte"

    @property
    def vocab_size(self) -> int:
        return 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_array(self, text: str, dtype: DTypeLike = np.int64) -> NDArray[Any]:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(dtype)

    def decode(self, ids: Sequence[int]) -> str:
        try:
            data = bytes(ids)
        except (ValueError, TypeError):
            raise ConfigError("Token ids must be ints in [0, 256) for the byte tokenizer.") from None
        # A model's samples may cut a multi-byte character: show U+FFFD rather than fail.
        return data.decode("utf-8", errors="replace")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.name}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> ByteTokenizer:
        if state.get("kind") != cls.name:
            raise ConfigError(
                f"Not a byte tokenizer state: {dict(state)!r}; pass what ByteTokenizer.to_dict() made."
            )
        return cls()

    def __repr__(self) -> str:
        return "ByteTokenizer()"


# name -> builder from the corpus text (the char vocabulary depends on it; bytes ignore it).
TOKENIZERS: dict[str, Callable[[str], Tokenizer]] = {
    "char": CharTokenizer.from_text,
    "byte": lambda _text: ByteTokenizer(),
}

_FROM_DICT: dict[str, Callable[[Mapping[str, Any]], Tokenizer]] = {
    "char": CharTokenizer.from_dict,
    "byte": ByteTokenizer.from_dict,
    "bpe": BPETokenizer.from_dict,
    "model": ModelTokenizer.from_dict,
}


def build_tokenizer(name: str, text: str = "") -> Tokenizer:
    """The tokenizer `name` (`char` builds its vocabulary from `text`)."""
    if name not in TOKENIZERS:
        raise ConfigError(f"Unknown tokenizer {name!r}; valid names: {', '.join(sorted(TOKENIZERS))}.")
    return TOKENIZERS[name](text)


def tokenizer_from_dict(state: Mapping[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from its `to_dict()` (as stored in a checkpoint)."""
    kind = state.get("kind")
    if not isinstance(kind, str) or kind not in _FROM_DICT:
        raise ConfigError(
            f"Unknown tokenizer state kind {kind!r}; valid kinds: {', '.join(sorted(_FROM_DICT))}. "
            "Pass the dict a tokenizer's to_dict() returned."
        )
    return _FROM_DICT[kind](state)
