"""Tokenized data cached once per machine, shared by every job and trial that asks for the same data.

    cached = load_or_build(cache_dir, identity, build)   # build() runs only on a miss
    cached.train, cached.val                             # read-only views of memory-mapped files

An entry is a directory named by the sha256 of its identity (the text's identity, the tokenizer
settings, the split) and FORMAT_VERSION:

    <cache>/<key>/train.bin, val.bin   raw little-endian ids (uint16 when the vocabulary fits, else int32)
    <cache>/<key>/tokenizer.json       bpe and model tokenizers: the `tokenizers` library's file
    <cache>/<key>/meta.json            identity, tokenizer state, token counts, where the text came from

Concurrency: a builder holds an exclusive flock on `<cache>/<key>.lock`, writes into a temporary
sibling directory and renames it into place, so jobs starting together tokenize once and a crash
leaves no half entry (a later builder deletes the crashed one's temporary directory). A reader
that finds the entry's directory uses it without taking the lock: a directory that exists is
complete, and entries are never changed after the rename.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from ..errors import ConfigError
from .tokenizers import Tokenizer, tokenizer_from_dict

__all__ = ["FORMAT_VERSION", "CachedTokens", "Tokenized", "cache_key", "find_tokenizers", "load_or_build"]

FORMAT_VERSION = 1  # bump when the layout or the tokenization of any kind changes
_META, _TOKENIZER = "meta.json", "tokenizer.json"
_SPLITS = ("train", "val")


@dataclass(frozen=True)
class Tokenized:
    """What a build returns: the ids of each split, the tokenizer, and facts for meta.json."""

    train: NDArray[Any] = field(repr=False)
    val: NDArray[Any] = field(repr=False)
    tokenizer: Tokenizer
    source: str  # where the text came from, for logs and checkpoints
    source_sha256: str | None = None  # the text's content hash when it has one (datasets, files)


@dataclass(frozen=True)
class CachedTokens:
    train: Tensor = field(repr=False)  # 1-D ids, memory-mapped (private copy-on-write pages)
    val: Tensor = field(repr=False)
    tokenizer: Tokenizer
    source: str
    key: str
    built: bool  # True: this call tokenized; False: it read what an earlier call had stored
    seconds: float  # time this call took, build or read
    unstored: str | None = None  # why this call's tokens could not be stored (a full disk): in memory


def storage_dtype(vocab_size: int) -> np.dtype[Any]:
    """uint16 holds any id below 65,536 (4x less memory than int64); larger vocabularies take int32.
    Little-endian explicitly: a cache on a shared filesystem may be read by another machine."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<i4")


def cache_key(identity: Mapping[str, Any]) -> str:
    """The sha256 naming the entry of `identity` (a JSON-able description of the data)."""
    canonical = json.dumps({"format": FORMAT_VERSION, **identity}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def load_or_build(
    cache_dir: Path, identity: Mapping[str, Any], build: Callable[[], Tokenized]
) -> CachedTokens:
    """The entry of `identity` under `cache_dir`, built by `build()` first when there is none."""
    started = time.perf_counter()
    key = cache_key(identity)
    entry = cache_dir / key
    built = False
    if not entry.is_dir():
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(
                f"Cannot create the token cache {cache_dir} ({e}); point Assets(cache=...) (the "
                "service's artifact root) at a writable directory."
            ) from None
        with _locked(cache_dir / f"{key}.lock"):
            # Another process may have built it while this one waited for the lock.
            if not entry.is_dir():
                made = build()
                try:
                    _store(cache_dir, key, identity, made, time.perf_counter() - started)
                except OSError as error:
                    # The cache only saves time: a job whose tokens do not fit on the disk (or
                    # whose cache is read-only) trains on them from memory.
                    return _in_memory(made, key, started, f"{type(error).__name__}: {error}")
                built = True
    return _open(entry, key, built, started)


def find_tokenizers(cache_dir: Path, source_sha256: str) -> list[dict[str, Any]]:
    """The BPE tokenizers trained on the text whose content hash is `source_sha256` (a dataset's
    DocumentsInfo.sha256, or a file corpus's sha256), newest first: dicts of `key`, `kind`, `vocab_size`,
    `val_fraction` (it fixed the train split they learned from), `created` (Unix time) and `path`
    (the tokenizer.json, loadable by `tokenizers.Tokenizer.from_file` and transformers)."""
    found = []
    for meta_file in cache_dir.glob(f"*/{_META}"):
        if meta_file.parent.name.startswith("."):  # a build in progress
            continue
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # not an entry of ours; never fail a listing over it
        if meta.get("source_sha256") != source_sha256 or meta.get("tokenizer", {}).get("kind") != "bpe":
            continue
        found.append(
            {
                "key": meta_file.parent.name,
                "kind": "bpe",
                "vocab_size": meta["vocab_size"],
                "val_fraction": meta["identity"]["val_fraction"],
                "created": meta["created"],
                "path": str(meta_file.parent / _TOKENIZER),
            }
        )
    return sorted(found, key=lambda entry: -entry["created"])


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        # flock, not fcntl.lockf: it locks the open file, so threads of one process exclude each
        # other too, and the kernel releases it when a builder dies.
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _in_memory(made: Tokenized, key: str, started: float, why: str) -> CachedTokens:
    dtype = storage_dtype(made.tokenizer.vocab_size).newbyteorder("=")
    train, val = (torch.from_numpy(np.ascontiguousarray(ids, dtype=dtype)) for ids in (made.train, made.val))
    seconds = time.perf_counter() - started
    return CachedTokens(train, val, made.tokenizer, made.source, key, True, seconds, unstored=why)


def _store(cache_dir: Path, key: str, identity: Mapping[str, Any], made: Tokenized, seconds: float) -> None:
    for stale in cache_dir.glob(f".{key}.*.part"):  # left by a builder that died; we hold the lock
        shutil.rmtree(stale, ignore_errors=True)
    work = cache_dir / f".{key}.{uuid.uuid4().hex[:8]}.part"
    try:
        work.mkdir()
        dtype = storage_dtype(made.tokenizer.vocab_size)
        for name, ids in zip(_SPLITS, (made.train, made.val), strict=True):
            np.ascontiguousarray(ids, dtype=dtype).tofile(work / f"{name}.bin")
        state = made.tokenizer.to_dict()
        if "json" in state:  # bpe and model: the tokenizers file beside the ids, for download
            (work / _TOKENIZER).write_text(state.pop("json"), encoding="utf-8")
        meta = {
            "identity": dict(identity),
            "tokenizer": state,
            "vocab_size": made.tokenizer.vocab_size,
            "dtype": dtype.str,
            "tokens": {"train": len(made.train), "val": len(made.val)},
            "source": made.source,
            "source_sha256": made.source_sha256,
            "created": time.time(),
            "build_seconds": round(seconds, 3),
        }
        (work / _META).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        os.replace(work, cache_dir / key)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _open(entry: Path, key: str, built: bool, started: float) -> CachedTokens:
    try:
        meta = json.loads((entry / _META).read_text(encoding="utf-8"))
        state = dict(meta["tokenizer"])
        if (entry / _TOKENIZER).is_file():
            state["json"] = (entry / _TOKENIZER).read_text(encoding="utf-8")
        dtype = np.dtype(meta["dtype"])
        splits = [_mapped(entry / f"{name}.bin", dtype, int(meta["tokens"][name])) for name in _SPLITS]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"The token cache entry {entry} is damaged ({e}); delete that directory and it is rebuilt."
        ) from None
    return CachedTokens(
        splits[0],
        splits[1],
        tokenizer_from_dict(state),
        meta["source"],
        key,
        built,
        time.perf_counter() - started,
    )


def _mapped(path: Path, dtype: np.dtype[Any], count: int) -> Tensor:
    if path.stat().st_size != count * dtype.itemsize:
        raise ValueError(f"{path.name} holds {path.stat().st_size} bytes, not {count} ids of {dtype}")
    if count == 0:  # mmap cannot map an empty file
        return torch.from_numpy(np.empty(0, dtype=dtype.newbyteorder("=")))
    # mode "c" maps the file copy-on-write: the pages are shared with every other job reading it,
    # nothing is read until used, and the array is writable (torch.from_numpy warns on read-only
    # arrays) without a write ever reaching the file.
    return torch.from_numpy(np.memmap(path, dtype=dtype, mode="c", shape=(count,)))
