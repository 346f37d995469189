"""The token cache: built once per machine (even by racing processes), reused by every later job,
never left half-built; splits fixed by the data; the old char and byte ids kept exactly."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer as RustTokenizer

from symopt_core.assets import Assets
from symopt_core.data import (
    BatchSampler,
    ByteTokenizer,
    DocumentsInfo,
    build_dataset,
    corpus_source,
    dataset_source,
    find_tokenizers,
    ingest_documents,
    load_corpus,
    load_or_build,
    split_documents,
    tokenized_dataset,
)
from symopt_core.data.token_cache import Tokenized, cache_key
from symopt_core.errors import ConfigError
from symopt_core.spec import load_spec
from symopt_core.training import train
from symopt_core.training.job_data import build_job_data
from tests.specs import tiny_job

DATASET = "ds_00aa11"


def _tokens(n_train: int = 100, n_val: int = 10) -> Tokenized:
    ids = np.arange(n_train + n_val, dtype=np.uint16) % 256
    return Tokenized(ids[:n_train], ids[n_train:], ByteTokenizer(), "test")


def _never() -> Tokenized:
    pytest.fail("the cache was built again")


@pytest.fixture(scope="module")
def python_files() -> list[str]:
    """A 64 KiB slice of the standard library as documents, one per source file."""
    text = load_corpus("pystdlib", max_bytes=64 * 1024).text
    return ["# ===== file: " + part for part in text.split("# ===== file: ") if part]


@pytest.fixture
def uploads(tmp_path, python_files) -> tuple[Assets, DocumentsInfo]:
    """An uploaded jsonl dataset of `python_files`, and the Assets that find it."""
    source = tmp_path / "upload.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in python_files), encoding="utf-8")
    info = ingest_documents(source, "jsonl", tmp_path / "datasets" / DATASET)
    return Assets(uploads=tmp_path, cache=tmp_path / "cache"), info


def test_a_second_build_reuses_the_first(tmp_path):
    first = load_or_build(tmp_path, {"data": 1}, _tokens)
    entry = tmp_path / first.key
    stamp = entry.stat().st_mtime_ns
    second = load_or_build(tmp_path, {"data": 1}, _never)
    assert (first.built, second.built) == (True, False)
    assert second.key == first.key
    assert torch.equal(second.train, first.train)
    assert entry.stat().st_mtime_ns == stamp
    assert load_or_build(tmp_path, {"data": 2}, _tokens).key != first.key


def test_a_failed_build_leaves_nothing(tmp_path):
    def broken() -> Tokenized:
        raise ConfigError("the text is bad")

    with pytest.raises(ConfigError, match="the text is bad"):
        load_or_build(tmp_path, {"data": 1}, broken)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == []
    assert load_or_build(tmp_path, {"data": 1}, _tokens).built


def test_tokens_the_cache_cannot_store_are_used_from_memory(tmp_path):
    # A file where the entry's directory would go: storing fails (as on a full or read-only disk).
    key = load_or_build(tmp_path / "probe", {"data": 1}, _tokens).key
    (tmp_path / key).write_text("in the way")
    cached = load_or_build(tmp_path, {"data": 1}, _tokens)
    assert cached.built
    assert cached.unstored is not None
    assert torch.equal(cached.train, torch.from_numpy(_tokens().train))
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".lock") == sorted([key, "probe"])


def _race(cache: str, marker: str, ready: Any, results: Any) -> None:
    torch.set_num_threads(1)

    def slow() -> Tokenized:
        with open(marker, "a") as f:
            f.write("built\n")
        time.sleep(0.5)  # long enough for the other process to find the lock taken
        return _tokens()

    ready.wait()
    cached = load_or_build(Path(cache), {"data": "race"}, slow)
    results.put((cached.built, cached.train.tolist()))


def _killed(cache: str) -> None:
    def dies() -> Tokenized:
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would, mid-build
        return _tokens()

    load_or_build(Path(cache), {"data": "killed"}, dies)


def _spawn() -> Any:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the children inherit it: one torch thread each
    return mp.get_context("spawn")


def test_racing_processes_build_once(tmp_path):
    context = _spawn()
    ready, results = context.Barrier(2), context.SimpleQueue()
    marker = tmp_path / "builds"
    processes = [
        context.Process(target=_race, args=(str(tmp_path / "cache"), str(marker), ready, results))
        for _ in range(2)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0, 0]
    outcomes = sorted(results.get() for _ in range(2))
    assert [built for built, _ in outcomes] == [False, True]
    assert outcomes[0][1] == outcomes[1][1]
    assert marker.read_text() == "built\n"


def test_a_killed_build_leaves_no_entry_and_the_next_builder_cleans_up(tmp_path):
    context = _spawn()
    process = context.Process(target=_killed, args=(str(tmp_path),))
    process.start()
    process.join(timeout=120)
    assert process.exitcode == -signal.SIGKILL
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []
    # What a builder killed while it wrote the entry leaves: a part directory, removed by the next.
    key = cache_key({"data": "killed"})
    (tmp_path / f".{key}.dead.part").mkdir()
    (tmp_path / f".{key}.dead.part" / "train.bin").write_bytes(b"\0" * 10)
    cached = load_or_build(tmp_path, {"data": "killed"}, _tokens)
    assert cached.built
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [cached.key]


def test_cached_ids_are_mapped_copy_on_write_and_sample_as_int64(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch.from_numpy warns on a read-only array
        load_or_build(tmp_path, {"data": 1}, _tokens)
        cached = load_or_build(tmp_path, {"data": 1}, _never)
    assert cached.train.dtype == torch.uint16
    cached.train[0] = 7  # a private page: the file keeps its ids
    assert load_or_build(tmp_path, {"data": 1}, _never).train[0] == 0
    dataset = tokenized_dataset(corpus_source("modular"), "char", cache_dir=tmp_path)
    x, y = BatchSampler(dataset, seed=0).next("train", batch_size=4, seq_len=16)
    assert x.dtype == y.dtype == torch.int64


@pytest.mark.parametrize("tokenizer", ["char", "byte"])
@pytest.mark.parametrize(
    ("corpus", "options"), [("pystdlib", {"max_bytes": 256 * 1024}), ("modular", {}), ("shakespeare", {})]
)
def test_corpora_keep_their_char_and_byte_ids(tmp_path, data_dir, tokenizer, corpus, options):
    today = build_dataset(corpus, tokenizer, data_root=data_dir, **options)
    source = corpus_source(corpus, data_root=data_dir, options=options)
    for expected in ("built", "reused"):
        cached = tokenized_dataset(source, tokenizer, cache_dir=tmp_path)
        assert cached.cache == expected
        assert cached.train.dtype == today.train.dtype
        assert torch.equal(cached.train, today.train)
        assert torch.equal(cached.val, today.val)
        assert cached.tokenizer.to_dict() == today.tokenizer.to_dict()


def test_documents_split_between_documents():
    documents = ["a" * 50, "b" * 30, "c" * 15, "d" * 5]
    assert split_documents(documents, 0.1) == (documents[:3], documents[3:])
    assert split_documents(documents, 0.2) == (documents[:2], documents[2:])  # a boundary at 80%
    assert split_documents(documents, 0.25) == (documents[:2], documents[2:])  # 80/20 is nearest 75/25
    assert split_documents(documents, 0.5) == (documents[:1], documents[1:])
    assert split_documents(["x" * 99, "y"], 0.9) == (["x" * 99], ["y"])  # one document each side
    assert split_documents(["0123456789"], 0.3) == (["0123456"], ["789"])  # one: by characters


def _job(**data: Any) -> dict[str, Any]:
    spec = tiny_job(steps=10, log_every=5, eval={"every": 5, "batches": 2})
    spec["data"] = {"dataset": DATASET, "seq_len": 32, **data}
    return spec


def test_the_split_is_fixed_by_the_data_not_the_seed(uploads):
    assets, _ = uploads
    first = build_job_data(load_spec(_job(tokenizer="char")), assets)
    other_seed = build_job_data(load_spec({**_job(tokenizer="char"), "seed": 7}), assets)
    assert (first.cache, other_seed.cache) == ("built", "reused")
    assert other_seed.cache_key == first.cache_key
    assert torch.equal(first.val, other_seed.val)
    other_fraction = build_job_data(load_spec(_job(tokenizer="char", val_fraction=0.2)), assets)
    assert other_fraction.cache == "built"
    assert len(other_fraction.val) > len(first.val)


def test_documents_are_separated_by_newline_or_end_of_text(uploads, python_files):
    assets, _ = uploads
    train_docs, _ = split_documents(python_files, 0.1)
    char = build_job_data(load_spec(_job(tokenizer="char")), assets)
    assert char.tokenizer.decode(char.train.tolist()) == "\n".join(train_docs)
    bpe = build_job_data(load_spec(_job(tokenizer="bpe", vocab_size=300)), assets)
    assert bpe.tokenizer.decode(bpe.train.tolist()) == "<|endoftext|>".join(train_docs)
    assert int((bpe.train == 0).sum()) == len(train_docs) - 1


def test_trained_tokenizers_are_found_by_the_dataset_hash(uploads):
    assets, info = uploads
    build_job_data(load_spec(_job(tokenizer="char")), assets)  # not a trained tokenizer: not listed
    assert find_tokenizers(assets.token_cache(), info.sha256) == []
    dataset = build_job_data(load_spec(_job(tokenizer="bpe", vocab_size=300)), assets)
    found = find_tokenizers(assets.token_cache(), info.sha256)
    assert [(f["key"], f["vocab_size"], f["val_fraction"]) for f in found] == [(dataset.cache_key, 300, 0.1)]
    assert RustTokenizer.from_file(found[0]["path"]).to_str() == dataset.tokenizer.to_dict()["json"]
    assert find_tokenizers(assets.token_cache(), "0" * 64) == []


def test_a_model_tokenizer_tokenizes_a_dataset(uploads, tmp_path, python_files):
    assets, _ = uploads
    trained = build_job_data(load_spec(_job(tokenizer="bpe", vocab_size=300)), assets)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "tokenizer.json").write_text(trained.tokenizer.to_dict()["json"])
    (model_dir / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    source = dataset_source(assets.dataset_dir(DATASET), DATASET)
    dataset = tokenized_dataset(source, "model", model_dir=model_dir, cache_dir=assets.token_cache())
    assert (dataset.cache, dataset.vocab_size) == ("built", 300)
    assert dataset.cache_key != trained.cache_key
    assert torch.equal(dataset.train, trained.train)  # the same tokenizer and separators


def test_a_job_trains_on_an_uploaded_dataset_with_bpe_and_reuses_its_tokens(uploads, tmp_path):
    assets, _ = uploads
    spec = _job(tokenizer="bpe", vocab_size=512)
    runs = []
    for name in ("first", "second"):
        events: list[Any] = []
        result = train(spec, run_dir=tmp_path / name, assets=assets, report=events.append)
        assert result.status == "succeeded"
        runs.append(
            [e.data["message"] for e in events if e.kind == "log" and e.data["message"].startswith("data:")]
        )
    assert runs[0][0].startswith(f"data: {DATASET} (bpe, 512 tokens): ")
    assert "tokenized now" in runs[0][0]
    assert "read from the token cache" in runs[1][0]
    checkpoint = torch.load(result.checkpoint, weights_only=False)
    assert checkpoint["data"]["tokenizer"]["kind"] == "bpe"
