"""Packages that only some uses of symopt need, and the extra of `pip install 'symopt[...]'` that
brings each. `pip install symopt` is the optimizer and the training loop on its own model
families; a user's own transformers models and Parquet data need `symopt[hf]`, the Ray workers
`symopt[worker]`, the HTTP client and CLI `symopt[client]`, the service `symopt[service]`.
"""

from __future__ import annotations

import importlib.util

from .errors import ConfigError

__all__ = ["EXTRA_OF", "require"]

# The top-level module of each optional package -> the extra that installs it.
EXTRA_OF = {
    "transformers": "hf",
    "pyarrow": "hf",
    "ray": "worker",
    "httpx": "client",
    "matplotlib": "client",
    "fastapi": "service",
    "uvicorn": "service",
    "sqlalchemy": "service",
    "alembic": "service",
    "psycopg": "service",
    "pydantic_settings": "service",
    "prometheus_client": "service",
    "optuna": "service",
    "scipy": "service",
}


def require(module: str, needed_for: str) -> None:
    """Raise a ConfigError that names the extra to install when `module` is missing (a lookup,
    not an import: the import stays where the module is used)."""
    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"{needed_for} needs the {module} package, which this installation lacks: "
            f"pip install 'symopt[{EXTRA_OF[module]}]'"
        )
