"""Receiving uploads: a request body streamed to disk (size-capped, hashed), checked, then moved
into place. A cut-off, oversized, corrupt or malformed upload leaves nothing behind.

    received = await receive_body(request, settings.resolved_artifact_root(), settings.max_upload_bytes)
    info = await run_in_threadpool(store_dataset, received, dest, fmt="jsonl", text_field="text")
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from symopt_core.assets import UploadKind
from symopt_core.errors import ConfigError

from .errors import PayloadTooLargeError, ServiceError
from .settings import Settings
from .store import Store
from .store.models import Dataset, UploadedModel
from .store.uploads import add_upload

__all__ = [
    "ModelDirectory",
    "Received",
    "UploadCutOffError",
    "new_upload_id",
    "receive_body",
    "remove_quietly",
    "store_upload",
    "unpack_model",
]

_CHUNK = 1 << 20
_MAX_MODEL_FILES = 10_000
_WEIGHTS = (".safetensors", ".bin", ".pt", ".pth")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


class UploadCutOffError(ServiceError):
    """The client went away before the whole body arrived."""


@dataclass(frozen=True)
class Received:
    path: Path  # a temporary file; the caller removes it
    size: int
    sha256: str


def new_upload_id(prefix: str) -> str:
    return f"{prefix}_{os.urandom(8).hex()}"


def incoming_dir(root: Path) -> Path:
    """Where bodies land while they arrive: on the uploads' filesystem, so moves are renames."""
    path = root / ".incoming"
    path.mkdir(parents=True, exist_ok=True)
    return path


async def receive_body(request: Request, root: Path, max_bytes: int, expected_sha256: str | None) -> Received:
    """The request's body in a temporary file under `root`, at most `max_bytes` (413 past it),
    its sha256 checked against `expected_sha256` when given (422 when it differs)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLargeError(
            f"The upload is {int(declared):,} bytes; at most {max_bytes:,} are accepted"
        )
    fd, name = tempfile.mkstemp(dir=incoming_dir(root), prefix="upload-")
    path, digest, size = Path(name), hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLargeError(f"The upload is over {max_bytes:,} bytes, the most accepted")
                digest.update(chunk)
                f.write(chunk)
        if declared is not None and declared.isdigit() and size != int(declared):
            raise UploadCutOffError(f"The upload ended after {size:,} of {int(declared):,} bytes")
        if size == 0:
            raise ConfigError("The upload is empty: send the file as the request body")
        got = digest.hexdigest()
        if expected_sha256 is not None and got != expected_sha256.lower():
            raise ConfigError(
                f"The upload's sha256 is {got}, not the declared {expected_sha256}: it was corrupted "
                "on the way (or the digest is of another file); nothing was stored, send it again"
            )
        return Received(path, size, got)
    except ClientDisconnect:
        path.unlink(missing_ok=True)
        raise UploadCutOffError(f"The client went away after {size:,} bytes; nothing was stored") from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise


Unpacked = TypeVar("Unpacked")
Row = TypeVar("Row", Dataset, UploadedModel)


async def store_upload(
    request: Request,
    settings: Settings,
    store: Store,
    *,
    kind: UploadKind,
    expected_sha256: str | None,
    unpack: Callable[[Path, Path], Unpacked],
    row_of: Callable[[str, Received, Unpacked], Row],
) -> Row:
    """An upload received, unpacked into its directory and recorded, in that order: the body
    streamed to a temporary file, `unpack(file, directory)` (off the event loop: it reads the
    whole upload, and a ConfigError names what is wrong), then `row_of(id, received, unpacked)`
    added to the store. Whatever fails leaves no file and no row."""
    root = settings.resolved_artifact_root()
    received = await receive_body(request, root, settings.max_upload_bytes, expected_sha256)
    upload_id = new_upload_id("ds" if kind == "datasets" else "mdl")
    dest = settings.assets().upload_dir(kind, upload_id)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        unpacked = await run_in_threadpool(unpack, received.path, dest)
        row = row_of(upload_id, received, unpacked)

        def add() -> Row:
            with store.transaction() as session:
                return add_upload(session, row)

        return await run_in_threadpool(add)
    except BaseException:
        remove_quietly(dest)
        raise
    finally:
        received.path.unlink(missing_ok=True)


def remove_quietly(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class ModelDirectory:
    model_type: str
    architectures: list[str]
    files: list[str]
    has_tokenizer: bool


def unpack_model(archive: Path, dest: Path) -> ModelDirectory:
    """Unpack a tar (optionally compressed) of a transformers model directory into `dest`, which
    must not exist, and check it: regular files only, no path outside it, a config.json of a
    causal LM and its weights. A single top-level folder is unwrapped."""
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        files = _extract_regular_files(archive, staging)
        top = {PurePosixPath(name).parts[0] for name in files}
        base = staging
        if "config.json" not in files and len(top) == 1:
            base = staging / top.pop()
            files = [str(PurePosixPath(name).relative_to(base.name)) for name in files]
        if "config.json" not in files:
            raise ConfigError(
                "The model archive has no config.json at its top (or in its one top folder): tar the "
                "directory save_pretrained wrote, e.g. tar -cf model.tar -C my-model ."
            )
        if not any(name.endswith(_WEIGHTS) for name in files):
            raise ConfigError(
                "The model archive holds no weights (*.safetensors or pytorch_model*.bin): save the model "
                "with save_pretrained and upload the whole directory"
            )
        model_type, architectures = _causal_lm_config(base)
        os.replace(base, dest)
        return ModelDirectory(
            model_type=model_type,
            architectures=architectures,
            files=sorted(files),
            has_tokenizer=any(PurePosixPath(name).name in _TOKENIZER_FILES for name in files),
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _open_tar(archive: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as error:
        raise ConfigError(
            f"The model upload is not a tar archive ({error}): send a .tar or .tar.gz"
        ) from None


def _extract_regular_files(archive: Path, into: Path) -> list[str]:
    names: list[str] = []
    with _open_tar(archive) as opened:
        for member in opened:
            if member.isdir():
                continue
            path = PurePosixPath(member.name)
            if not member.isfile():
                raise ConfigError(
                    f"member {member.name}: only regular files are accepted (not links or devices)"
                )
            if path.is_absolute() or ".." in path.parts or not path.parts:
                raise ConfigError(f"member {member.name}: paths must stay inside the archive")
            if len(names) >= _MAX_MODEL_FILES:
                raise ConfigError(f"The model archive holds over {_MAX_MODEL_FILES} files")
            target = into.joinpath(*path.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            source = opened.extractfile(member)
            assert source is not None  # a regular file
            with source, target.open("wb") as out:
                shutil.copyfileobj(source, out, _CHUNK)
            names.append(str(path))
    return names


def _causal_lm_config(directory: Path) -> tuple[str, list[str]]:
    from symopt_core.models.hf import pretrained_config

    config = pretrained_config(directory, "The uploaded model")
    return str(config.model_type), list(getattr(config, "architectures", None) or [])
