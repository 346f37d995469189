"""Spec trees before validation: dotted-path settings (`--set optimizer.lr=0.01`) and the plain
tree of a spec file, dict or model. No torch here: the client and the CLI use it to send specs for
the service to validate, and start fast."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from .errors import ConfigError

__all__ = ["MAX_SPEC_FILE_BYTES", "set_path", "spec_tree"]


_OVERRIDES = ("optimizer", "overrides")

# A spec file is a few KB; the service takes request bodies of at most 64 KiB unless its operator
# says otherwise (SYMOPT_MAX_BODY_BYTES). Larger files are refused before they are parsed: YAML
# parsing runs at about 1 MB/s, and a 10 MB file would take seconds only to be refused (413).
MAX_SPEC_FILE_BYTES = 1 << 20


def set_path(tree: dict[str, Any], path: str, value: Any) -> None:
    """Set `tree[a][b][c] = value` for path "a.b.c", creating the dicts on the way (and keeping
    what they hold). A per-class override given as a rule name is the mapping {"rule": name}, so
    `optimizer.overrides.embedding.lr_scale` can be set beside `embedding: row_norm`."""
    keys = path.split(".")
    if not all(keys):
        raise ConfigError(f"Invalid setting path: {path!r} (expected dotted keys such as optimizer.lr)")
    node = tree
    for depth, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif isinstance(child, str) and tuple(keys[:depth]) == _OVERRIDES:
            child = node[key] = {"rule": child}
        elif not isinstance(child, dict):
            raise ConfigError(f"Invalid setting path: {path!r}: {key!r} holds {child!r}, not a mapping")
        node = child
    node[keys[-1]] = value


def spec_tree(
    source: str | Path | Mapping[str, Any] | BaseModel, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The plain tree of a spec (a YAML/JSON path, a dict or a spec model) with dotted-path
    overrides applied, not yet validated: what a client sends for the service to validate.

    Override values given as strings are parsed as YAML scalars ("0.01" -> 0.01, "true" -> True).
    """
    if isinstance(source, BaseModel):
        tree: dict[str, Any] = source.model_dump(mode="json", exclude_unset=True)
    elif isinstance(source, Mapping):
        tree = _plain(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"Spec file not found: {path}")
        size = path.stat().st_size
        if size > MAX_SPEC_FILE_BYTES:
            raise ConfigError(
                f"Spec {path} is {size:,} bytes; a spec is a few KB, and the service accepts request "
                f"bodies of 64 KiB unless its operator set more: files over {MAX_SPEC_FILE_BYTES:,} bytes "
                "are not read (is this the right file?)"
            )
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise ConfigError(f"Spec {path} is not valid YAML or JSON: {error}") from None
        if not isinstance(loaded, dict):
            kind = type(loaded).__name__
            raise ConfigError(f"Spec {path} must hold a mapping at its top level, not {kind}")
        tree = loaded
    for key, value in (overrides or {}).items():
        set_path(tree, key, yaml.safe_load(value) if isinstance(value, str) else value)
    return tree


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
