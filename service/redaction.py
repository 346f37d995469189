"""The server's own paths taken out of what a tenant reads.

A job's error (its traceback), its log events and the 422s of a spec check name files: the data
root, the model root, the artifact root with other tenants' uploads, the Python installation, the
service's source, and the targets of symlinks among them. A tenant needs to know which file, not
where the operator keeps it, so each root (as configured and as resolved) becomes a placeholder:

    redact = PathRedactor.for_settings(settings)
    redact("No model directory 'x' under the model root /srv/models")  # "... under the model root <models>"
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

import symopt_core
from symopt_core.data.sources import cache_dir

from .settings import Settings

__all__ = ["PathRedactor"]

SOURCE_ROOT = Path(symopt_core.__file__).resolve().parents[1]


class PathRedactor:
    """Replaces each root path in a text by its placeholder, the longest paths first (so a root
    inside another keeps its own name)."""

    def __init__(self, roots: Mapping[str, Path | None]) -> None:
        found: dict[str, str] = {}
        for placeholder, root in roots.items():
            if root is None:
                continue
            for form in {str(root), os.path.realpath(root)}:
                if len(form) > 1:  # never "/" alone: it would take every separator
                    found.setdefault(form.rstrip("/"), placeholder)
        self._roots = sorted(found.items(), key=lambda item: len(item[0]), reverse=True)

    @classmethod
    def for_settings(cls, settings: Settings) -> PathRedactor:
        assets = settings.assets()
        environment_root = os.environ.get("SYMOPT_DATA_DIR")
        data_root = assets.data_root or (Path(environment_root) if environment_root else None)
        return cls(
            {
                "<data>": data_root,
                "<cache>": cache_dir().parent,
                "<models>": assets.model_root,
                "<artifacts>": assets.uploads,
                "<tokens>": assets.token_cache(),
                "<home>": settings.home,
                "<symopt>": SOURCE_ROOT,
                "<python>": Path(sys.prefix),
                "<python-base>": Path(sys.base_prefix),
            }
        )

    def __call__(self, text: str) -> str:
        for path, placeholder in self._roots:
            if path in text:
                text = text.replace(path, placeholder)
        return text
