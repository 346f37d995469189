"""Shared test setup: where the reference corpora are (CI runs from a clone outside /work)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def shared_data_dir() -> Path:
    """$SYMOPT_DATA_DIR, else ../shared/data beside the checkout, else /work/shared/data."""
    candidates = [
        os.environ.get("SYMOPT_DATA_DIR"),
        Path(__file__).resolve().parents[2] / "shared" / "data",
        "/work/shared/data",
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "tinyshakespeare.txt").is_file():
            return Path(candidate)
    raise RuntimeError("tinyshakespeare.txt not found: set SYMOPT_DATA_DIR to the folder that holds it")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return shared_data_dir()


def pytest_configure(config: pytest.Config) -> None:
    # Under pytest-xdist every worker would start as many torch threads as there are cores;
    # oversubscribed, CPU kernels slow down by an order of magnitude. One thread per worker.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
