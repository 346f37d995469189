"""Uploaded datasets: every format ingested and read back; bad input named by line, row or member."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from symopt_core.data import FORMATS, DocumentsInfo, ingest_documents, load_documents, read_info
from symopt_core.errors import ConfigError

DOCS = ["first document\nwith two lines\n", "zweite: grüße, 世界 🙂", "third"]


def _jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _parquet(path: Path, columns: dict[str, list[object]]) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def _tar(path: Path, members: dict[str, bytes], *, mode: str = "w") -> Path:
    with tarfile.open(path, mode) as archive:
        directory = tarfile.TarInfo("docs")
        directory.type = tarfile.DIRTYPE
        archive.addfile(directory)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def _ingest(tmp_path: Path, source: Path, fmt: str, **kwargs: str) -> tuple[DocumentsInfo, list[str]]:
    dest = tmp_path / "datasets" / "ds_0001"
    info = ingest_documents(source, fmt, dest, **kwargs)
    assert read_info(dest) == info
    return info, list(load_documents(dest))


def test_the_formats():
    assert FORMATS == ("text", "jsonl", "parquet", "tar")


def test_a_text_file_is_one_document(tmp_path):
    source = tmp_path / "book.txt"
    source.write_bytes(b"\xef\xbb\xbf" + "Call me Ishmael. Ünïcode\n".encode())  # with a BOM
    info, documents = _ingest(tmp_path, source, "text")
    assert documents == ["Call me Ishmael. Ünïcode\n"]
    assert (info.format, info.text_field, info.documents) == ("text", None, 1)
    assert (info.characters, info.bytes) == (25, 27)  # Ü and ï take two bytes each


def test_jsonl_lines_are_documents(tmp_path):
    source = tmp_path / "data.jsonl"
    records: list[object] = [{"body": d, "id": i} for i, d in enumerate(DOCS)]
    records.insert(1, {"body": "", "id": 9})  # empty: skipped and counted
    _jsonl(source, records)
    with source.open("a") as f:
        f.write("\n   \n")  # blank lines are not records
    info, documents = _ingest(tmp_path, source, "jsonl", text_field="body")
    assert documents == DOCS
    assert (info.documents, info.empty_skipped, info.text_field) == (3, 1, "body")
    assert info.characters == sum(len(d) for d in DOCS)
    assert info.bytes == sum(len(d.encode()) for d in DOCS)


def test_parquet_rows_are_documents(tmp_path):
    source = _parquet(tmp_path / "data.parquet", {"text": DOCS, "n": [1, 2, 3]})
    info, documents = _ingest(tmp_path, source, "parquet")
    assert documents == DOCS
    assert (info.format, info.documents) == ("parquet", 3)


def test_tar_members_are_documents_in_name_order(tmp_path):
    members = {"docs/c.txt": DOCS[2].encode(), "docs/a.txt": DOCS[0].encode(), "docs/b.md": DOCS[1].encode()}
    for mode in ("w", "w:gz"):
        source = _tar(tmp_path / f"data.{mode[-2:]}.tar", members, mode=mode)
        info, documents = _ingest(tmp_path / mode.replace(":", "_"), source, "tar")
        assert documents == DOCS
        assert info.documents == 3


def test_equal_documents_have_equal_hashes_whatever_the_format(tmp_path):
    jsonl, _ = _ingest(tmp_path / "a", _jsonl(tmp_path / "d.jsonl", [{"text": d} for d in DOCS]), "jsonl")
    parquet, _ = _ingest(tmp_path / "b", _parquet(tmp_path / "d.parquet", {"text": DOCS}), "parquet")
    assert jsonl.sha256 == parquet.sha256
    # The same text cut into other documents is other data (other separators between them).
    joined = [DOCS[0] + DOCS[1], DOCS[2]]
    other, _ = _ingest(tmp_path / "c", _jsonl(tmp_path / "e.jsonl", [{"text": d} for d in joined]), "jsonl")
    assert other.characters == jsonl.characters
    assert other.sha256 != jsonl.sha256


def test_documents_index_like_a_list(tmp_path):
    dest = tmp_path / "ds"
    ingest_documents(_jsonl(tmp_path / "d.jsonl", [{"text": d} for d in DOCS]), "jsonl", dest)
    documents = load_documents(dest)
    assert len(documents) == 3
    assert (documents[0], documents[-1], documents[1:]) == (DOCS[0], DOCS[2], DOCS[1:])
    with pytest.raises(IndexError):
        documents[3]


def _bad_jsonl(path: Path) -> Path:
    path.write_text('{"text": "ok"}\n{"text": "also ok"}\n' + '{"text": "a" "b"}\n', encoding="utf-8")
    return path


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _not_utf8_text(path: Path) -> Path:
    path.write_bytes(b"caf\xc3\xa9 ok, then \xff here")
    return path


def _not_utf8_jsonl(path: Path) -> Path:
    path.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    return path


BAD_INPUTS = {
    "jsonl-not-json": (
        "jsonl",
        _bad_jsonl,
        r"^line 3: not valid JSON \(Expecting ',' delimiter at column 14\)",
    ),
    "jsonl-no-field": (
        "jsonl",
        lambda p: _jsonl(p, [{"text": "ok"}, {"text": "ok"}, {"id": 1, "body": "x"}]),
        r"^line 3: no string field 'text' \(keys: body, id\); set text_field",
    ),
    "jsonl-null": ("jsonl", lambda p: _jsonl(p, [{"text": None}]), r"^line 1: 'text' is null, not a string"),
    "jsonl-number": (
        "jsonl",
        lambda p: _jsonl(p, [{"text": 5}]),
        r"^line 1: 'text' is a number, not a string",
    ),
    "jsonl-not-object": ("jsonl", lambda p: _jsonl(p, [["a"]]), r"^line 1: a list, not a JSON object"),
    "jsonl-not-utf8": ("jsonl", _not_utf8_jsonl, r"^line 2: not UTF-8 \(byte 0xe9 at offset 30\)"),
    "text-not-utf8": ("text", _not_utf8_text, r"^text file: not UTF-8 \(byte 0xff at offset 15\); convert"),
    "text-empty": ("text", _empty, r"^no documents: the text upload holds no text"),
    "jsonl-only-empty": (
        "jsonl",
        lambda p: _jsonl(p, [{"text": ""}, {"text": ""}]),
        r"^no documents: the jsonl upload holds no text \(only 2 empty documents\)",
    ),
    "parquet-null": (
        "parquet",
        lambda p: _parquet(p, {"text": ["a"] * 41 + [None]}),
        r"^row 41 \(from 0\): 'text' is null, not a string",
    ),
    "parquet-no-column": (
        "parquet",
        lambda p: _parquet(p, {"body": ["a"], "id": [1]}),
        r"^no column 'text' \(columns: body, id\); set text_field",
    ),
    "parquet-not-strings": (
        "parquet",
        lambda p: _parquet(p, {"text": [1, 2]}),
        r"^column 'text' holds int64, not strings",
    ),
    "parquet-not-parquet": ("parquet", _not_utf8_text, r"^not a Parquet file \("),
    "parquet-empty": (
        "parquet",
        lambda p: _parquet(p, {"text": pa.array([], pa.string())}),
        r"^no documents",
    ),
    "tar-not-utf8": (
        "tar",
        lambda p: _tar(p, {"docs/a.txt": b"fine", "docs/b.txt": b"ok \x80 no"}),
        r"^member docs/b.txt: not UTF-8 \(byte 0x80 at offset 3\)",
    ),
    "tar-not-tar": ("tar", _not_utf8_text, r"^not a tar archive, or a damaged one"),
    "tar-only-directories": ("tar", lambda p: _tar(p, {}), r"^no documents: the tar upload"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_named_and_leaves_nothing(tmp_path, case):
    fmt, write, message = BAD_INPUTS[case]
    source = write(tmp_path / "upload")
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    with pytest.raises(ConfigError, match=message):
        ingest_documents(source, fmt, datasets / "ds_0001")
    assert list(datasets.iterdir()) == []  # neither the dataset nor its temporary directory


def test_links_in_a_tar_are_refused(tmp_path):
    source = tmp_path / "links.tar"
    with tarfile.open(source, "w") as archive:
        link = tarfile.TarInfo("docs/passwd")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    with pytest.raises(ConfigError, match=r"^member docs/passwd: a link; a tar dataset holds regular files"):
        ingest_documents(source, "tar", tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_an_unknown_format_or_an_existing_destination_is_refused(tmp_path):
    source = tmp_path / "a.txt"
    source.write_text("text")
    with pytest.raises(
        ConfigError, match=r"Unknown dataset format 'csv'; valid formats: text, jsonl, parquet, tar"
    ):
        ingest_documents(source, "csv", tmp_path / "ds")
    (tmp_path / "ds").mkdir()
    with pytest.raises(ConfigError, match=r"exists already"):
        ingest_documents(source, "text", tmp_path / "ds")
    with pytest.raises(ConfigError, match=r"is not an ingested dataset"):
        load_documents(tmp_path / "ds")
