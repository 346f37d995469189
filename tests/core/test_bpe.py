"""Byte-level BPE trained on a dataset, and a model directory's own tokenizer."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer as RustTokenizer

from symopt_core.data import (
    END_OF_TEXT,
    BPETokenizer,
    ModelTokenizer,
    load_corpus,
    load_model_tokenizer,
    tokenizer_from_dict,
    train_bpe,
)
from symopt_core.data.bpe import encode_joined, safe_pieces
from symopt_core.errors import ConfigError

VOCAB = 400

TRICKY = [
    "",
    "plain ascii",
    "héllo wörld, ¿qué tal? 世界 🙂👍🏽 e\u0301 ﬁ",
    "tabs\tand\r\nCRLF\n\n\n  indented\n\x00\x07\x1f\x7f",
    f"a literal {END_OF_TEXT} in the text",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \U0010ffff \ufeff\u200b\u2028",
]


@pytest.fixture(scope="module")
def text() -> str:
    return load_corpus("pystdlib", max_bytes=64 * 1024).text


@pytest.fixture(scope="module")
def bpe(text) -> BPETokenizer:
    return train_bpe([text], VOCAB)


def _random_text(seed: int, length: int = 300) -> str:
    rng = random.Random(seed)
    # Any code point but the surrogates (not text: a Python str holding one is not UTF-8).
    points = [rng.choice([rng.randrange(0x80), rng.randrange(0xD800), rng.randrange(0xE000, 0x110000)])]
    points += [rng.randrange(0x110000) for _ in range(length)]
    return "".join(chr(p) for p in points if not 0xD800 <= p < 0xE000)


def test_training_is_deterministic_and_exact(text, bpe):
    assert bpe.vocab_size == VOCAB
    assert train_bpe([text], VOCAB).to_json() == bpe.to_json()
    assert bpe.end_of_text_id == 0  # the special token first, then the 256 bytes
    assert bpe.encode(END_OF_TEXT) == [0]


def test_any_text_round_trips(bpe):
    for sample in [*TRICKY, *(_random_text(seed) for seed in range(20))]:
        ids = bpe.encode(sample)
        assert all(0 <= i < VOCAB for i in ids)
        assert bpe.decode(ids) == sample


def test_it_compresses_the_text_it_learned_from(text, bpe):
    assert len(bpe.encode(text)) < 0.6 * len(text.encode())  # 143 merges


def test_too_little_text_for_the_vocabulary_says_so():
    with pytest.raises(ConfigError, match=r"yields only \d+ BPE tokens, fewer than vocab_size=1000; lower"):
        train_bpe(["tiny text"], 1000)
    with pytest.raises(ConfigError, match=r"vocab_size 100.*>= 257"):
        train_bpe(["tiny text"], 100)


def test_pieces_encode_as_the_whole(text, bpe):
    rust = RustTokenizer.from_str(bpe.to_json())
    tricky = "\n".join([*TRICKY, text[:5000], "x\n\ny", "x \ny", "x\n y", "'s\n's\n'll"] * 3)
    pieces = safe_pieces(tricky, 40)
    assert len(pieces) > 50
    assert "".join(pieces) == tricky
    whole = bpe.encode(tricky)
    assert encode_joined(rust, [tricky], None, np.int64, lambda t: safe_pieces(t, 40)).tolist() == whole
    assert bpe.encode_array(tricky, dtype=np.uint16).tolist() == whole


def test_documents_are_joined_by_end_of_text(bpe):
    documents = ["first doc", "second", "third one"]
    ids = bpe.encode_documents(documents, dtype=np.uint16).tolist()
    expected = [*bpe.encode("first doc"), 0, *bpe.encode("second"), 0, *bpe.encode("third one")]
    assert ids == expected
    assert bpe.decode(ids) == END_OF_TEXT.join(documents)
    assert bpe.encode_documents([], dtype=np.uint16).tolist() == []


def test_a_checkpoint_rebuilds_the_tokenizer(bpe):
    state = json.loads(json.dumps(bpe.to_dict()))  # as a checkpoint stores it
    restored = tokenizer_from_dict(state)
    assert isinstance(restored, BPETokenizer)
    assert restored.to_json() == bpe.to_json()
    assert restored.encode(TRICKY[2]) == bpe.encode(TRICKY[2])
    with pytest.raises(ConfigError, match=r"Not a tokenizer.json"):
        tokenizer_from_dict({"kind": "bpe", "json": "{not json"})


def _model_dir(tmp_path: Path, bpe: BPETokenizer, **files: object) -> Path:
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    (directory / "tokenizer.json").write_text(bpe.to_json())
    for name, content in files.items():
        (directory / f"{name}.json").write_text(json.dumps(content))
    return directory


def test_a_model_tokenizer_comes_from_its_directory(tmp_path, bpe):
    model = load_model_tokenizer(_model_dir(tmp_path, bpe, tokenizer_config={"eos_token": END_OF_TEXT}))
    assert (model.vocab_size, model.eos_token, model.eos_id) == (VOCAB, END_OF_TEXT, 0)
    assert model.encode(TRICKY[2]) == bpe.encode(TRICKY[2])
    ids = model.encode_documents(["one", "two"], dtype=np.uint16).tolist()
    assert ids == [*bpe.encode("one"), 0, *bpe.encode("two")]
    restored = tokenizer_from_dict(json.loads(json.dumps(model.to_dict())))
    assert isinstance(restored, ModelTokenizer)
    assert (restored.eos_token, restored.vocab_size) == (END_OF_TEXT, VOCAB)


def test_a_model_eos_may_come_from_its_config_as_an_id(tmp_path, bpe):
    model = load_model_tokenizer(_model_dir(tmp_path, bpe, generation_config={"eos_token_id": [0, 5]}))
    assert model.eos_token == END_OF_TEXT


def test_a_model_without_eos_joins_documents_by_newlines(tmp_path, bpe):
    model = load_model_tokenizer(_model_dir(tmp_path, bpe))
    assert model.eos_token is None
    assert model.encode_documents(["one", "two"], dtype=np.uint16).tolist() == bpe.encode("one\ntwo")


def test_a_model_without_a_tokenizer_says_what_to_do(tmp_path):
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "config.json").write_text("{}")
    with pytest.raises(
        ConfigError, match=r"has no tokenizer .*upload the model together with its tokenizer files"
    ):
        load_model_tokenizer(directory)


def test_a_model_with_only_vocab_and_merges_loads_through_transformers(tmp_path, bpe):
    directory = tmp_path / "gpt2-style"
    directory.mkdir()
    model = json.loads(bpe.to_json())["model"]
    (directory / "vocab.json").write_text(json.dumps(model["vocab"]))
    merges = [" ".join(pair) for pair in model["merges"]]
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    config = {"tokenizer_class": "GPT2Tokenizer", "eos_token": END_OF_TEXT, "add_prefix_space": False}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    loaded = load_model_tokenizer(directory)
    assert (loaded.vocab_size, loaded.eos_token) == (VOCAB, END_OF_TEXT)
    assert loaded.encode(TRICKY[2]) == bpe.encode(TRICKY[2])
