"""A text source (a corpus or an uploaded dataset) tokenized, split, and served from the token cache.

    source = dataset_source(assets.dataset_dir("ds_3f2a9c"), "ds_3f2a9c")
    dataset = tokenized_dataset(source, "bpe", vocab_size=8192, cache_dir=assets.token_cache())

The train/val split is fixed by the text and val_fraction, never by a seed:

- one document (a corpus, a text upload) splits by characters at int(n * (1 - val_fraction)),
  nanoGPT's split; char and byte split their ids there instead, exactly as build_dataset does,
  so a cached corpus gives the very ids it always gave;
- several documents split between documents: the last ones, about val_fraction of the
  characters, validate (at least one document on each side).

A bpe tokenizer learns from the train split only. Documents are joined by the tokenizer's
end-of-text token (bpe: <|endoftext|>; model: its eos token) or, for char and byte, a newline.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers

from ..errors import ConfigError
from .bpe import BPETokenizer, train_bpe
from .corpora import corpus_identity, load_corpus
from .dataset import TokenDataset, train_val_split
from .documents import Documents, load_documents, read_info
from .model_tokenizer import ModelTokenizer, load_model_tokenizer
from .token_cache import Tokenized, load_or_build, storage_dtype
from .tokenizers import Tokenizer, build_tokenizer

__all__ = ["TextSource", "corpus_source", "dataset_source", "split_documents", "tokenized_dataset"]

KINDS = ("char", "byte", "bpe", "model")


@dataclass(frozen=True)
class TextSource:
    """Text to tokenize: its name, what fixes its content (for the cache key), and a loader that
    runs only when the cache misses."""

    name: str  # the corpus name or dataset id, for logs
    identity: dict[str, Any]
    load: Callable[[], tuple[Sequence[str], str]]  # (documents, where they came from)
    sha256: str | None = None  # the text's content hash where it has one (datasets, file corpora)


def corpus_source(
    name: str, *, data_root: str | Path | None = None, options: dict[str, Any] | None = None
) -> TextSource:
    """A corpus by name (see CORPORA) as one document."""
    options = dict(options or {})

    def load() -> tuple[Sequence[str], str]:
        corpus = load_corpus(name, data_root=data_root, **options)
        return [corpus.text], corpus.source

    identity = corpus_identity(name, data_root=data_root, **options)
    return TextSource(name, identity, load, identity.get("sha256"))


def dataset_source(directory: Path, name: str) -> TextSource:
    """An uploaded dataset (what documents.ingest_documents wrote into `directory`)."""
    info = read_info(directory)

    def load() -> tuple[Sequence[str], str]:
        return load_documents(directory), f"dataset:{name} ({info.format}, {info.documents:,} documents)"

    # The content hash, not the id: the same text uploaded twice shares its cache entries.
    return TextSource(name, {"documents": info.sha256}, load, info.sha256)


def split_documents(documents: Sequence[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """(train, val) documents; one document is cut by characters (see the module docstring)."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"Invalid val_fraction: {val_fraction}; use a fraction in (0, 1), e.g. 0.1.")
    if len(documents) == 1:
        train, val = train_val_split(documents[0], val_fraction)
        return [train], [val]
    if isinstance(documents, Documents):
        bounds = documents.bounds
    else:
        bounds = np.concatenate([[0], np.cumsum([len(d) for d in documents])])
    # The boundary nearest to nanoGPT's cut, keeping a document on each side.
    target = bounds[-1] * (1.0 - val_fraction)
    n_train = 1 + int(np.argmin(np.abs(bounds[1:-1] - target)))
    return list(documents[:n_train]), list(documents[n_train:])


def tokenized_dataset(
    source: TextSource,
    tokenizer: str,
    *,
    cache_dir: Path,
    val_fraction: float = 0.1,
    vocab_size: int | None = None,
    model_dir: Path | None = None,
) -> TokenDataset:
    """`source` tokenized by `tokenizer` (char | byte | bpe | model) and split, from the token cache
    under `cache_dir` (tokenized and stored there first if it is not). bpe needs `vocab_size`;
    model needs `model_dir`, the transformers model directory holding the tokenizer."""
    settings, model_tokenizer = _settings(tokenizer, vocab_size, model_dir)
    identity = {"source": source.identity, "tokenizer": settings, "val_fraction": val_fraction}

    def build() -> Tokenized:
        documents, description = source.load()
        train, val, made = _tokenize(documents, settings, val_fraction, model_tokenizer)
        return Tokenized(train, val, made, description, source.sha256)

    cached = load_or_build(cache_dir, identity, build)
    return TokenDataset(
        cached.train,
        cached.val,
        cached.tokenizer,
        source.name,
        cached.source,
        cache="built" if cached.built else "reused",
        cache_key=cached.key,
        seconds=cached.seconds,
        unstored=cached.unstored,
    )


def _settings(
    kind: str, vocab_size: int | None, model_dir: Path | None
) -> tuple[dict[str, Any], ModelTokenizer | None]:
    if kind not in KINDS:
        raise ConfigError(f"Unknown tokenizer {kind!r}; valid names: {', '.join(KINDS)}.")
    if (kind == "bpe") != (vocab_size is not None):
        raise ConfigError(
            f"vocab_size is for the bpe tokenizer only, and bpe needs one; got {kind} and {vocab_size}."
        )
    if kind == "bpe":
        # Another tokenizers release may learn other merges from the same text.
        return {"kind": kind, "vocab_size": vocab_size, "tokenizers": tokenizers.__version__}, None
    if kind == "model":
        if model_dir is None:
            raise ConfigError("The model tokenizer needs model_dir, the model's directory.")
        found = load_model_tokenizer(model_dir)
        state = found.to_dict()
        return {"kind": kind, "sha256": _sha256(state["json"] + "\0" + str(state["eos_token"]))}, found
    return {"kind": kind}, None


def _tokenize(
    documents: Sequence[str],
    settings: dict[str, Any],
    val_fraction: float,
    model_tokenizer: ModelTokenizer | None,
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], Tokenizer]:
    kind = settings["kind"]
    if kind in ("char", "byte"):
        made = build_tokenizer(kind, "\n".join(documents))  # char: the vocabulary of all the text
        dtype = storage_dtype(made.vocab_size)
        if len(documents) == 1:  # build_dataset's ids and split, exactly
            return (*train_val_split(made.encode_array(documents[0], dtype=dtype), val_fraction), made)
        train_docs, val_docs = split_documents(documents, val_fraction)
        return (
            made.encode_array("\n".join(train_docs), dtype=dtype),
            made.encode_array("\n".join(val_docs), dtype=dtype),
            made,
        )
    train_docs, val_docs = split_documents(documents, val_fraction)
    learned: BPETokenizer | ModelTokenizer
    if kind == "bpe":
        learned = train_bpe(train_docs, settings["vocab_size"])
    else:
        assert model_tokenizer is not None  # _settings loaded it
        learned = model_tokenizer
    dtype = storage_dtype(learned.vocab_size)
    return learned.encode_documents(train_docs, dtype), learned.encode_documents(val_docs, dtype), learned


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
