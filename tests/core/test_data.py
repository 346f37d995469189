"""Data pipeline: tokenizers, corpus resolution (path, data root, cache, download), split, sampler."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch

from service.testing import free_port
from symopt_core.data import (
    SHAKESPEARE,
    BatchSampler,
    ByteTokenizer,
    CharTokenizer,
    TokenDataset,
    build_dataset,
    build_tokenizer,
    cache_dir,
    load_corpus,
    tokenizer_from_dict,
    train_val_split,
)
from symopt_core.errors import ConfigError

SHAKESPEARE_BYTES = 1_115_394
NANOGPT_TRAIN, NANOGPT_VAL = 1_003_854, 111_540


def _find_shakespeare() -> Path:
    # CI exports SYMOPT_DATA_DIR; a checkout beside ../shared and this machine's /work/shared follow.
    candidates = [Path(__file__).resolve().parents[3] / "shared" / "data", Path("/work/shared/data")]
    if os.environ.get("SYMOPT_DATA_DIR"):
        candidates.insert(0, Path(os.environ["SYMOPT_DATA_DIR"]))
    for directory in candidates:
        if (directory / "tinyshakespeare.txt").is_file():
            return directory / "tinyshakespeare.txt"
    pytest.fail(
        "tinyshakespeare.txt not found in any of "
        + ", ".join(str(c) for c in candidates)
        + "; export SYMOPT_DATA_DIR=<directory holding tinyshakespeare.txt>."
    )


@pytest.fixture(scope="module")
def reference() -> Path:
    return _find_shakespeare()


@pytest.fixture(scope="module")
def shakespeare_text(reference) -> str:
    return reference.read_text(encoding="utf-8")


@pytest.fixture
def clean_env(monkeypatch, tmp_path) -> Path:
    """No data root, an empty user cache under tmp_path; returns the cache directory."""
    monkeypatch.delenv("SYMOPT_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    # The local test server must be reached directly even where a proxy is configured.
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    return tmp_path / "xdg" / "symopt" / "data"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def served(tmp_path):
    """An HTTP server on 127.0.0.1 serving a fresh directory: yields (base URL, directory)."""
    root = tmp_path / "served"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root))
    )
    # A short poll interval: shutdown() waits for the serving loop to notice it.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _corrupt_copy(reference: Path, dest: Path) -> Path:
    data = bytearray(reference.read_bytes())
    data[1000] ^= 0x01  # same size, one bit off: only the checksum can tell
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(bytes(data))
    return dest


# ---- tokenizers -------------------------------------------------------------------------------


def test_reference_file_matches_the_hard_coded_checksum(reference):
    data = reference.read_bytes()
    assert len(data) == SHAKESPEARE_BYTES == SHAKESPEARE.size
    assert hashlib.sha256(data).hexdigest() == SHAKESPEARE.sha256


def test_char_tokenizer_has_nanogpts_65_symbols_and_round_trips(shakespeare_text):
    tok = CharTokenizer.from_text(shakespeare_text)
    assert tok.vocab_size == 65
    assert tok.chars == "".join(sorted(set(shakespeare_text)))
    assert tok.encode("\n ") == [0, 1]  # nanoGPT's meta.pkl: '\n' -> 0, ' ' -> 1
    ids = tok.encode_array(shakespeare_text)
    assert ids.tolist() == tok.encode(shakespeare_text)
    assert tok.decode(ids.tolist()) == shakespeare_text
    restored = tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))
    assert isinstance(restored, CharTokenizer)
    assert restored.chars == tok.chars


def test_char_tokenizer_rejects_unknown_characters_and_ids():
    tok = CharTokenizer.from_text("abc\n")
    with pytest.raises(ConfigError, match=r"'é'.*byte"):
        tok.encode("cabé")
    with pytest.raises(ConfigError, match="'é'"):
        tok.encode_array("ab" * 10 + "é")
    for bad in ([4], [-1]):
        with pytest.raises(ConfigError, match=r"\[0, 4\)"):
            tok.decode(bad)
    with pytest.raises(ConfigError, match="sorted"):
        CharTokenizer("ba")


def test_byte_tokenizer_round_trips_non_ascii_text():
    text = "héllo wörld — 日本語, emoji 🎉\n"
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert tok.vocab_size == 256
    assert ids == list(text.encode("utf-8"))
    assert len(ids) > len(text)
    assert tok.encode_array(text).tolist() == ids
    assert tok.decode(ids) == text
    assert tok.decode(ids[:-2]).endswith("\ufffd")  # a cut multi-byte character is replaced, not fatal
    assert isinstance(tokenizer_from_dict(tok.to_dict()), ByteTokenizer)
    with pytest.raises(ConfigError, match=r"\[0, 256\)"):
        tok.decode([256])


def test_tokenizer_registry():
    assert build_tokenizer("char", "bab").encode("ab") == [0, 1]
    assert build_tokenizer("byte").encode("A") == [65]
    with pytest.raises(ConfigError, match=r"'bpe'.*byte, char"):
        build_tokenizer("bpe")
    with pytest.raises(ConfigError, match=r"valid kinds: bpe, byte, char, model"):
        tokenizer_from_dict({"kind": "sentencepiece"})
    with pytest.raises(ConfigError, match="Not a bpe tokenizer state"):
        tokenizer_from_dict({"kind": "bpe"})  # a trained BPE's state carries its tokenizer.json


# ---- shakespeare resolution -------------------------------------------------------------------


def test_shakespeare_from_an_explicit_path(clean_env, reference, shakespeare_text):
    corpus = load_corpus("shakespeare", path=reference, download=False)
    assert corpus.text == shakespeare_text
    assert corpus.source == f"path:{reference}"
    with pytest.raises(ConfigError, match="No file at the explicit path"):
        load_corpus("shakespeare", path=reference.parent / "missing.txt")


def test_shakespeare_from_the_data_root(clean_env, monkeypatch, tmp_path, reference):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copy(reference, data_dir / "tinyshakespeare.txt")
    monkeypatch.setenv("SYMOPT_DATA_DIR", str(data_dir))
    corpus = load_corpus("shakespeare", download=False)
    assert corpus.source == f"data_root:{data_dir / 'tinyshakespeare.txt'}"
    assert len(corpus.text) == SHAKESPEARE_BYTES
    # An explicit data_root argument wins over the environment.
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(reference, other / "tinyshakespeare.txt")
    assert load_corpus("shakespeare", data_root=other).source == f"data_root:{other / 'tinyshakespeare.txt'}"


def test_shakespeare_from_the_user_cache(clean_env, monkeypatch, tmp_path, reference):
    assert cache_dir() == clean_env
    clean_env.mkdir(parents=True)
    shutil.copy(reference, clean_env / "tinyshakespeare.txt")
    corpus = load_corpus("shakespeare", download=False)
    assert corpus.source == f"cache:{clean_env / 'tinyshakespeare.txt'}"
    # Without XDG_CACHE_HOME the cache is ~/.cache/symopt/data.
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    home_cache = tmp_path / "home" / ".cache" / "symopt" / "data"
    assert cache_dir() == home_cache
    home_cache.mkdir(parents=True)
    shutil.copy(reference, home_cache / "tinyshakespeare.txt")
    assert load_corpus("shakespeare", download=False).source == f"cache:{home_cache / 'tinyshakespeare.txt'}"


def test_a_wrong_checksum_is_rejected(clean_env, monkeypatch, tmp_path, reference):
    bad = _corrupt_copy(reference, tmp_path / "data" / "tinyshakespeare.txt")
    with pytest.raises(ConfigError, match=r"sha256.*fresh copy"):
        load_corpus("shakespeare", path=bad)
    monkeypatch.setenv("SYMOPT_DATA_DIR", str(bad.parent))
    with pytest.raises(ConfigError, match="data root"):
        load_corpus("shakespeare")
    assert bad.is_file()  # a user's file is reported, never deleted


def test_shakespeare_is_downloaded_into_the_cache(clean_env, served, reference, shakespeare_text):
    base, root = served
    shutil.copy(reference, root / "input.txt")
    corpus = load_corpus("shakespeare", url=f"{base}/input.txt")
    cached = clean_env / "tinyshakespeare.txt"
    assert corpus.source == f"download:{base}/input.txt -> {cached}"
    assert corpus.text == shakespeare_text
    assert sorted(p.name for p in clean_env.iterdir()) == ["tinyshakespeare.txt"]  # no temp file left
    # The next load finds the cache and does not download (this URL would fail).
    assert load_corpus("shakespeare", url=f"{base}/gone.txt").source == f"cache:{cached}"
    # A corrupt cache entry is dropped and fetched again.
    _corrupt_copy(reference, cached)
    assert load_corpus("shakespeare", url=f"{base}/input.txt").source.startswith("download:")
    assert cached.read_bytes() == reference.read_bytes()


def test_a_download_with_the_wrong_checksum_is_deleted(clean_env, served, reference):
    base, root = served
    _corrupt_copy(reference, root / "input.txt")
    with pytest.raises(ConfigError, match=r"failed its checksum.*deleted.*SYMOPT_DATA_DIR"):
        load_corpus("shakespeare", url=f"{base}/input.txt")
    (root / "input.txt").write_bytes(reference.read_bytes() + b"more")  # too long: stops reading
    with pytest.raises(ConfigError, match="failed its checksum"):
        load_corpus("shakespeare", url=f"{base}/input.txt")
    assert list(clean_env.iterdir()) == []


def test_a_failed_download_says_where_to_put_the_file(clean_env, served):
    base, _ = served
    with pytest.raises(ConfigError, match=r"Could not download.*404.*SYMOPT_DATA_DIR=.*path="):
        load_corpus("shakespeare", url=f"{base}/missing.txt", timeout=10)
    port = free_port()  # a port that nothing listens on
    with pytest.raises(ConfigError, match=r"Could not download.*SYMOPT_DATA_DIR"):
        load_corpus("shakespeare", url=f"http://127.0.0.1:{port}/input.txt", timeout=10)
    with pytest.raises(ConfigError, match="must be http"):
        load_corpus("shakespeare", url="file:///etc/hostname")
    with pytest.raises(ConfigError, match=r"downloads are off.*SYMOPT_DATA_DIR"):
        load_corpus("shakespeare", download=False)
    assert not clean_env.exists() or list(clean_env.iterdir()) == []


# ---- split ------------------------------------------------------------------------------------


def test_nanogpt_split_sizes(reference, shakespeare_text):
    train, val = train_val_split(shakespeare_text)
    assert (len(train), len(val)) == (NANOGPT_TRAIN, NANOGPT_VAL)
    assert train + val == shakespeare_text
    dataset = build_dataset("shakespeare", "char", path=reference)
    assert (len(dataset.train), len(dataset.val)) == (NANOGPT_TRAIN, NANOGPT_VAL)
    assert dataset.train.dtype == torch.uint16
    assert dataset.tokenizer.decode(dataset.val.tolist()) == val
    assert dataset.meta()["tokens"] == {"train": NANOGPT_TRAIN, "val": NANOGPT_VAL}
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError, match="val_fraction"):
            train_val_split(shakespeare_text, bad)


# ---- built-in corpora -------------------------------------------------------------------------


def test_pystdlib_is_deterministic_sorted_and_capped():
    small = load_corpus("pystdlib", max_bytes=300_000)
    assert small == load_corpus("pystdlib", max_bytes=300_000)
    assert 299_000 < len(small.text.encode()) <= 300_000
    larger = load_corpus("pystdlib", max_bytes=1_000_000).text
    assert larger.startswith(small.text)
    headers = [line for line in larger.splitlines() if line.startswith("# ===== file: ")]
    names = [line.removeprefix("# ===== file: ").removesuffix(" =====") for line in headers]
    assert names
    assert names == sorted(names)
    assert all(n.endswith(".py") for n in names)
    skipped = {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "turtledemo"}
    assert not any(skipped & set(n.split("/")[:-1]) for n in names)


def test_tokenizing_8mb_of_text_is_fast():
    corpus = load_corpus("pystdlib")  # default cap: 8 MiB
    assert len(corpus.text.encode()) > 8_000_000
    for name in ("char", "byte"):
        start = time.perf_counter()
        dataset = TokenDataset.from_corpus(corpus, build_tokenizer(name, corpus.text))
        elapsed = time.perf_counter() - start
        assert elapsed < 2.0, f"{name}: {elapsed:.2f} s"
        assert dataset.train.dtype == torch.uint16
        assert dataset.tokenizer.decode(dataset.val[:1000].tolist()) in corpus.text


def test_modular_is_deterministic_and_correct():
    corpus = load_corpus("modular", p=13, seed=3, n_examples=500)
    assert corpus == load_corpus("modular", p=13, seed=3, n_examples=500)
    assert corpus.text != load_corpus("modular", p=13, seed=4, n_examples=500).text
    lines = corpus.text.splitlines()
    assert len(lines) == 500
    assert corpus.text.endswith("\n")
    for line in lines:
        left, c = line.split("=")
        a, b = left.split("+")
        assert 0 <= int(a) < 13
        assert 0 <= int(b) < 13
        assert int(c) == (int(a) + int(b)) % 13
    default = load_corpus("modular")
    assert len(default.text.splitlines()) == 10_000
    assert max(int(line.split("=")[1]) for line in default.text.splitlines()) == 96  # p = 97
    with pytest.raises(ConfigError, match=r"p=1 must be an int >= 2"):
        load_corpus("modular", p=1)
    with pytest.raises(ConfigError, match=r"no option\(s\) q; its options: n_examples, p, seed"):
        load_corpus("modular", q=5)


def test_file_corpus_stays_inside_the_data_root(monkeypatch, tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "mine.txt").write_text("to be or not to be\n", encoding="utf-8")
    outside = tmp_path / "secret.txt"
    outside.write_text("secret\n", encoding="utf-8")
    (root / "link.txt").symlink_to(outside)
    corpus = load_corpus("file:sub/mine.txt", data_root=root)
    assert corpus.text == "to be or not to be\n"
    assert corpus.source == f"file:{(root / 'sub' / 'mine.txt').resolve()}"
    monkeypatch.setenv("SYMOPT_DATA_DIR", str(root))
    assert load_corpus("file:sub/mine.txt").text == corpus.text
    for name, message in [
        (f"file:{outside}", "relative to the data root"),
        ("file:../secret.txt", r"'\.\.' is not allowed"),
        ("file:sub/../../secret.txt", r"'\.\.' is not allowed"),
        ("file:link.txt", "outside the data root"),
        ("file:sub/none.txt", "No file 'sub/none.txt'"),
        ("file:", "relative to the data root"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_corpus(name)
    with pytest.raises(ConfigError, match="takes no path="):
        load_corpus("file:sub/mine.txt", path=outside)
    monkeypatch.delenv("SYMOPT_DATA_DIR")
    with pytest.raises(ConfigError, match="export SYMOPT_DATA_DIR"):
        load_corpus("file:sub/mine.txt")


def test_unknown_corpus_lists_the_valid_names():
    names = r"'wikitext'; valid names: modular, pystdlib, shakespeare, or file:<path>.*SYMOPT_DATA_DIR"
    with pytest.raises(ConfigError, match=names):
        load_corpus("wikitext")
    with pytest.raises(ConfigError, match="takes no path="):
        load_corpus("modular", path="x.txt")


# ---- sampler ----------------------------------------------------------------------------------


def _arange_dataset(n_train: int, n_val: int = 100) -> TokenDataset:
    # Token i has id i, so a window's ids are its positions: bounds and shifts can be read off.
    ids = torch.arange(n_train + n_val, dtype=torch.int64).to(torch.uint16)
    return TokenDataset(ids[:n_train], ids[n_train:], ByteTokenizer(), "arange", "test")


def test_windows_lie_within_the_split_and_y_is_x_shifted():
    dataset = _arange_dataset(20, 10)
    sampler = BatchSampler(dataset, seed=0)
    x, y = sampler.next("train", 2000, 5)
    assert x.shape == y.shape == (2000, 5)
    assert x.dtype == y.dtype == torch.int64
    assert x.is_contiguous()
    assert y.is_contiguous()
    torch.testing.assert_close(x, x[:, :1] + torch.arange(5))
    torch.testing.assert_close(y, x + 1)
    assert set(x[:, 0].tolist()) == set(range(15))  # i uniform over 0..n-T-1: y ends at n-1
    xv, yv = sampler.next("val", 50, 9)  # the longest window a 10-token split allows
    assert (xv == torch.arange(20, 29)).all()
    assert (yv == torch.arange(21, 30)).all()
    with pytest.raises(ConfigError, match=r"seq_len=10 needs at least 11 tokens.*val split has 10"):
        sampler.next("val", 1, 10)
    with pytest.raises(ConfigError, match="valid splits: train, val"):
        sampler.next("test", 1, 4)
    with pytest.raises(ConfigError, match="batch_size"):
        sampler.next("train", 0, 4)


def test_sampler_streams_are_seeded_and_independent(reference):
    dataset = build_dataset("shakespeare", path=reference)
    a, b, c = BatchSampler(dataset, seed=1), BatchSampler(dataset, seed=1), BatchSampler(dataset, seed=2)
    first = a.next("train", 8, 32)
    assert torch.equal(first[0], b.next("train", 8, 32)[0])
    assert not torch.equal(first[0], c.next("train", 8, 32)[0])
    # Evaluation batches come from the val generator and do not move the training stream.
    a.next("val", 16, 32)
    assert torch.equal(a.next("train", 8, 32)[0], b.next("train", 8, 32)[0])
    assert a.batches == {"train": 2, "val": 1}
    assert a.tokens == {"train": 2 * 8 * 32, "val": 16 * 32}


def test_sampler_resumes_exactly(tmp_path, reference):
    dataset = build_dataset("shakespeare", path=reference)
    # A batch-size / seq-len ramp, with evaluation batches in between.
    calls = [("train", 4 * k, 16 * k) for k in range(1, 6)] + [("val", 8, 64), ("train", 32, 128)]
    original = BatchSampler(dataset, seed=7)
    for call in calls:
        original.next(*call)
    torch.save(original.state_dict(), tmp_path / "sampler.pt")
    expected = [original.next(*call) for call in reversed(calls)]

    resumed = BatchSampler(dataset, seed=999)  # the saved state wins over the constructor's seed
    resumed.load_state_dict(torch.load(tmp_path / "sampler.pt", weights_only=True))
    assert resumed.seed == 7
    assert resumed.batches == {"train": 6, "val": 1}
    got = [resumed.next(*call) for call in reversed(calls)]
    for (x0, y0), (x1, y1) in zip(expected, got, strict=True):
        assert torch.equal(x0, x1)
        assert torch.equal(y0, y1)
    assert resumed.state_dict()["tokens"] == original.state_dict()["tokens"]

    with pytest.raises(ConfigError, match="same corpus, tokenizer and val_fraction"):
        BatchSampler(_arange_dataset(1000)).load_state_dict(original.state_dict())
    with pytest.raises(ConfigError, match="lacks"):
        resumed.load_state_dict({"seed": 0})
