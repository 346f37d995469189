"""Uploading users' own datasets and models: files streamed from disk with their sha256, which the
service checks before it keeps anything.

    client.upload_dataset("notes.jsonl", text_field="body")        # {"id": "ds_...", ...}
    client.upload_model("my-model/")                                 # a save_pretrained directory
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from symopt_core.errors import ConfigError

from .http import Transport

__all__ = ["dataset_format", "tarred", "upload_dataset_path", "upload_file", "upload_model_path"]

_CHUNK = 1 << 20
_SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".tar": "tar",
    ".tgz": "tar",
    ".tar.gz": "tar",
}


def dataset_format(path: Path) -> str:
    """The format a file's name implies: jsonl, parquet, tar (of text files), else text."""
    name = path.name.lower()
    return next((fmt for suffix, fmt in _SUFFIXES.items() if name.endswith(suffix)), "text")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk


def upload_file(transport: Transport, route: str, path: Path, params: dict[str, Any]) -> Any:
    """POST the file at `path` as the body of `route`, with its sha256; a connection that fails
    before the service answered is retried with a fresh read of the file."""
    if not path.is_file():
        raise ConfigError(f"No file at {path}")
    query = {**params, "sha256": _sha256(path)}
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(path.stat().st_size)}
    # A generator body cannot be sent twice: each attempt reads the file again.
    for attempt in range(transport.retries + 1):
        try:
            response = transport.send(
                "POST", route, params=query, content=_chunks(path), headers=headers, repeatable=False
            )
            return response.json()
        except httpx.ConnectError:
            if attempt >= transport.retries:
                raise
    raise AssertionError("unreachable")


@contextmanager
def tarred(directory: Path) -> Iterator[Path]:
    """A temporary tar of the regular files under `directory`, named relative to it."""
    fd, temporary = tempfile.mkstemp(suffix=".tar")
    os.close(fd)
    try:
        with tarfile.open(temporary, "w") as archive:
            for item in sorted(directory.rglob("*")):
                if item.is_file() and not item.is_symlink():
                    archive.add(item, arcname=str(item.relative_to(directory)), recursive=False)
        yield Path(temporary)
    finally:
        os.unlink(temporary)


def upload_dataset_path(transport: Transport, path: Path, params: dict[str, Any]) -> Any:
    """Upload a dataset: a file, or a directory of text files (sent as a tar, each file a document)."""
    if not path.is_dir():
        return upload_file(transport, "/v1/datasets", path, params)
    with tarred(path) as archive:
        return upload_file(transport, "/v1/datasets", archive, {**params, "format": "tar"})


def upload_model_path(transport: Transport, path: Path, name: str) -> Any:
    """Upload a model: a directory (tarred here, into a temporary file) or a tar of one."""
    if path.is_file():
        return upload_file(transport, "/v1/models/uploads", path, {"name": name})
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"{path} is not a model directory (no config.json): give the directory save_pretrained wrote, "
            "or a tar of it"
        )
    with tarred(path) as archive:
        return upload_file(transport, "/v1/models/uploads", archive, {"name": name})
