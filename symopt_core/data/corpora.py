"""Corpora chosen by name: `shakespeare`, `pystdlib`, `modular`, and `file:<path under the data root>`.

A job spec names a corpus; it never names code or a path outside the data root. Corpora that
need a file resolve it through sources.py (explicit path, data root, cache, checked download);
the others are built in.
"""

from __future__ import annotations

import hashlib
import os
import platform
import random
import sys
import sysconfig
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, did_you_mean
from .sources import DATA_DIR_ENV, RemoteFile, resolve_in_root, resolve_remote

__all__ = ["CORPORA", "SHAKESPEARE", "Corpus", "CorpusKind", "corpus_identity", "load_corpus"]

SHAKESPEARE = RemoteFile(
    filename="tinyshakespeare.txt",
    url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    size=1_115_394,
)

# Directories of the standard library that are not "the library": third-party packages, the
# test suite (large, and full of deliberately odd code), and the IDE and demo programs.
_STDLIB_SKIP = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "turtledemo", "__pycache__"}
)


@dataclass(frozen=True)
class Corpus:
    """A corpus as one string, and where it came from (for logs and run metadata)."""

    name: str
    text: str = field(repr=False)
    source: str


@dataclass(frozen=True)
class _Request:
    name: str
    data_root: str | Path | None
    path: str | Path | None
    options: dict[str, Any]


@dataclass(frozen=True)
class CorpusKind:
    """A registry entry: what the corpus is, its options with defaults, and its loader."""

    summary: str
    defaults: Mapping[str, Any]
    load: Callable[[_Request], Corpus]
    takes_path: bool = False  # whether load_corpus's explicit `path=` means anything to it
    # What fixes the text, found without building it (the token cache keys on it): by default the
    # options; a "sha256" entry is the text's content hash.
    identity: Callable[[_Request], dict[str, Any]] = lambda request: {"options": dict(request.options)}


def _int_option(request: _Request, key: str, minimum: int, maximum: int | None = None) -> int:
    value = request.options[key]
    # bool is an int subclass; True as a modulus or a byte cap is a mistake, not 1.
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    if not ok or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ConfigError(f"Corpus {request.name!r}: option {key}={value!r} must be an int {bound}.")
    return int(value)


def _load_shakespeare(request: _Request) -> Corpus:
    url, download, timeout = (request.options[k] for k in ("url", "download", "timeout"))
    if url is not None and not isinstance(url, str):
        raise ConfigError(f"Corpus 'shakespeare': option url={url!r} must be an http(s) URL string or None.")
    if not isinstance(download, bool):
        raise ConfigError(f"Corpus 'shakespeare': option download={download!r} must be True or False.")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigError(
            f"Corpus 'shakespeare': option timeout={timeout!r} must be a positive number of seconds."
        )
    path, source = resolve_remote(
        SHAKESPEARE,
        path=request.path,
        root=request.data_root,
        url=url,
        download=download,
        timeout=float(timeout),
    )
    # The checksum has been verified, so the bytes are the known ASCII text.
    return Corpus(request.name, path.read_bytes().decode("utf-8"), source)


def _load_pystdlib(request: _Request) -> Corpus:
    max_bytes = _int_option(request, "max_bytes", 1)
    root = Path(sysconfig.get_paths()["stdlib"])
    files: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _STDLIB_SKIP]
        files.extend(
            ((Path(dirpath) / f).relative_to(root).as_posix(), Path(dirpath) / f)
            for f in filenames
            if f.endswith(".py")
        )
    # Sort by relative path (os.walk's order depends on the filesystem) so the text is deterministic.
    files.sort()
    pieces: list[bytes] = []
    total = used = 0
    for rel, full in files:
        if total >= max_bytes:
            break
        body = full.read_bytes()
        piece = f"# ===== file: {rel} =====\n".encode() + body + (b"" if body.endswith(b"\n") else b"\n")
        pieces.append(piece)
        total += len(piece)
        used += 1
    if not pieces:
        raise ConfigError(
            f"No standard-library sources found under {root}; use another corpus on this Python."
        )
    # Cutting at max_bytes may split a multi-byte character: "ignore" drops the partial one (the
    # sources themselves are UTF-8, PEP 3120).
    text = b"".join(pieces)[:max_bytes].decode("utf-8", errors="ignore")
    version = platform.python_version()
    source = f"pystdlib:{root} (Python {version}, {used} of {len(files)} files, {max_bytes} bytes max)"
    return Corpus(request.name, text, source)


def _pystdlib_identity(request: _Request) -> dict[str, Any]:
    # The text is the stdlib of this exact Python build, capped: name both.
    stdlib = sysconfig.get_paths()["stdlib"]
    return {"options": dict(request.options), "python": sys.version, "stdlib": stdlib}


def _load_modular(request: _Request) -> Corpus:
    p = _int_option(request, "p", 2)
    seed = _int_option(request, "seed", 0)
    n = _int_option(request, "n_examples", 1, 10_000_000)
    # random.Random's Mersenne Twister stream is stable across Python versions for a given seed.
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        a, b = rng.randrange(p), rng.randrange(p)
        lines.append(f"{a}+{b}={(a + b) % p}\n")
    return Corpus(request.name, "".join(lines), f"modular:p={p},seed={seed},n_examples={n}")


def _load_file(request: _Request) -> Corpus:
    target = resolve_in_root(request.name.removeprefix("file:"), request.data_root)
    try:
        text = target.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{target} is not UTF-8 text ({e}); convert it, e.g. `iconv -t UTF-8`.") from None
    if not text:
        raise ConfigError(f"{target} is empty; a corpus needs text.")
    return Corpus(request.name, text, f"file:{target}")


def _file_identity(request: _Request) -> dict[str, Any]:
    target = resolve_in_root(request.name.removeprefix("file:"), request.data_root)
    digest = hashlib.sha256()
    with target.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return {"sha256": digest.hexdigest()}


CORPORA: dict[str, CorpusKind] = {
    "shakespeare": CorpusKind(
        "Tiny Shakespeare (1,115,394 characters), from the data root, the user cache or its public source",
        {"url": None, "download": True, "timeout": 60.0},
        _load_shakespeare,
        takes_path=True,
        # The checksum pins the text, wherever the file is found or downloaded from.
        identity=lambda _request: {"sha256": SHAKESPEARE.sha256},
    ),
    "pystdlib": CorpusKind(
        "the running Python's standard-library .py sources, concatenated and capped",
        {"max_bytes": 8 * 1024 * 1024},
        _load_pystdlib,
        identity=_pystdlib_identity,
    ),
    "modular": CorpusKind(
        "synthetic `a+b=c` lines with c = (a + b) mod p, deterministic given the seed",
        {"p": 97, "seed": 0, "n_examples": 10_000},
        _load_modular,
    ),
}

_FILE = CorpusKind("a UTF-8 text file under the data root", {}, _load_file, identity=_file_identity)


def load_corpus(
    name: str, *, data_root: str | Path | None = None, path: str | Path | None = None, **options: Any
) -> Corpus:
    """Load the corpus `name` (see CORPORA, or `file:<relative path>` under the data root).

    data_root: overrides `$SYMOPT_DATA_DIR`. path: an explicit file for corpora that have one
    (shakespeare). options: the corpus's own (CORPORA[name].defaults lists them).
    """
    kind, request = _request(name, data_root, path, options)
    return kind.load(request)


def corpus_identity(name: str, *, data_root: str | Path | None = None, **options: Any) -> dict[str, Any]:
    """What fixes the text of corpus `name` with `options`, without building it: `{"corpus": name,
    ...}` with its options, or with "sha256", the text's content hash, where the text is a file."""
    kind, request = _request(name, data_root, None, options)
    return {"corpus": "file" if kind is _FILE else name, **kind.identity(request)}


def _request(
    name: str, data_root: str | Path | None, path: str | Path | None, options: dict[str, Any]
) -> tuple[CorpusKind, _Request]:
    if name.startswith("file:"):
        kind = _FILE
    elif name in CORPORA:
        kind = CORPORA[name]
    else:
        raise ConfigError(
            f"Unknown corpus {name!r}{did_you_mean(name, CORPORA)}; valid names: "
            f"{', '.join(sorted(CORPORA))}, or file:<path> for your own UTF-8 text file, named relative "
            "to the data root "
            f"(export {DATA_DIR_ENV}=<directory> or pass data_root=)."
        )
    unknown = sorted(set(options) - set(kind.defaults))
    if unknown:
        valid = ", ".join(sorted(kind.defaults)) or "none"
        raise ConfigError(f"Corpus {name!r} has no option(s) {', '.join(unknown)}; its options: {valid}.")
    if path is not None and not kind.takes_path:
        raise ConfigError(
            f"Corpus {name!r} takes no path=; for your own file use file:<path relative to the data root>."
        )
    return kind, _Request(name, data_root, path, {**kind.defaults, **options})
