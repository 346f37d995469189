"""Where the CLI keeps the service URL and API key (file mode 0600)."""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["credentials_path", "read_credentials", "write_credentials"]


def credentials_path() -> Path:
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "symopt" / "credentials.json"


def write_credentials(url: str, api_key: str, path: Path | None = None) -> Path:
    """Write url and key readable by the owner only (created 0600, never world-readable)."""
    target = path or credentials_path()
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as stream:
        json.dump({"url": url, "api_key": api_key}, stream)
    os.chmod(target, 0o600)
    return target


def read_credentials(path: Path | None = None) -> dict[str, str] | None:
    target = path or credentials_path()
    if not target.is_file():
        return None
    data = json.loads(target.read_text())
    return {"url": str(data["url"]), "api_key": str(data["api_key"])}
