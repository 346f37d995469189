"""Data: corpora and tokenizers by name, nanoGPT's train/val split, and resumable random batches.

    from symopt_core.data import BatchSampler, build_dataset
    dataset = build_dataset("shakespeare", "char")          # 65 symbols, 1,003,854 / 111,540 tokens
    sampler = BatchSampler(dataset, seed=0)
    x, y = sampler.next("train", batch_size=64, seq_len=256)

Corpora are never committed: a file corpus is found through an explicit path, `$SYMOPT_DATA_DIR`,
the user cache, or a checksummed download from its public source.

Users' own data: documents.py stores an uploaded dataset (text, jsonl, parquet, tar); bpe.py
trains a byte-level BPE on it; model_tokenizer.py reads a model directory's tokenizer;
token_data.py tokenizes a corpus or dataset once per machine into token_cache.py's shared cache.
"""

from __future__ import annotations

from .bpe import END_OF_TEXT, BPETokenizer, train_bpe
from .corpora import CORPORA, SHAKESPEARE, Corpus, CorpusKind, corpus_identity, load_corpus
from .dataset import SPLITS, TokenDataset, build_dataset, train_val_split
from .documents import FORMATS, Documents, DocumentsInfo, ingest_documents, load_documents, read_info
from .model_tokenizer import ModelTokenizer, load_model_tokenizer
from .sampler import BatchSampler
from .sources import DATA_DIR_ENV, RemoteFile, cache_dir, data_root
from .token_cache import find_tokenizers, load_or_build
from .token_data import TextSource, corpus_source, dataset_source, split_documents, tokenized_dataset
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
    "END_OF_TEXT",
    "FORMATS",
    "SHAKESPEARE",
    "SPLITS",
    "TOKENIZERS",
    "BPETokenizer",
    "BatchSampler",
    "ByteTokenizer",
    "CharTokenizer",
    "Corpus",
    "CorpusKind",
    "Documents",
    "DocumentsInfo",
    "ModelTokenizer",
    "RemoteFile",
    "TextSource",
    "TokenDataset",
    "Tokenizer",
    "build_dataset",
    "build_tokenizer",
    "cache_dir",
    "corpus_identity",
    "corpus_source",
    "data_root",
    "dataset_source",
    "find_tokenizers",
    "ingest_documents",
    "load_corpus",
    "load_documents",
    "load_model_tokenizer",
    "load_or_build",
    "read_info",
    "split_documents",
    "tokenized_dataset",
    "tokenizer_from_dict",
    "train_bpe",
    "train_val_split",
]
