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


# Modules whose tests train through a live service, Ray or Ray Train, longest first (pytest
# --durations). `--dist loadgroup` hands each xdist worker one test (or one xdist_group) at a
# time in collection order: starting with these leaves the many short tests to fill the end, so
# no worker idles while the other runs a two-minute study.
LONG_FIRST = (
    "tests/service/test_studies.py",
    "tests/service/test_sweeps.py",
    "tests/service/test_sweep_runs.py",
    "tests/service/test_readme.py",
    "tests/service/test_distributed_jobs.py",
    "tests/service/test_reliability_faults.py",
    "tests/service/test_scheduler.py",
    "tests/test_distributed.py",
    "tests/service/test_cli_remote.py",
    "tests/service/test_client_faults.py",
    "tests/service/test_cli_service.py",
    "tests/service/test_client.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {module: i for i, module in enumerate(LONG_FIRST)}

    def order(item: pytest.Item) -> int:
        return rank.get(item.nodeid.split("::", 1)[0], len(LONG_FIRST))

    items.sort(key=order)  # stable: within a module, and among the rest, the order stays
