"""A job's newest checkpoint as a download: a torch checkpoint file as it is, a sharded (FSDP)
checkpoint directory as one uncompressed tar. Opened before streaming starts: a newer checkpoint
may rotate this one away meanwhile, and an open file survives its unlink (a sharded one is
archived first, for the same reason)."""

from __future__ import annotations

import os
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import NotFoundError

__all__ = ["CheckpointDownload", "open_newest_checkpoint"]

_CHUNK = 1 << 20


@dataclass
class CheckpointDownload:
    stream: BinaryIO
    size: int
    filename: str
    media_type: str

    def chunks(self) -> Iterator[bytes]:
        """The bytes, a MiB at a time; the stream is closed at the end (or when abandoned)."""
        with self.stream:
            while chunk := self.stream.read(_CHUNK):
                yield chunk


def open_newest_checkpoint(directory: Path, job_id: str) -> CheckpointDownload:
    """The newest checkpoint in `directory`, opened; a NotFoundError that says when one is
    written when there is none (or it was rotated away before it could be opened)."""
    from symopt_core.training import latest_checkpoint

    newest = latest_checkpoint(directory)
    try:
        stream = _open(newest) if newest is not None else None
    except FileNotFoundError:
        stream = None
    if newest is None or stream is None:
        raise NotFoundError(
            f"Job {job_id} has no checkpoint yet: one is written every checkpoint.every steps "
            "(and when a run is cancelled or stopped)"
        )
    sharded = newest.is_dir()
    return CheckpointDownload(
        stream=stream,
        size=os.fstat(stream.fileno()).st_size,
        filename=f"{job_id}-{newest.name}" + (".tar" if sharded else ""),
        media_type="application/x-tar" if sharded else "application/octet-stream",
    )


def _open(path: Path) -> BinaryIO:
    """A checkpoint file, opened; a sharded checkpoint directory, as a tar in a temporary file."""
    if not path.is_dir():
        return path.open("rb")
    archive = tempfile.TemporaryFile()  # noqa: SIM115 - closed by CheckpointDownload.chunks
    try:
        with tarfile.open(fileobj=archive, mode="w") as tar:
            tar.add(path, arcname=path.name)
    except (FileNotFoundError, tarfile.TarError) as error:  # rotated away while being archived
        archive.close()
        raise FileNotFoundError(str(path)) from error
    archive.seek(0)
    return archive
