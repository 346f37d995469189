"""Where corpus files come from: an explicit path, the data root, the user cache, a checked download.

Environment variables are read when a corpus is resolved, never at import: a worker may set
`SYMOPT_DATA_DIR` after importing symopt_core.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from ..errors import ConfigError

__all__ = ["DATA_DIR_ENV", "RemoteFile", "cache_dir", "data_root", "resolve_in_root", "resolve_remote"]

DATA_DIR_ENV = "SYMOPT_DATA_DIR"


@dataclass(frozen=True)
class RemoteFile:
    """A corpus file with a public source; its checksum is checked wherever it is found."""

    filename: str  # name looked up in the data root and the cache
    url: str  # public source for the download
    sha256: str  # hex digest of the exact bytes
    size: int  # bytes; a download stops reading past this


def data_root(explicit: str | Path | None = None) -> Path | None:
    """The data root: `explicit` if given, else `$SYMOPT_DATA_DIR`, else None."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else None


def cache_dir() -> Path:
    """The user cache for downloaded corpora: `$XDG_CACHE_HOME/symopt/data` or `~/.cache/symopt/data`."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says a relative XDG_CACHE_HOME is invalid and must be ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "symopt" / "data"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _matches(path: Path, remote: RemoteFile) -> bool:
    # Compare sizes first: a truncated or different file is rejected without hashing it.
    return path.stat().st_size == remote.size and _sha256(path) == remote.sha256


def _where_to_put(remote: RemoteFile) -> str:
    return (
        f"put {remote.filename} (from {remote.url}) in a directory and export "
        f"{DATA_DIR_ENV}=<that directory>, or place it at {cache_dir() / remote.filename}, "
        "or pass path=<file>"
    )


def _checked(path: Path, remote: RemoteFile, origin: str) -> Path:
    if not _matches(path, remote):
        raise ConfigError(
            f"{path} ({origin}) is not the expected {remote.filename}: its sha256 or size differs from "
            f"{remote.sha256} ({remote.size} bytes). Replace it with a fresh copy from {remote.url}."
        )
    return path


def resolve_remote(
    remote: RemoteFile,
    *,
    path: str | Path | None = None,
    root: str | Path | None = None,
    url: str | None = None,
    download: bool = True,
    timeout: float = 60.0,
) -> tuple[Path, str]:
    """Find `remote` and return (local path, where it came from), downloading it if needed.

    Order: `path`, then `root` (or `$SYMOPT_DATA_DIR`)/filename, then the user cache, then a
    download from `url` (default `remote.url`) into the cache. Every candidate is checksummed.
    """
    if path is not None:
        explicit = Path(path)
        if not explicit.is_file():
            raise ConfigError(f"No file at the explicit path {explicit}; {_where_to_put(remote)}.")
        return _checked(explicit, remote, "explicit path"), f"path:{explicit}"
    base = data_root(root)
    if base is not None and (base / remote.filename).is_file():
        found = base / remote.filename
        return _checked(found, remote, "data root"), f"data_root:{found}"
    cached = cache_dir() / remote.filename
    if cached.is_file():
        if _matches(cached, remote):
            return cached, f"cache:{cached}"
        # The cache is ours: a corrupt or stale entry is dropped and fetched again.
        cached.unlink(missing_ok=True)
    if not download:
        raise ConfigError(f"{remote.filename} was not found and downloads are off; {_where_to_put(remote)}.")
    source = url or remote.url
    _download(remote, source, cached, timeout)
    return cached, f"download:{source} -> {cached}"


def _download(remote: RemoteFile, url: str, dest: Path, timeout: float) -> None:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ConfigError(f"Download URLs must be http(s), got {url!r}; {_where_to_put(remote)}.")
    tmp: Path | None = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Write to a temp file in the same directory and rename: readers (other workers on the
        # same machine) never see a partial file, and os.replace is atomic on one filesystem.
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        tmp = Path(name)
        digest, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=timeout) as response:
            # Read one byte past the expected size at most: a wrong URL cannot fill the disk.
            while size <= remote.size and (chunk := response.read(min(1 << 16, remote.size + 1 - size))):
                size += len(chunk)
                digest.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        if size != remote.size or digest.hexdigest() != remote.sha256:
            raise ConfigError(
                f"The download of {remote.filename} from {url} failed its checksum (got {size} bytes, sha256 "
                f"{digest.hexdigest()}; expected {remote.size} bytes, {remote.sha256}); it was deleted. "
                f"Check the URL, or {_where_to_put(remote)}."
            )
        os.replace(tmp, dest)
        tmp = None
    except (OSError, http.client.HTTPException) as e:  # URLError and HTTPError are OSErrors
        raise ConfigError(
            f"Could not download {remote.filename} from {url} ({e}); {_where_to_put(remote)}."
        ) from e
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def resolve_in_root(relative: str, root: str | Path | None = None) -> Path:
    """A user's file named relative to the data root; absolute paths and escapes are refused.

    A job spec may not name a file outside the data root, so `..`, absolute paths and symlinks
    that lead out of the root are all errors.
    """
    base = data_root(root)
    if base is None:
        raise ConfigError(
            f"A file: corpus is read from the data root: export {DATA_DIR_ENV}=<directory> "
            "or pass data_root=."
        )
    posix, windows = PurePosixPath(relative), PureWindowsPath(relative)
    if not relative or "\x00" in relative or posix.is_absolute() or windows.anchor:
        raise ConfigError(
            f"file: takes a path relative to the data root ({base}), got {relative!r}; "
            "copy the file under the data root and name it relative to it."
        )
    if ".." in posix.parts or ".." in windows.parts:
        raise ConfigError(
            f"file:{relative} leaves the data root ({base}); '..' is not allowed. "
            "Copy the file under the data root and name it relative to it."
        )
    base_real = base.resolve()
    target = (base_real / posix).resolve()
    if not target.is_relative_to(base_real):
        raise ConfigError(
            f"file:{relative} resolves to {target}, outside the data root {base_real} (a symlink?); "
            "copy the file under the data root."
        )
    if not target.is_file():
        raise ConfigError(
            f"No file {relative!r} under the data root {base}; put the file there or fix the name."
        )
    return target
