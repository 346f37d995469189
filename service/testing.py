"""A real `symopt serve` process on a free loopback port, for tests and benchmarks that need real HTTP."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LiveService:
    url: str
    api_key: str | None
    home: Path
    process: subprocess.Popen[str]
    output: list[str]


@contextmanager
def live_service(home: Path, database_url: str | None = None, timeout: float = 60.0) -> Iterator[LiveService]:
    """Start `symopt serve` with SYMOPT_HOME=home (and the database, if given), wait until it is
    ready, yield where it listens (and the admin key it printed on a first start), stop it."""
    port = free_port()
    env = {
        **os.environ,
        "SYMOPT_HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "OMP_NUM_THREADS": "1",
    }
    env.pop("SYMOPT_DATABASE_URL", None)
    if database_url:
        env["SYMOPT_DATABASE_URL"] = database_url
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url, output, key = f"http://127.0.0.1:{port}", [], None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None:
                raise RuntimeError(
                    "symopt serve exited early:\n" + (process.stdout.read() if process.stdout else "")
                )
            time.sleep(0.2)
        else:
            raise RuntimeError("symopt serve did not become ready")
        assert process.stdout is not None
        while key is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            output.append(line)
            match = re.search(r"admin API key \(shown once\): (\S+)", line)
            key = match.group(1) if match else None
            if "symopt serve: database" in line:
                break
        yield LiveService(url, key, home, process, output)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
