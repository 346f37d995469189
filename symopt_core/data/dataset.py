"""Token datasets: a corpus encoded once and split nanoGPT's way (first 90% train, last 10% val)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from ..errors import ConfigError
from .corpora import Corpus, load_corpus
from .tokenizers import Tokenizer, build_tokenizer

__all__ = ["SPLITS", "TokenDataset", "build_dataset", "train_val_split"]

SPLITS = ("train", "val")

Tokens = TypeVar("Tokens", Tensor, NDArray[Any], list[int], str)


def train_val_split(tokens: Tokens, val_fraction: float = 0.1) -> tuple[Tokens, Tokens]:
    """nanoGPT's split: the first `int(n * (1 - val_fraction))` tokens train, the rest validate.

    Contiguous, not shuffled: validation text is text the model has not seen nearby.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"Invalid val_fraction: {val_fraction}; use a fraction in [0, 1), e.g. 0.1.")
    # int(n * 0.9) exactly as nanoGPT (1 - 0.1 == 0.9 in floating point): 1,003,854 train
    # characters of Tiny Shakespeare's 1,115,394.
    n_train = int(len(tokens) * (1.0 - val_fraction))
    return tokens[:n_train], tokens[n_train:]


@dataclass(frozen=True)
class TokenDataset:
    """Train and val token ids of one corpus, with the tokenizer that made them."""

    train: Tensor = field(repr=False)  # 1-D ids; uint16 when the vocabulary fits (4x less memory), else int64
    val: Tensor = field(repr=False)
    tokenizer: Tokenizer  # saved in checkpoints via tokenizer.to_dict()
    corpus: str  # the corpus name (or uploaded dataset id) a spec used
    source: str  # where its text came from
    # The token cache (token_cache.py): whether this dataset was tokenized now and stored there
    # ("built") or read from it ("reused"); None: not cached. Its entry's key, and the seconds
    # the data took to build or read.
    cache: Literal["built", "reused"] | None = None
    cache_key: str | None = None
    unstored: str | None = None  # why tokens built now could not be stored in the cache
    seconds: float = 0.0

    @classmethod
    def from_corpus(cls, corpus: Corpus, tokenizer: Tokenizer, *, val_fraction: float = 0.1) -> TokenDataset:
        # uint16 holds any id below 65,536 (char and byte vocabularies); the sampler widens
        # each batch to int64, which embedding layers and cross_entropy expect.
        dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.int64
        ids = torch.from_numpy(tokenizer.encode_array(corpus.text, dtype=dtype))
        train, val = train_val_split(ids, val_fraction)
        return cls(train, val, tokenizer, corpus.name, corpus.source)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def split(self, name: str) -> Tensor:
        if name == "train":
            return self.train
        if name == "val":
            return self.val
        raise ConfigError(f"Unknown split {name!r}; valid splits: {', '.join(SPLITS)}.")

    def summary(self) -> str:
        """One log line: what was tokenized, how many tokens, and whether it came from the cache."""
        counts = f"{len(self.train):,} train / {len(self.val):,} val tokens"
        if self.cache == "reused":
            how = f"read from the token cache {self.cache_key:.12} ({self.seconds:.2f} s)"
        elif self.cache == "built" and self.unstored is not None:
            how = (
                f"tokenized now ({self.seconds:.1f} s), in memory: the token cache could not store it "
                f"({self.unstored})"
            )
        elif self.cache == "built":
            how = f"tokenized now ({self.seconds:.1f} s) into the token cache {self.cache_key:.12}"
        else:
            how = "not cached"
        return f"data: {self.corpus} ({self.tokenizer.name}, {self.vocab_size:,} tokens): {counts}, {how}"

    def meta(self) -> dict[str, Any]:
        """What a checkpoint needs to rebuild the tokenizer and recognise the data (nanoGPT's meta.pkl)."""
        return {
            "corpus": self.corpus,
            "source": self.source,
            "tokenizer": self.tokenizer.to_dict(),
            "vocab_size": self.vocab_size,
            "tokens": {s: len(self.split(s)) for s in SPLITS},
        }


def build_dataset(
    corpus_name: str,
    tokenizer_name: str = "char",
    *,
    data_root: str | Path | None = None,
    path: str | Path | None = None,
    val_fraction: float = 0.1,
    **corpus_options: Any,
) -> TokenDataset:
    """Load a corpus by name, build the tokenizer on its whole text, encode it and split it."""
    corpus = load_corpus(corpus_name, data_root=data_root, path=path, **corpus_options)
    tokenizer = build_tokenizer(tokenizer_name, corpus.text)
    return TokenDataset.from_corpus(corpus, tokenizer, val_fraction=val_fraction)
