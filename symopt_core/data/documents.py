"""Uploaded datasets: a text, JSON Lines, Parquet or tar file turned into one canonical stored form.

    info = ingest_documents(Path("upload.jsonl"), "jsonl", datasets / "ds_3f2a9c")
    documents = load_documents(datasets / "ds_3f2a9c")   # documents[0], len(documents), ...

An ingested dataset is a directory of three files, chosen so that reading it back is one read and
one decode whatever the number of documents:

    documents.txt   every document's UTF-8 text, concatenated without separators
    bounds.npy      int64 character offsets: document i is text[bounds[i]:bounds[i + 1]]
    info.json       DocumentsInfo (counts, format, and the sha256 the token cache keys on)

Bad input raises a ConfigError that says where (line, row or member) and what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError
from ..extras import require

__all__ = ["FORMATS", "Documents", "DocumentsInfo", "ingest_documents", "load_documents", "read_info"]

FORMATS = ("text", "jsonl", "parquet", "tar")

# Bump when the stored layout changes: the token cache keys on it through DocumentsInfo.sha256.
_LAYOUT_VERSION = 1
_TEXT, _BOUNDS, _INFO = "documents.txt", "bounds.npy", "info.json"


@dataclass(frozen=True)
class DocumentsInfo:
    """What ingest_documents stored, for the service's dataset record and the token cache."""

    format: str  # one of FORMATS
    text_field: str | None  # the JSON key or Parquet column read (None for text and tar)
    documents: int  # documents stored (empty ones are skipped)
    empty_skipped: int  # documents with no text, left out
    characters: int  # Unicode code points of all documents together
    bytes: int  # UTF-8 bytes of all documents together
    # sha256 of the documents' text and their boundaries: equal datasets have equal hashes
    # whatever their upload format, and the token cache keys tokenized data on it.
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DocumentsInfo:
        return cls(**{name: values[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True, eq=False)
class Documents(Sequence[str]):
    """An ingested dataset's documents: one string and the offsets that cut it."""

    text: str
    bounds: NDArray[np.int64]  # len(documents) + 1 offsets, from 0 to len(text)

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(f"document {index} of {len(self)}")
        index %= len(self)
        return self.text[int(self.bounds[index]) : int(self.bounds[index + 1])]

    def __iter__(self) -> Iterator[str]:
        for start, end in zip(self.bounds[:-1].tolist(), self.bounds[1:].tolist(), strict=True):
            yield self.text[start:end]


def ingest_documents(source: Path, fmt: str, dest: Path, *, text_field: str = "text") -> DocumentsInfo:
    """Read the uploaded file `source` as `fmt` and store its documents in the new directory `dest`.

    Everything is written into a temporary sibling directory that replaces `dest` at the end, so
    a failure (bad input, a full disk) leaves no `dest` behind.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"Unknown dataset format {fmt!r}; valid formats: {', '.join(FORMATS)}.")
    if not isinstance(text_field, str) or not text_field:
        raise ConfigError(f"Invalid text_field {text_field!r}; name the field that holds the text.")
    if dest.exists():
        raise ConfigError(f"{dest} exists already; ingest a dataset into a new directory.")
    documents = {"text": _text_documents, "jsonl": _jsonl_documents, "parquet": _parquet_documents}
    reader = documents.get(fmt)
    work = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.part"
    work.mkdir(parents=True)
    try:
        texts = _tar_documents(source) if reader is None else reader(source, text_field)
        info = _write(work, texts, fmt, text_field if fmt in ("jsonl", "parquet") else None)
        os.replace(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return info


def read_info(directory: Path) -> DocumentsInfo:
    """The DocumentsInfo of an ingested dataset, without reading its text."""
    try:
        return DocumentsInfo.from_dict(json.loads((directory / _INFO).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"{directory} is not an ingested dataset ({_INFO}: {e}); upload the dataset again."
        ) from None


def load_documents(directory: Path) -> Documents:
    """The documents ingest_documents stored in `directory`."""
    read_info(directory)  # a clear error for a directory that is not a dataset
    text = (directory / _TEXT).read_bytes().decode("utf-8")
    bounds = np.load(directory / _BOUNDS)
    return Documents(text, bounds)


def _write(work: Path, texts: Iterator[str], fmt: str, text_field: str | None) -> DocumentsInfo:
    digest = hashlib.sha256()
    bounds, empty, n_bytes = [0], 0, 0
    with (work / _TEXT).open("wb") as out:
        for text in texts:
            if not text:
                empty += 1
                continue
            data = text.encode("utf-8")
            out.write(data)
            digest.update(data)
            n_bytes += len(data)
            bounds.append(bounds[-1] + len(text))
    if len(bounds) == 1:
        counted = f" (only {empty:,} empty documents)" if empty > 1 else ""
        raise ConfigError(
            f"no documents: the {fmt} upload holds no text{counted}; upload a dataset with text."
        )
    offsets = np.asarray(bounds, dtype=np.int64)
    # The boundaries are part of the identity: the same text cut into other documents gets other
    # separators between them, so other tokens.
    digest.update(offsets.astype("<i8").tobytes())
    np.save(work / _BOUNDS, offsets)
    info = DocumentsInfo(
        format=fmt,
        text_field=text_field,
        documents=len(bounds) - 1,
        empty_skipped=empty,
        characters=bounds[-1],
        bytes=n_bytes,
        sha256=digest.hexdigest(),
    )
    (work / _INFO).write_text(json.dumps({"layout": _LAYOUT_VERSION, **info.to_dict()}, indent=1) + "\n")
    return info


def _decode(data: bytes, where: str, base: int = 0) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{where}: not UTF-8 (byte 0x{data[e.start]:02x} at offset {base + e.start}); "
            "convert the text to UTF-8 (e.g. iconv -t UTF-8) and upload it again."
        ) from None


def _text_documents(source: Path, _field: str) -> Iterator[str]:
    # A leading byte-order mark is an encoding artefact (Windows editors), not text.
    yield _decode(source.read_bytes(), "text file").removeprefix("\ufeff")


def _kind(value: Any) -> str:
    names = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", list: "a list"}
    return names.get(type(value), "an object")


def _jsonl_documents(source: Path, field: str) -> Iterator[str]:
    with source.open("rb") as lines:
        yield from _jsonl_lines(lines, field)


def _jsonl_lines(lines: BinaryIO, field: str) -> Iterator[str]:
    offset = 0
    for number, raw in enumerate(lines, 1):
        where = f"line {number}"
        line = _decode(raw, where, offset).removeprefix("\ufeff" if number == 1 else "")
        offset += len(raw)
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(
                f"{where}: not valid JSON ({e.msg} at column {e.colno}); each non-empty line of a "
                "jsonl dataset must be one JSON object."
            ) from None
        if not isinstance(record, dict):
            raise ConfigError(f"{where}: {_kind(record)}, not a JSON object with a string field {field!r}.")
        if field not in record:
            keys = ", ".join(sorted(record)) or "none"
            raise ConfigError(
                f"{where}: no string field {field!r} (keys: {keys}); set text_field to the key that "
                "holds the text."
            )
        value = record[field]
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {field!r} is {_kind(value)}, not a string.")
        yield value


def _parquet_documents(source: Path, field: str) -> Iterator[str]:
    require("pyarrow", "A Parquet dataset")
    import pyarrow as pa  # only Parquet uploads need pyarrow
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(source)
    except (pa.ArrowException, OSError) as e:
        raise ConfigError(
            f"not a Parquet file ({e}); upload a .parquet file or choose another format."
        ) from None
    columns = table.schema_arrow.names
    if field not in columns:
        raise ConfigError(
            f"no column {field!r} (columns: {', '.join(columns) or 'none'}); set text_field to the "
            "column that holds the text."
        )
    kind = table.schema_arrow.field(field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)):
        raise ConfigError(f"column {field!r} holds {kind}, not strings; name a string column as text_field.")
    row = 0
    try:
        for batch in table.iter_batches(columns=[field]):
            for value in batch.column(0).to_pylist():
                if value is None:
                    raise ConfigError(
                        f"row {row} (from 0): {field!r} is null, not a string; drop or fill the empty rows."
                    )
                yield value
                row += 1
    except pa.ArrowException as e:
        raise ConfigError(f"row {row} (from 0): unreadable ({e}); write the Parquet file again.") from None


def _tar_documents(source: Path) -> Iterator[str]:
    found: list[tuple[str, str]] = []
    try:
        with tarfile.open(source, "r:*") as archive:  # plain, gzip, bzip2 or xz
            # Members are read in archive order (a compressed archive cannot seek back cheaply)
            # and never extracted: their bytes come through extractfile, so no name can escape.
            for member in archive:
                if member.isdir():
                    continue
                if not member.isreg():
                    what = "a link" if member.issym() or member.islnk() else "a device or pipe"
                    raise ConfigError(
                        f"member {member.name}: {what}; a tar dataset holds regular files only "
                        "(archive the files themselves, e.g. tar --dereference)."
                    )
                stream = archive.extractfile(member)
                assert stream is not None  # a regular member always has one
                found.append((member.name, _decode(stream.read(), f"member {member.name}")))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise ConfigError(
            f"not a tar archive, or a damaged one ({e}); upload a .tar (or .tar.gz) or choose another format."
        ) from None
    found.sort(key=lambda pair: pair[0])  # stable: equal names keep their archive order
    for _name, text in found:
        yield text
