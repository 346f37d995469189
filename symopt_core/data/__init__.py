"""Data: corpora and tokenizers by name, nanoGPT's train/val split, and resumable random batches.

    from symopt_core.data import BatchSampler, build_dataset
    dataset = build_dataset("shakespeare", "char")          # 65 symbols, 1,003,854 / 111,540 tokens
    sampler = BatchSampler(dataset, seed=0)
    x, y = sampler.next("train", batch_size=64, seq_len=256)

Corpora are never committed: a file corpus is found through an explicit path, `$SYMOPT_DATA_DIR`,
the user cache, or a checksummed download from its public source.
"""

from __future__ import annotations

from .corpora import CORPORA, SHAKESPEARE, Corpus, CorpusKind, load_corpus
from .dataset import SPLITS, TokenDataset, build_dataset, train_val_split
from .sampler import BatchSampler
from .sources import DATA_DIR_ENV, RemoteFile, cache_dir, data_root
from .tokenizers import (
    TOKENIZERS,
    ByteTokenizer,
    CharTokenizer,
    Tokenizer,
    build_tokenizer,
    tokenizer_from_dict,
)

__all__ = [
    "CORPORA",
    "DATA_DIR_ENV",
    "SHAKESPEARE",
    "SPLITS",
    "TOKENIZERS",
    "BatchSampler",
    "ByteTokenizer",
    "CharTokenizer",
    "Corpus",
    "CorpusKind",
    "RemoteFile",
    "TokenDataset",
    "Tokenizer",
    "build_dataset",
    "build_tokenizer",
    "cache_dir",
    "data_root",
    "load_corpus",
    "tokenizer_from_dict",
    "train_val_split",
]
