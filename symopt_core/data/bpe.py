"""Byte-level BPE (GPT-2's scheme) trained on a dataset with the `tokenizers` library.

    tokenizer = train_bpe(train_documents, vocab_size=8192)
    ids = tokenizer.encode_documents(documents, dtype=np.uint16)   # <|endoftext|> between documents

The vocabulary is one special token, `<|endoftext|>` (id 0), the 256 byte symbols (so any text
encodes, with no unknown token), then the learned merges. Training and encoding run in Rust;
whole corpora are cut into pieces at places where the cut cannot change a token, and encoded in
batches (in parallel, unless RAYON_NUM_THREADS says otherwise).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from numpy.typing import DTypeLike, NDArray
from tokenizers import Tokenizer as RustTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from ..errors import ConfigError

__all__ = ["END_OF_TEXT", "BPETokenizer", "encode_joined", "safe_pieces", "train_bpe"]

END_OF_TEXT = "<|endoftext|>"
_BASE_VOCAB = 257  # the special token and the 256 bytes, before any merge
_PIECE = 1 << 18  # characters per piece: bounds per-call memory, and gives rayon pieces to share out
_BATCH = 16 << 20  # characters per encode_batch call

# A cut between "x\n" and "y", x and y visible ASCII, splits no pre-token of the ByteLevel regex:
# a lone "\n" after a non-space is its own pre-token either way, and no pre-token starts before a
# non-space to take it in (only a plain space may lead one). Longer whitespace runs are never cut,
# since the regex splits "\n\n" before "y" differently from "\n\n" at the end of a piece.
_SAFE_CUT = re.compile(r"[!-~]\n(?=[!-~])")


def safe_pieces(text: str, size: int = _PIECE) -> list[str]:
    """`text` cut into pieces of about `size` characters that a ByteLevel BPE encodes exactly as
    it encodes the whole (a text without a safe place to cut stays whole)."""
    pieces, start = [], 0
    while len(text) - start > size and (cut := _SAFE_CUT.search(text, start + size)) is not None:
        pieces.append(text[start : cut.end()])
        start = cut.end()
    pieces.append(text[start:])
    return pieces


def encode_joined(
    tokenizer: RustTokenizer,
    documents: Iterable[str],
    separator: int | None,
    dtype: DTypeLike,
    pieces: Callable[[str], list[str]] = lambda text: [text],
) -> NDArray[Any]:
    """The ids of `documents` with `separator` between consecutive ones (none after the last)."""
    parts: list[NDArray[Any]] = []
    batch: list[str] = []
    ends: list[bool] = []  # whether batch[i] is the last piece of a document
    size = 0

    def flush() -> None:
        ids: list[int] = []
        # encode_batch_fast skips the character offsets, which nothing here needs.
        for encoding, last in zip(
            tokenizer.encode_batch_fast(batch, add_special_tokens=False), ends, strict=True
        ):
            ids.extend(encoding.ids)
            if last and separator is not None:
                ids.append(separator)
        parts.append(np.asarray(ids, dtype=dtype))
        batch.clear()
        ends.clear()

    for document in documents:
        cut = pieces(document)
        batch.extend(cut)
        ends.extend([False] * (len(cut) - 1) + [True])
        size += len(document)
        if size >= _BATCH:
            flush()
            size = 0
    if batch:
        flush()
    joined = np.concatenate(parts) if parts else np.empty(0, dtype=dtype)
    return joined[:-1] if separator is not None and len(joined) else joined


class BPETokenizer:
    """A trained byte-level BPE; `to_dict()` holds its tokenizer.json text, so checkpoints rebuild it."""

    name: ClassVar[str] = "bpe"
    end_of_text: ClassVar[str] = END_OF_TEXT

    def __init__(self, tokenizer: RustTokenizer) -> None:
        end = tokenizer.token_to_id(END_OF_TEXT)
        if end is None:
            raise ConfigError(
                f"Not a symopt BPE tokenizer: it has no {END_OF_TEXT} token; train one with train_bpe."
            )
        self._rust = tokenizer
        self.end_of_text_id: int = end

    @classmethod
    def from_json(cls, text: str) -> BPETokenizer:
        try:
            return cls(RustTokenizer.from_str(text))
        except Exception as e:  # the Rust side raises plain Exceptions for malformed JSON
            raise ConfigError(f"Not a tokenizer.json ({e}); pass what BPETokenizer.to_json() made.") from None

    @property
    def vocab_size(self) -> int:
        return int(self._rust.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        return list(self._rust.encode(text, add_special_tokens=False).ids)

    def encode_array(self, text: str, dtype: DTypeLike = np.int64) -> NDArray[Any]:
        return encode_joined(self._rust, [text], None, dtype, safe_pieces)

    def encode_documents(self, documents: Iterable[str], dtype: DTypeLike = np.int64) -> NDArray[Any]:
        return encode_joined(self._rust, documents, self.end_of_text_id, dtype, safe_pieces)

    def decode(self, ids: Sequence[int]) -> str:
        try:
            # Keep <|endoftext|>: a decoded sample shows where the model ended a document.
            return str(self._rust.decode(list(ids), skip_special_tokens=False))
        except (OverflowError, TypeError):
            raise ConfigError(
                f"Token ids must be ints in [0, {self.vocab_size}) for this BPE tokenizer."
            ) from None

    def to_json(self) -> str:
        """The tokenizer.json text (loadable by `tokenizers.Tokenizer.from_file` and transformers)."""
        return str(self._rust.to_str())

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.name, "json": self.to_json()}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> BPETokenizer:
        if state.get("kind") != cls.name or not isinstance(state.get("json"), str):
            raise ConfigError("Not a bpe tokenizer state; pass what BPETokenizer.to_dict() made.")
        return cls.from_json(state["json"])

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"


def train_bpe(texts: Iterable[str], vocab_size: int) -> BPETokenizer:
    """A byte-level BPE of exactly `vocab_size` tokens learned from `texts` (the train split).

    Deterministic: the same texts give the same tokenizer.json. Raises a ConfigError when the
    texts hold too few distinct pairs to reach `vocab_size`.
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < _BASE_VOCAB:
        raise ConfigError(
            f"Invalid BPE vocab_size {vocab_size!r}; it must be an int >= {_BASE_VOCAB} "
            "(256 bytes and <|endoftext|>, before any merge)."
        )
    tokenizer = RustTokenizer(models.BPE())
    # No prefix space: a document's first word is encoded as written, and decode(encode(t)) == t.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        # All 256 byte symbols, whether or not the train split uses them: val text and later
        # samples may hold bytes the train split lacks, and must still encode.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    characters = 0

    def pieces() -> Iterator[str]:
        nonlocal characters
        for text in texts:
            characters += len(text)
            # Pieces, not whole documents: the trainer counts words in parallel per input.
            yield from safe_pieces(text)

    tokenizer.train_from_iterator(pieces(), trainer)
    trained = BPETokenizer(tokenizer)
    if trained.vocab_size != vocab_size:
        raise ConfigError(
            f"The train split ({characters:,} characters) yields only {trained.vocab_size} BPE tokens, "
            f"fewer than vocab_size={vocab_size}; lower data.vocab_size to at most {trained.vocab_size}, "
            "or train on more text."
        )
    return trained
