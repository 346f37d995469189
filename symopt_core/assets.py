"""Where a job's files are: the operator's corpora and models, users' uploads, the token cache.

    assets = Assets(data_root="/data", uploads="/srv/symopt/artifacts")
    assets.dataset_dir("ds_3f2a9c")   # /srv/symopt/artifacts/datasets/ds_3f2a9c
    assets.model_dir("mdl_77b1e0")    # /srv/symopt/artifacts/models/mdl_77b1e0

The service writes uploads (its store holds who owns them) and hands the worker these roots; the
worker never opens the database, so everything it reads is found from a spec's names here. A spec
never names a path outside these roots. Importing this module imports no torch (the service's
settings use it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from .errors import ConfigError

__all__ = ["Assets", "UploadKind"]

UploadKind = Literal["datasets", "models"]  # the folders of uploads under Assets.uploads


@dataclass(frozen=True)
class Assets:
    data_root: Path | None = None  # `file:` corpora (and $SYMOPT_DATA_DIR when None)
    model_root: Path | None = None  # model.path names that are not uploads: pretrained model directories
    uploads: Path | None = None  # uploaded datasets (datasets/<id>/) and models (models/<id>/)
    # tokenized data and trained tokenizers; None: <uploads>/tokenized, else the user cache
    cache: Path | None = None

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))

    def upload_dir(self, kind: UploadKind, upload_id: str) -> Path:
        """Where the service keeps an upload's files (which need not exist yet)."""
        if self.uploads is None:
            raise ConfigError(
                f"{upload_id!r} is an upload, but no upload root is configured: run the job through the "
                "service, or pass Assets(uploads=<the service's artifact root>)."
            )
        return self.uploads / kind / upload_id

    def _uploaded(self, kind: UploadKind, upload_id: str) -> Path:
        found = self.upload_dir(kind, upload_id)
        if not found.is_dir():
            raise ConfigError(f"No upload {upload_id!r} under {found.parent}; upload it first.")
        return found

    def dataset_dir(self, dataset_id: str) -> Path:
        """The directory of an uploaded dataset (what documents.ingest_documents wrote)."""
        return self._uploaded("datasets", dataset_id)

    def model_dir(self, path: str) -> Path:
        """An uploaded model (mdl_...) or a directory under the model root."""
        if path.startswith("mdl_"):
            return self._uploaded("models", path)
        if self.model_root is None:
            raise ConfigError(
                f"model.path {path!r} names a directory under the model root, but none is configured: "
                "set SYMOPT_MODEL_ROOT on the service, or upload the model (symopt models upload)."
            )
        root = self.model_root.resolve()
        target = (root / path).resolve()
        if not target.is_relative_to(root):
            raise ConfigError(f"model.path {path!r} resolves outside the model root {root} (a symlink?)")
        if not (target / "config.json").is_file():
            raise ConfigError(f"No model directory {path!r} (with a config.json) under the model root {root}")
        return target

    def corpus_file(self, relative: str) -> Path:
        """A `file:` corpus under the data root."""
        from .data.sources import resolve_in_root

        return resolve_in_root(relative, self.data_root)

    def token_cache(self) -> Path:
        """Where tokenized data and trained tokenizers are cached, shared by every job of a machine
        (of the cluster, on a shared filesystem)."""
        if self.cache is not None:
            return self.cache
        if self.uploads is not None:
            return self.uploads / "tokenized"
        from .data.sources import cache_dir

        return cache_dir().parent / "tokenized"
